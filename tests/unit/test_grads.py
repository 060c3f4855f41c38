"""HeadGradientCapture against brute-force autograd (exact mode) and statistical checks (sketch)."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def dense_count_sketch(signs: torch.Tensor, k: int) -> torch.Tensor:
    """The ``[k, V]`` matrix of the strided count sketch: S[v mod k, v] = sign_v."""
    V = signs.numel()
    S = torch.zeros(k, V, dtype=torch.float64)
    S[torch.arange(V) % k, torch.arange(V)] = signs.double()
    return S


# ----------------------------------------------------------------------------- tiny GPT-Neo
def tiny_gptneo(V: int = 101, d: int = 16) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.GPTNeoConfig(
        vocab_size=V, hidden_size=d, num_layers=2, num_heads=2, intermediate_size=32,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=32, window_size=4,
        embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0, bos_token_id=0,
        eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPTNeoForCausalLM(cfg).train()
    assert model.lm_head.weight is model.transformer.wte.weight  # the tie is really there
    return model


def lm_batch(seed: int, B: int = 5, T: int = 9, V: int = 101) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    attn = (torch.arange(T)[None, :] < lengths[:, None]).long()
    labels = ids.masked_fill(attn == 0, -100)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def head_row_mask(labels: torch.Tensor) -> torch.Tensor:
    """Logit row t predicts label t+1 (HF shifts inside the loss); the last row has no label."""
    valid = labels[:, 1:] != -100
    return torch.cat([valid, torch.zeros_like(valid[:, :1])], dim=1)


def reference_lm_grads(model, batch, domains, m: int, scale: float) -> torch.Tensor:
    """Per-domain head-path gradients with the tie broken: a fresh leaf copy of W."""
    with torch.no_grad():
        h = model.transformer(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    W = model.lm_head.weight.detach().clone().requires_grad_(True)
    logits = (h @ W.T)[:, :-1]
    labels = batch["labels"][:, 1:]
    tok = nn.functional.cross_entropy(
        logits.reshape(-1, W.shape[0]), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    n_valid = (labels != -100).sum()
    out = torch.zeros(m, W.numel(), dtype=torch.float64)
    for i in domains.unique().tolist():
        loss_i = tok[domains == i].sum() / n_valid * scale
        out[i] = torch.autograd.grad(loss_i, W, retain_graph=True)[0].double().reshape(-1)
    return out


@pytest.mark.parametrize("use_mask", [False, True])
def test_exact_matches_autograd_on_tied_gptneo_with_accumulation(use_mask: bool) -> None:
    m, model = 4, tiny_gptneo()
    cap = HeadGradientCapture(model.lm_head, m, mode="exact")
    cap.attach()
    expected = torch.zeros(m, cap.accumulators.shape[1], dtype=torch.float64)
    micro = [
        (lm_batch(1), torch.tensor([2, 0, 2, 1, 0])),
        (lm_batch(2), torch.tensor([1, 1, 0, 2, 2])),
    ]
    for batch, dom in micro:  # gradient accumulation: Lightning backprops loss / 2 per micro-batch
        cap.set_batch(dom, row_mask=head_row_mask(batch["labels"]) if use_mask else None)
        (model(**batch).loss / 2).backward()
        expected += reference_lm_grads(model, batch, dom, m, scale=0.5)
    assert cap.accumulators.dtype == torch.float32
    for i in range(3):
        assert rel_err(cap.accumulators[i], expected[i]) <= 1e-5
    assert float(cap.accumulators[3].abs().max()) == 0.0  # domain 3 never sampled
    assert cap.counts.tolist() == [3.0, 3.0, 4.0, 0.0]
    G = cap.gram()
    assert torch.allclose(G, expected @ expected.T, rtol=1e-4, atol=0)
    cap.detach()


# ----------------------------------------------------------------------------- classifier
def classifier(V: int = 5, d: int = 16, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, d), nn.Tanh(), nn.Linear(d, V, bias=bias)).train()


def test_exact_2d_classifier_with_bias() -> None:
    model, m = classifier(), 3
    head = model[2]
    cap = HeadGradientCapture(head, m, mode="exact", include_bias=True)
    cap.attach()
    x, y = torch.randn(7, 8), torch.randint(0, 5, (7,))
    dom = torch.tensor([2, 0, 0, 2, 1, 2, 0])
    cap.set_batch(dom)
    nn.functional.cross_entropy(model(x), y).backward()
    with cap.paused():  # the reference forward must not be captured
        per_ex = nn.functional.cross_entropy(model(x), y, reduction="none") / 7
    for i in range(m):
        gw, gb = torch.autograd.grad(
            per_ex[dom == i].sum(), [head.weight, head.bias], retain_graph=True
        )
        ref = torch.cat([gw, gb[:, None]], dim=1).reshape(-1)
        assert rel_err(cap.accumulators[i], ref) <= 1e-5


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_bf16_autocast_accumulates_fp32(mode: str) -> None:
    model, m = classifier(V=64, d=32), 2
    head = model[2]
    cap = HeadGradientCapture(head, m, mode=mode, sketch_out=16, sketch_in=8)
    cap.attach()
    seen: dict[str, torch.Tensor] = {}
    head.register_forward_hook(lambda mod, inp, out: seen.update(a=inp[0].detach()))
    x, y = torch.randn(64, 8), torch.randint(0, 64, (64,))
    dom = torch.arange(64) % 2
    cap.set_batch(dom)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        out.register_hook(lambda g: seen.update(delta=g.detach()))
        loss = nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    assert seen["delta"].dtype == torch.bfloat16 and cap.accumulators.dtype == torch.float32
    S_v, S_d = torch.eye(64, dtype=torch.float64), torch.eye(32, dtype=torch.float64)
    if mode == "sketch":
        S_v, S_d = dense_count_sketch(cap._signs, 16), cap._proj.double()
    for i in range(m):
        rows = dom == i
        ref = S_v @ seen["delta"][rows].double().T @ seen["a"][rows].double() @ S_d.T
        # A bf16 accumulation would be ~1e-2 off.
        assert rel_err(cap.accumulators[i], ref.reshape(-1)) <= 1e-5


def test_nonfinite_batch_is_skipped_then_capture_resumes() -> None:
    model, m = classifier(), 2
    cap = HeadGradientCapture(model[2], m, mode="exact")
    cap.attach()
    x = torch.randn(4, 8)
    cap.set_batch(torch.tensor([0, 1, 0, 1]))
    grad = torch.ones(4, 5)
    grad[2, 3] = float("nan")
    model(x).backward(grad)
    assert cap.skipped_nonfinite == 1
    assert float(cap.accumulators.abs().sum()) == 0.0 and float(cap.counts.sum()) == 0.0
    cap.set_batch(torch.tensor([0, 1, 0, 1]))
    model(x).backward(torch.ones(4, 5))
    assert cap.skipped_nonfinite == 1 and cap.counts.tolist() == [2.0, 2.0]
    assert float(cap.accumulators.abs().sum()) > 0


def test_detach_eval_nograd_and_paused_do_not_capture() -> None:
    model, m = classifier(), 2
    cap = HeadGradientCapture(model[2], m, mode="exact")
    cap.attach()
    x = torch.randn(3, 8)
    with torch.no_grad():
        model(x)  # no set_batch needed: nothing is captured without grad
    model.eval()
    model(x).sum().backward()
    model.train()
    with cap.paused():
        model(x).sum().backward()
    assert float(cap.accumulators.abs().sum()) == 0.0
    with pytest.raises(RuntimeError, match="set_batch"):
        model(x)
    cap.detach()
    model(x).sum().backward()
    assert float(cap.accumulators.abs().sum()) == 0.0 and cap.counts.sum() == 0


def test_grad_scale_and_reduce_fn() -> None:
    model, m = classifier(), 2
    caps = [HeadGradientCapture(model[2], m, mode="exact") for _ in range(2)]
    x, dom = torch.randn(6, 8), torch.tensor([0, 1, 1, 0, 0, 1])
    for cap, scale in zip(caps, [1.0, 8.0], strict=True):
        cap.attach()
        cap.set_grad_scale(scale)
        cap.set_batch(dom)
        (model(x).pow(2).mean() * scale).backward()
        cap.detach()
    assert torch.allclose(caps[0].accumulators, caps[1].accumulators, rtol=1e-6)
    assert torch.allclose(caps[0].gram(lambda t: 2 * t), 4 * caps[0].gram())
    with pytest.raises(ValueError):
        caps[0].set_grad_scale(0.0)


def test_bad_inputs_raise_value_error() -> None:
    head = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="balance.capture.mode"):
        HeadGradientCapture(head, 2, mode="fast")
    with pytest.raises(ValueError, match="rows_per_example"):
        HeadGradientCapture(head, 2, rows_per_example=0)
    with pytest.raises(ValueError, match="include_bias"):
        HeadGradientCapture(nn.Linear(4, 3, bias=False), 2, include_bias=True)
    cap = HeadGradientCapture(head, 2)
    with pytest.raises(ValueError, match="num_domains"):
        cap.set_batch(torch.tensor([0, 2]))
    cap.attach()
    cap.set_batch(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="domain_ids"):
        head(torch.randn(2, 4, requires_grad=True))


# ----------------------------------------------------------------------------- sketch
def run_head(
    cap: HeadGradientCapture, a: torch.Tensor, delta: torch.Tensor, dom, mask=None
) -> None:
    """Forward ``a`` through the capture's head and backprop the given output gradient."""
    cap.set_batch(dom, row_mask=mask)
    cap.head(a).backward(delta)


