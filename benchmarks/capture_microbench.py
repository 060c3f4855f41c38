"""Cost and quality of final-layer gradient capture (method.md §Making capture cheap).

Times one forward+backward of a tiny GPT-Neo (default V=8192, d=128, 4 layers, batch 16×128
tokens) without capture and with each capture variant. Variants are run **interleaved** in
one process (the order rotates every repetition) and medians are reported, because
sequential runs drift by ±20% on shared 2-core machines. Then (``--quality-steps`` > 0)
trains a short round with every variant attached at once and compares each variant's Gram
matrix and R&B mixture with the exact one. Finally prints accumulator memory at GPT-Neo-125M
size.

    PYTHONPATH=src python benchmarks/capture_microbench.py [--reps 12] [--quality-steps 40]
        [--threads 1] [--hidden 256 --reps 0]   # the latter: d-side projection quality only
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.rnb_math import gram_matrix, rnb_weights

VARIANTS: dict[str, dict] = {
    "exact": {"mode": "exact"},
    "exact_rows16": {"mode": "exact", "rows_per_example": 16},
    "exact_fused": {"mode": "exact", "fused": True},
    # the default buffered hook path: compare its *mean* (flushes land on some steps only)
    "exact_buffered": {"mode": "exact", "buffer_mb": "auto"},
    "sketch": {"mode": "sketch"},
    "sketch_rows16": {"mode": "sketch", "rows_per_example": 16},
}


def tiny_gptneo(V: int, d: int, layers: int, seq: int) -> nn.Module:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.GPTNeoConfig(
        vocab_size=V, hidden_size=d, num_layers=layers, num_heads=4, intermediate_size=4 * d,
        attention_types=[[["global", "local"], layers // 2]], max_position_embeddings=seq,
        window_size=seq // 2, bos_token_id=0, eos_token_id=0, embed_dropout=0.0,
        attention_dropout=0.0, resid_dropout=0.0,
    )  # fmt: skip
    return transformers.GPTNeoForCausalLM(cfg).train()


class DomainData:
    """Synthetic domains: each draws tokens from its own Zipf law over a permuted vocabulary."""

    def __init__(self, V: int, m: int, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        zipf = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.1
        self.probs = torch.stack([zipf[torch.randperm(V, generator=self.g)] for _ in range(m)])
        self.m = m

    def batch(self, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        dom = torch.randint(0, self.m, (B,), generator=self.g)
        ids = torch.multinomial(self.probs[dom], T, replacement=True, generator=self.g)
        return ids, dom


class Clock:
    """Minimal `OverheadMeter` stand-in: total seconds spent inside the capture's hooks."""

    def __init__(self) -> None:
        self.total = 0.0

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.total += time.perf_counter() - t0


class NoopHook:
    """Forward hook + tensor hook that does nothing: the price of hooking itself."""

    def __init__(self, head: nn.Linear) -> None:
        self.head, self.handle = head, None

    def attach(self) -> None:
        def fwd(mod, inp, out):
            out.register_hook(lambda g: None)

        self.handle = self.head.register_forward_hook(fwd)

    def detach(self) -> None:
        self.handle.remove()

    def set_batch(self, dom: torch.Tensor, row_mask: torch.Tensor | None = None) -> None:
        pass


