"""Wall-clock overhead of R&B vs stratified on the default config, measured side by side.

Two (or more) training runs live in one process and advance **one optimizer step at a time
in turn** (stratified, rnb, stratified, rnb, ...): each ``Trainer.fit`` runs in its own
greenlet, and a callback hands control to the next run at every ``on_train_batch_start``.
So every variant sees the same machine state within milliseconds, which removes the ±5–20%
drift of sequential runs on shared machines. A greenlet (unlike a thread) keeps torch's
OpenMP pool to itself: with threads, the idle pool of one run spins while another runs and
biased an A/A comparison by 3–4%.

A step's wall time runs from its ``on_train_batch_start`` to the next one of the same run,
so data loading, hooks, buffered products, round updates and logging are all included. The
first ``--warmup`` steps are dropped. Printed per variant: median and mean ms/step. The
baseline is every run configured like the first (two stratified runs by default, pooled
step by step); each other variant's ratio to it is printed as a ratio of means with a
bootstrap 90% interval, a ratio of medians and the median of per-step ratios. The two
baseline runs against each other (``A/A``) show the measurement's own noise. Also printed: R&B's metered mixing share (``overhead.wall_pct``)
and the accumulator memory of sketch vs exact capture for a GPT-Neo-125M head with m = 100.

Where the meter and the ratio disagree: the default variants include ``rnb lambda0``, R&B
with ``strategy.lambda_=0`` (its mixture stays uniform, i.e. stratified's, while every hook,
product and round update still runs). Its measured extra ms/step against the baseline is
printed next to the meter's ms/step ("meter gap"): a gap there is capture cost the meter
misses (hook dispatch, cache/allocator side effects); a gap only for ``rnb`` is the effect
of a different mixture (other documents, other masks), which is not mixing overhead.

Presets: ``--shape gptneo125m`` (V = 50257 BPE, d = 768, 12 layers, 12 heads, batch 4×128,
random init, no download; V is the tokenizer's, so pair it with ``--data``: the synthetic
testbed is too small to learn 50k merges); ``--data PATH`` trains every variant on a JSONL
corpus with ``text`` and ``domain`` fields (``benchmarks/text_corpus.py`` builds one) with
the default 4k BPE.

Usage: python benchmarks/overhead.py [--steps 300] [--shape gptneo125m] [--data PATH]
    [--variant NAME=STRATEGY[;OVERRIDE...]] [hydra overrides for every variant ...]
Goal: rnb/stratified <= 1.03 (default model) / <= 1.01 (gptneo125m) and sketch memory
<= 100 MB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from greenlet import getcurrent, greenlet

from rnb.balance.capture import HeadGradientCapture
from rnb.config import compose
from rnb.train import build_run

DEFAULT_VARIANTS = [
    "stratified=stratified",
    "rnb=rnb",
    "rnb lambda0=rnb;strategy.lambda_=0",
    "stratified (A/A)=stratified",
]

SHAPES: dict[str, list[str]] = {
    "default": [],
    # GPT-Neo-125M's shape (random init): the paper's model without a download.
    "gptneo125m": [
        "model.arch.hidden_size=768",
        "model.arch.num_layers=12",
        "model.arch.num_heads=12",
        "model.arch.intermediate_size=3072",
        "model.arch.window_size=256",
        "data.tokenizer.vocab_size=50257",
        "data.batch_size=4",
        "data.max_length=128",
    ],
}


def data_overrides(path: str | None) -> list[str]:
    """A JSONL corpus with ``text`` and ``domain`` fields instead of the synthetic testbed."""
    if path is None:
        return []
    return ["data=files", f"data.train_path={path}", "data.domain_field=domain"]


#: Step phases, between the clock callback's hooks (it runs before every other callback):
#: ``forward`` = batch start → ``on_before_backward`` (other callbacks' batch-start hooks, the
#: training step and its loss), ``backward`` → ``on_after_backward``, ``optimizer`` →
#: ``on_train_batch_end`` (clipping, the optimizer step), ``between`` → the next batch start
#: (other callbacks' batch-end hooks, logging, loading the next batch).
PHASES = ("forward", "backward", "optimizer", "between")


class TakeTurns(L.Callback):
    """Times each step of one run (and its phases) and yields to the next run at every batch
    start."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.times: list[float] = []
        self.phases: dict[str, list[float]] = {p: [] for p in PHASES}
        self._t0: float | None = None
        self._mark: float | None = None

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.phases[name].append(now - self._mark)
        self._mark = now

    def on_train_batch_start(self, *args: Any) -> None:
        now = time.perf_counter()
        if self._t0 is not None:
            self.times.append(now - self._t0)
            self._phase("between")
        self.scheduler.yield_turn()
        self._t0 = self._mark = time.perf_counter()

    def on_before_backward(self, *args: Any) -> None:
        self._phase("forward")

    def on_after_backward(self, *args: Any) -> None:
        self._phase("backward")

    def on_train_batch_end(self, *args: Any) -> None:
        self._phase("optimizer")

    def on_train_end(self, *args: Any) -> None:
        if self._t0 is not None:
            self.times.append(time.perf_counter() - self._t0)
            self._phase("between")
            self._t0 = None