def exact_grads(a: torch.Tensor, delta: torch.Tensor, dom: torch.Tensor, m: int) -> torch.Tensor:
    a2, d2 = a.reshape(-1, a.shape[-1]).double(), delta.reshape(-1, delta.shape[-1]).double()
    rows = dom.repeat_interleave(a2.shape[0] // dom.numel())
    return torch.stack([(d2[rows == i].T @ a2[rows == i]).reshape(-1) for i in range(m)])


def test_sketch_without_projection_is_exact() -> None:
    head, m = nn.Linear(12, 30, bias=False), 3
    a, delta, dom = torch.randn(6, 4, 12), torch.randn(6, 4, 30), torch.tensor([0, 2, 1, 0, 2, 2])
    cap = HeadGradientCapture(head, m, mode="sketch", sketch_out=30, sketch_in=12)
    cap.attach()
    run_head(cap, a, delta, dom)
    assert rel_err(cap.accumulators, exact_grads(a, delta, dom, m)) <= 1e-6


@pytest.mark.parametrize("valid_frac", [0.2, 0.8])  # gather layout / in-place layout
@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_masked_rows_match_explicit_reference(mode: str, valid_frac: float) -> None:
    g = torch.Generator().manual_seed(3)
    B, T, d, V, m = 6, 10, 9, 50, 3
    head = nn.Linear(d, V, bias=False)
    a, delta = torch.randn(B, T, d, generator=g), torch.randn(B, T, V, generator=g)
    mask = torch.rand(B, T, generator=g) < valid_frac
    dom = torch.tensor([2, 0, 0, 1, 2, 0])
    cap = HeadGradientCapture(head, m, mode=mode, sketch_out=16, sketch_in=4)
    cap.attach()
    # δ is non-zero on masked rows on purpose: the mask must exclude them in both layouts.
    run_head(cap, a, delta, dom, mask)
    exact = exact_grads(a, delta * mask[..., None], dom, m)
    if mode == "exact":
        assert rel_err(cap.accumulators, exact) <= 1e-6
        return
    S_v, S_d = dense_count_sketch(cap._signs, 16), cap._proj.double()
    ref = torch.stack([(S_v @ x.view(V, d) @ S_d.T).reshape(-1) for x in exact])
    assert rel_err(cap.accumulators, ref) <= 1e-6


def test_sketch_inner_products_are_unbiased() -> None:
    torch.manual_seed(0)
    V, d, m, draws = 45, 20, 3, 150  # 45 = 5 full blocks of 8 buckets + a partial block of 5
    head = nn.Linear(d, V, bias=False)
    a, delta = torch.randn(9, 3, d), torch.randn(9, 3, V)
    delta[:, :, :10] += 2.0  # a shared component makes the domains correlate
    dom = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    g = exact_grads(a, delta, dom, m)
    exact = g @ g.T
    samples = []
    for seed in range(draws):
        cap = HeadGradientCapture(head, m, mode="sketch", sketch_out=8, sketch_in=5, seed=seed)
        cap.attach()
        run_head(cap, a, delta, dom)
        cap.detach()
        samples.append(cap.gram())
    s = torch.stack(samples)
    mean, se = s.mean(0), s.std(0) / draws**0.5
    assert bool(((mean - exact).abs() <= 4 * se).all())
    # Not vacuous: one sketch is far from exact, while the average is close.
    assert rel_err(s[0], exact) > 0.1 and rel_err(mean, exact) < 0.1


def low_rank_rows(n: int, dim: int, basis: torch.Tensor, own: torch.Tensor, g) -> torch.Tensor:
    shared = torch.randn(n, basis.shape[0], generator=g) @ basis
    return (
        shared
        + torch.randn(n, own.shape[0], generator=g) @ own
        + 0.1 * torch.randn(n, dim, generator=g)
    )


def test_sketch_gram_error_small_at_default_sizes() -> None:
    """8 correlated, low-rank domains; V and d both larger than the default sketch sizes."""
    g = torch.Generator().manual_seed(0)
    V, d, m, n = 4096, 256, 8, 48
    bv, ba = torch.randn(3, V, generator=g), torch.randn(3, d, generator=g)
    deltas, acts = [], []
    for _ in range(m):
        own_v, own_a = torch.randn(2, V, generator=g), torch.randn(2, d, generator=g)
        deltas.append(low_rank_rows(n, V, bv, own_v, g))
        acts.append(low_rank_rows(n, d, ba, own_a, g))
    delta, a = torch.cat(deltas) / V**0.5, torch.cat(acts)
    dom = torch.arange(m).repeat_interleave(n)
    gx = exact_grads(a, delta, dom, m)
    exact = gx @ gx.T
    errs = []
    for seed in range(3):
        cap = HeadGradientCapture(nn.Linear(d, V, bias=False), m, seed=seed)  # defaults 1024 x 128
        cap.attach()
        run_head(cap, a, delta, dom)
        errs.append(rel_err(cap.gram(), exact))
    # Measured 5-12% over 10 seeds, dominated by the d-side projection of rank-~5 activations
    # (the V-side count sketch alone: 3-6%).
    assert max(errs) < 0.15 and sum(errs) / len(errs) < 0.1, errs


def test_row_subsampling_is_unbiased_and_full_when_large() -> None:
    torch.manual_seed(1)
    B, T, d, V, m = 4, 10, 6, 7, 2
    head = nn.Linear(d, V, bias=False)
    a, delta = torch.randn(B, T, d), torch.randn(B, T, V)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 6:] = False
    mask[3, 2:] = False  # fewer valid rows (2) than sampled (3): weight 1 for that example
    delta = delta * mask[..., None]
    dom = torch.tensor([1, 0, 1, 0])
    exact = exact_grads(a, delta, dom, m)
    full = HeadGradientCapture(head, m, mode="exact", rows_per_example=T)
    full.attach()
    run_head(full, a, delta, dom, mask)
    full.detach()
    assert rel_err(full.accumulators, exact) <= 1e-6
    cap = HeadGradientCapture(head, m, mode="exact", rows_per_example=3, seed=0)
    cap.attach()
    draws, samples = 120, []
    for _ in range(draws):
        cap.reset()
        run_head(cap, a, delta, dom, mask)
        samples.append(cap.accumulators.double().clone())
    s = torch.stack(samples)
    mean_sq_err = float((s.mean(0) - exact).pow(2).sum())
    expected_sq_err = float(s.var(0).sum()) / draws  # E‖mean - truth‖² for an unbiased mean
    assert mean_sq_err <= 3 * expected_sq_err
    assert rel_err(s[0], exact) > 0.05  # subsampling really happened