def labels_of(ids: torch.Tensor, prompt_frac: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels with the first ``prompt_frac`` of each sequence ignored, and the head's row mask
    (None when every row has a label but the last: the capture is told nothing)."""
    if prompt_frac <= 0:
        return ids, None
    labels = ids.clone()
    labels[:, : int(prompt_frac * ids.shape[1])] = -100
    valid = labels[:, 1:] != -100
    return labels, torch.cat([valid, torch.zeros_like(valid[:, :1])], dim=1)


def time_step(
    model: nn.Module, ids: torch.Tensor, dom: torch.Tensor, cap, prompt_frac: float = 0.0
) -> tuple[float, float]:
    """(step seconds, seconds inside the capture's hooks)."""
    model.zero_grad(set_to_none=True)
    clock = getattr(cap, "_timer", None)
    hook0 = clock.total if clock is not None else 0.0
    labels, mask = labels_of(ids, prompt_frac)
    if cap is not None:
        cap.attach()
        cap.set_batch(dom, row_mask=mask)
    t0 = time.perf_counter()
    model(input_ids=ids, labels=labels).loss.backward()
    elapsed = time.perf_counter() - t0
    if cap is not None:
        cap.detach()
    return elapsed, (clock.total - hook0 if clock is not None else 0.0)


def timing(args: argparse.Namespace, model: nn.Module, data: DomainData) -> None:
    head, m = model.lm_head, args.domains
    caps: dict[str, object] = {"none": None, "noop_hooks": NoopHook(head)}
    wanted = [v for v in args.variants.split(",") if v] or list(VARIANTS)
    caps.update(
        # buffer_mb=0: products every step, so each timed step carries its whole cost (a
        # median over steps would otherwise skip the occasional flush of a buffered run).
        {
            k: HeadGradientCapture(head, m, timer=Clock(), **{"buffer_mb": 0, **VARIANTS[k]})
            for k in wanted
        }
    )
    names = list(caps)
    times: dict[str, list[float]] = {k: [] for k in names}
    hooks: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(args.warmup + args.reps):
        ids, dom = data.batch(args.batch, args.seq)  # same batch for every variant of a rep
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t, h = time_step(model, ids, dom, caps[name], args.prompt_frac)
            if rep >= args.warmup:
                times[name].append(t)
                hooks[name].append(h)
    # Paired ratios (same rep, adjacent in time) cancel most of the machine's drift.
    print(f"\nstep time (fwd+bwd), {args.reps} interleaved reps, threads={torch.get_num_threads()}")
    print("ratio: median over reps of (step / the same rep's no-capture step)")
    print(
        f"{'variant':<16}{'median ms':>10}{'ratio':>8}{'IQR of ratio':>16}{'hook ms':>9}{'mean ratio':>12}"
    )
    for name in names:
        ratios = sorted(t / b for t, b in zip(times[name], times["none"], strict=True))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        med, hook = statistics.median(times[name]), statistics.median(hooks[name])
        ratio, iqr = statistics.median(ratios), f"{q1:.3f}-{q3:.3f}"
        mean_ratio = statistics.mean(times[name]) / statistics.mean(times["none"])
        print(
            f"{name:<16}{1e3 * med:>10.1f}{ratio:>8.3f}{iqr:>16}{1e3 * hook:>9.1f}{mean_ratio:>12.3f}"
        )


def quality(args: argparse.Namespace, model: nn.Module, data: DomainData) -> None:
    head, m = model.lm_head, args.domains
    caps = {k: HeadGradientCapture(head, m, **kw) for k, kw in VARIANTS.items()}
    extra = {"sketch_512x256": {"mode": "sketch", "sketch_out": 512, "sketch_in": 256}}
    if head.in_features > 128:  # d-side projection in play: try the other split of the budget
        caps.update({k: HeadGradientCapture(head, m, **kw) for k, kw in extra.items()})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for cap in caps.values():
        cap.attach()
    for _ in range(args.quality_steps):
        ids, dom = data.batch(args.batch, args.seq)
        for cap in caps.values():
            cap.set_batch(dom)
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    q = torch.full((m,), 1.0 / m, dtype=torch.float64)
    grams = {k: gram_matrix(c.accumulators, c.counts) for k, c in caps.items()}
    p_exact = rnb_weights(grams["exact"], q, lam=3.0).p
    print(f"\nsketch quality over a {args.quality_steps}-step round, {m} domains, λ=3, q uniform")
    print(f"{'variant':<16}{'rel Frob err G':>16}{'TV(p, p_exact)':>16}{'memory MB':>11}")
    for k, G in grams.items():
        err = float((G - grams["exact"]).norm() / grams["exact"].norm())
        tv = 0.5 * float((rnb_weights(G, q, lam=3.0).p - p_exact).abs().sum())
        print(f"{k:<16}{err:>16.4f}{tv:>16.4f}{caps[k].memory_bytes() / 1e6:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--domains", type=int, default=8)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quality-steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prompt-frac", type=float, default=0.0,
        help="loss ignored on this leading fraction of each sequence (the default config "
        "trains on responses only); the capture gets the row mask",
    )  # fmt: skip
    ap.add_argument("--variants", default="", help="comma-separated subset of the variants")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = ap.parse_args()
    if args.threads > 0:
        # On a shared 2-core box every parallel op can wait ~10 ms for a busy second core;
        # --threads 1 trades speed for stable timings.
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = tiny_gptneo(args.vocab, args.hidden, args.layers, args.seq)
    data = DomainData(args.vocab, args.domains, args.seed)
    if args.reps > 0:
        timing(args, model, data)
    if args.quality_steps > 0:
        quality(args, model, data)
    V, d, m = 50257, 768, 100
    print(f"\naccumulator memory at V={V}, d={d}, m={m}:")
    for mode in ("exact", "sketch"):
        mb = HeadGradientCapture.estimate_memory_bytes(m, V, d, mode, 1024, 128) / 1e6
        print(f"  {mode:<7}{mb:>12.1f} MB")


if __name__ == "__main__":
    main()