class Scheduler:
    """Turns in ABBA order (A B C, C B A, A B C, ...): every run goes first and last equally
    often, which cancels position effects (measured ~1% for a fixed A B C order)."""

    def __init__(self) -> None:
        self.runs: list[greenlet] = []
        self._turn = 0

    def _at(self, turn: int) -> greenlet:
        cycle, pos = divmod(turn, len(self.runs))
        return self.runs[pos if cycle % 2 == 0 else len(self.runs) - 1 - pos]

    def yield_turn(self) -> None:
        me = getcurrent()
        if all(g.dead or g is me for g in self.runs):
            return
        self._turn += 1
        while self._at(self._turn).dead:
            self._turn += 1
        nxt = self._at(self._turn)
        if nxt is not me:
            nxt.switch()

    def run_all(self) -> None:
        """Start the first run; the others start on their first turn and finish in turn."""
        while any(not g.dead for g in self.runs):
            while self._at(self._turn).dead:
                self._turn += 1
            self._at(self._turn).switch()


def build(strategy: str, overrides: list[str], steps: int, clock: TakeTurns, root: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{strategy}-", dir=root))
    cfg = compose(
        "train",
        [
            f"strategy={strategy}",
            f"trainer.max_steps={steps}",
            "trainer.val_check_interval=1000000",
            "trainer.enable_progress_bar=false",
            "initial_eval=false",
            "checkpoint.every_n_train_steps=1000000",
            f"output_dir={out}",
            *overrides,
        ],
    )
    run = build_run(cfg, out)
    run["trainer"].callbacks.insert(0, clock)  # first: its clock brackets everything else
    return run


def bootstrap_ratio(x: np.ndarray, y: np.ndarray, reps: int = 2000) -> tuple[float, float]:
    """90% interval of mean(y)/mean(x) over step pairs resampled together."""
    rng = np.random.default_rng(0)
    n = min(len(x), len(y))
    idx = rng.integers(0, n, size=(reps, n))
    ratios = y[:n][idx].mean(1) / x[:n][idx].mean(1)
    lo, hi = np.percentile(ratios, [5, 95])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="default")
    parser.add_argument("--data", default=None, help="JSONL with text + domain fields")
    parser.add_argument(
        "--variant", action="append", help="NAME=STRATEGY[;OVERRIDE...] (repeatable)"
    )
    args, common = parser.parse_known_args()
    common = [*data_overrides(args.data), *SHAPES[args.shape], *common]
    # Run dirs (a 125M-shape checkpoint is 1.4 GB) go to one temporary root, removed at exit.
    with tempfile.TemporaryDirectory(prefix="rnb-ovh-") as root:
        measure(args, common, Path(root))