def test_state_dict_round_trip_weights_only() -> None:
    head, m = nn.Linear(6, 40, bias=False), 3
    a, delta = torch.randn(4, 8, 6), torch.randn(4, 8, 40)
    dom = torch.tensor([2, 0, 1, 2])
    kw = {"mode": "sketch", "sketch_out": 16, "sketch_in": 4, "rows_per_example": 3, "seed": 5}
    cap = HeadGradientCapture(head, m, **kw)
    cap.attach()
    run_head(cap, a, delta, dom)
    buf = io.BytesIO()
    torch.save(cap.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = HeadGradientCapture(head, m, **kw)
    other.load_state_dict(state)
    assert torch.equal(other.accumulators, cap.accumulators) and torch.equal(
        other.counts, cap.counts
    )
    cap.detach()
    other.attach()  # same sampler state → the next subsample is identical
    run_head(other, a, delta, dom)
    other.detach()
    cap.attach()
    run_head(cap, a, delta, dom)
    assert torch.equal(other.accumulators, cap.accumulators)
    with pytest.raises(ValueError, match="configuration"):
        HeadGradientCapture(head, m, **{**kw, "seed": 6}).load_state_dict(state)


def test_memory_estimates() -> None:
    for mode, bias in [("exact", False), ("sketch", False), ("sketch", True)]:
        cap = HeadGradientCapture(
            nn.Linear(40, 300), 3, mode=mode, sketch_out=64, sketch_in=16, include_bias=bias
        )
        est = HeadGradientCapture.estimate_memory_bytes(3, 300, 40, mode, 64, 16, include_bias=bias)
        assert cap.memory_bytes() == est
    sketch = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "sketch", 1024, 128)
    exact = HeadGradientCapture.estimate_memory_bytes(
        100, 50257, 768, "exact", 1024, 128, buffer_mb=0
    )
    assert sketch <= 100e6 and exact == 4 * 100 * 50257 * 768 + 800
    # the row buffer and its sorting scratch: whole rows of (V + d) fp32 within buffer_mb
    buffered = HeadGradientCapture.estimate_memory_bytes(
        100, 50257, 768, "exact", 1024, 128, buffer_mb=1
    )
    assert buffered - exact == 8 * (50257 + 768) * (2**20 // (8 * (50257 + 768)))
    # auto: 8x the accumulators, within [1, 32] MiB
    assert HeadGradientCapture(nn.Linear(64, 2048), 6, mode="exact").buffer_mb == 24.0
    assert HeadGradientCapture(nn.Linear(64, 2048), 20, mode="exact").buffer_mb == 32.0
    assert HeadGradientCapture(nn.Linear(4, 10), 2, mode="exact").buffer_mb == 1.0
    big = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "sketch", 512, 256)
    assert (
        big
        - HeadGradientCapture.estimate_memory_bytes(
            100, 50257, 768, "sketch", 512, 256, buffer_mb=0
        )
        <= 32 * 2**20
    )
    with pytest.raises(ValueError, match="buffer_mb"):
        HeadGradientCapture(nn.Linear(4, 10), 2, buffer_mb="fast")
    with pytest.raises(ValueError, match="buffer_mb"):
        HeadGradientCapture(nn.Linear(4, 10), 2, buffer_mb=-1)