def measure(args: argparse.Namespace, common: list[str], root: Path) -> None:
    """Build every variant under ``root``, run them interleaved, print the comparison."""
    scheduler = Scheduler()
    runs: dict[str, tuple[dict, TakeTurns]] = {}
    specs: dict[str, str] = {}
    for spec in args.variant or DEFAULT_VARIANTS:
        name, rest = spec.split("=", 1)
        specs[name] = rest
        strategy, *extra = rest.split(";")
        clock = TakeTurns(scheduler)
        run = build(strategy, [*common, *extra], args.steps, clock, root)
        runs[name] = (run, clock)

        def fit(run: dict = run) -> None:
            run["trainer"].fit(run["model"], datamodule=run["datamodule"])

        scheduler.runs.append(greenlet(fit))
    t0 = time.perf_counter()
    scheduler.run_all()
    wall = time.perf_counter() - t0
    times = {n: np.asarray(c.times[args.warmup :]) for n, (_, c) in runs.items()}
    print(f"{args.steps} steps per run, interleaved step by step, {wall:.0f} s in all")
    head = next(iter(runs.values()))[0]["model"].head
    print(f"shape {args.shape}: head V={head.out_features}, d={head.in_features}")
    for name, t in times.items():
        balance = runs[name][0]["balance"]
        meter = balance.meter.report(1.0)
        mode = getattr(balance.capture, "mode", None)
        extra = f", metered mixing {meter['wall_pct']:.2f} %" if meter["mixing_s"] else ""
        extra += f", capture {mode}" if mode else ""
        print(
            f"  {name:18s} median {1e3 * np.median(t):6.2f} ms/step, "
            f"mean {1e3 * t.mean():6.2f}{extra}"
        )
    # Baseline: every run configured like the first (pooled step by step); the others are
    # compared with it. Two baseline runs also give an A/A ratio: the measurement's noise.
    first = next(iter(specs))
    base_names = [n for n in specs if specs[n] == specs[first]]
    n = min(len(t) for t in times.values())
    base = np.mean([times[b][:n] for b in base_names], axis=0)
    label = " + ".join(base_names)
    if len(base_names) > 1:
        a, b = times[base_names[0]][:n], times[base_names[1]][:n]
        lo, hi = bootstrap_ratio(a, b)
        print(
            f"A/A {base_names[1]} / {base_names[0]}: mean {b.mean() / a.mean():.3f} (90% CI {lo:.3f}-{hi:.3f})"
        )
    for name, t in times.items():
        if name in base_names:
            continue
        t = t[:n]
        lo, hi = bootstrap_ratio(base, t)
        print(
            f"{name} / ({label}): mean {t.mean() / base.mean():.3f} (90% CI {lo:.3f}-{hi:.3f}), "
            f"median {np.median(t) / np.median(base):.3f}, per-step median "
            f"{np.median(t / base):.3f}   (goal for rnb <= 1.03)"
        )
    for name, t in times.items():
        meter = runs[name][0]["balance"].meter
        if name in base_names or not meter.steps:
            continue
        metered = 1e3 * meter.mixing_s / meter.steps
        extra = 1e3 * (t[:n].mean() - base.mean())
        print(
            f"meter gap {name}: measured +{extra:.2f} ms/step vs metered {metered:.2f} ms/step "
            f"(gap {extra - metered:+.2f} ms/step = {100 * (extra - metered) / base.mean() / 1e3:+.2f} % of a step)"
        )
    print_phases(runs, base_names, args.warmup)
    sk = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "sketch", 512, 256)
    buf = sk - HeadGradientCapture.estimate_memory_bytes(
        100, 50257, 768, "sketch", 512, 256, buffer_mb=0
    )
    ex = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "exact", buffer_mb=0)
    print(
        f"GPT-Neo-125M head (V=50257, d=768), m=100: sketch capture {sk / 1e6:.1f} MB "
        f"(incl. {buf / 1e6:.1f} MB row buffer) vs exact accumulators {ex / 1e9:.1f} GB "
        "(goal <= 100 MB)"
    )


def print_phases(runs: dict, base_names: list[str], warmup: int) -> None:
    """Mean ms/step per phase (`PHASES`) and each variant's difference from the baseline: where
    in the step a measured extra lands (the capture's own work is in ``backward``)."""

    def means(name: str) -> np.ndarray:
        clock = runs[name][1]
        n = min(len(clock.phases[p]) for p in PHASES)
        return np.array([1e3 * np.mean(clock.phases[p][warmup:n]) for p in PHASES])

    base = np.mean([means(b) for b in base_names], axis=0)
    print(
        "phases, mean ms/step: "
        + ", ".join(f"{p} {v:.1f}" for p, v in zip(PHASES, base, strict=True))
        + "  (baseline)"
    )
    for name in runs:
        if name not in base_names:
            delta = means(name) - base
            print(
                f"  {name:18s} vs baseline: "
                + ", ".join(f"{p} {v:+.2f}" for p, v in zip(PHASES, delta, strict=True))
            )


if __name__ == "__main__":
    main()