class Clock:
    def __init__(self) -> None:
        self.sections = 0

    @contextlib.contextmanager
    def section(self):
        self.sections += 1
        yield


def test_timer_wraps_both_hooks() -> None:
    model, clock = classifier(), Clock()
    cap = HeadGradientCapture(model[2], 2, mode="exact", timer=clock)
    cap.attach()
    cap.set_batch(torch.tensor([0, 1, 1]))
    model(torch.randn(3, 8)).sum().backward()
    assert clock.sections == 2  # forward-hook planning + backward accumulation


# ----------------------------------------------------------------------------- row buffer
def _steps(seed: int, n_steps: int, B: int = 6, T: int = 10, d: int = 9, V: int = 50):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        a, delta = torch.randn(B, T, d, generator=g), torch.randn(B, T, V, generator=g)
        mask = torch.rand(B, T, generator=g) < 0.3  # gather layout: buffered
        dom = torch.randint(0, 3, (B,), generator=g)
        yield a, delta, dom, mask


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_buffered_products_equal_per_step_products(mode: str) -> None:
    """Tiny buffer: several flushes, one step larger than the buffer (direct path), a grad
    scale, and reads mid-stream; results equal the unbuffered capture and brute force."""
    head, m = nn.Linear(9, 50, bias=False), 3
    kw = {"mode": mode, "sketch_out": 16, "sketch_in": 4}
    ref_cap = HeadGradientCapture(head, m, buffer_mb=0, **kw)
    vk, dk = (50, 9) if mode == "exact" else (16, 4)
    buf_cap = HeadGradientCapture(head, m, buffer_mb=40 * 8 * (vk + dk) / 2**20, **kw)
    assert buf_cap._buffer is not None and buf_cap._buffer.capacity == 40
    exact = torch.zeros(m, 50 * 9, dtype=torch.float64)
    for i, (a, delta, dom, mask) in enumerate(_steps(0, 12)):
        if i == 5:
            mask[:] = False
            mask[:, :8] = True  # 48 rows > capacity 40, still the gather layout
        for cap in (ref_cap, buf_cap):
            cap.set_grad_scale(4.0)
            cap.attach()
            run_head(cap, a, 4.0 * delta, dom, mask)
            cap.detach()
        exact += exact_grads(a, delta * mask[..., None], dom, m)
        if i == 7:  # a read mid-stream flushes; later steps keep accumulating
            assert torch.allclose(buf_cap.accumulators, ref_cap.accumulators, atol=1e-5)
    assert buf_cap._buffer.pending  # something was left to flush at the end
    torch.testing.assert_close(buf_cap.accumulators, ref_cap.accumulators, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(buf_cap.counts, ref_cap.counts)
    if mode == "exact":
        assert rel_err(buf_cap.accumulators, exact) <= 1e-5


def test_buffered_nonfinite_step_dropped_alone() -> None:
    head, m = nn.Linear(9, 50, bias=False), 3
    cap = HeadGradientCapture(head, m, mode="exact")
    ref = HeadGradientCapture(head, m, mode="exact", buffer_mb=0)
    for i, (a, delta, dom, mask) in enumerate(_steps(1, 4)):
        if i == 2:
            delta = delta.clone()
            b, t = torch.nonzero(mask)[0].tolist()  # a selected row
            delta[b, t, 3] = float("inf")
        for c in (cap, ref):
            c.attach()
            run_head(c, a, delta, dom, mask)
            c.detach()
    assert cap._buffer is not None and cap._buffer.pending  # all four steps still buffered
    assert cap.skipped_nonfinite == 1 == ref.skipped_nonfinite
    torch.testing.assert_close(cap.accumulators, ref.accumulators, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(cap.accumulators).all()
    torch.testing.assert_close(cap.counts, ref.counts)
    assert cap.counts.sum() == 3 * 6  # three good steps of 6 examples
