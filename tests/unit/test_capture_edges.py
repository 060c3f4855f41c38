"""Edges of `HeadGradientCapture`: the buffered copy paths, reset, grad scale, checkpoint state,
read-only results and the memory estimate, each against a brute-force or hand-computed value."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.capture.settled import Settled

B, T, D, V, M = 4, 6, 5, 7, 2
DOM = torch.tensor([1, 0, 0, 1])


def step(seed: int, dtype: torch.dtype = torch.float32, bad: bool = False):
    """(a, δ, row mask) of one ``[B, T]`` batch; a third of the rows selected (gather
    layout, hence buffered); ``bad``: an inf in a selected row's ``δ``."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, T, D, generator=g, dtype=dtype)
    delta = torch.randn(B, T, V, generator=g, dtype=dtype)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, 1:3] = True
    if bad:
        delta[2, 1, 4] = float("inf")
    return a, delta, mask


def run(cap: HeadGradientCapture, a, delta, mask, scale: float = 1.0) -> None:
    """One forward/backward of the capture's head; the loss carries the grad scale."""
    cap.attach()
    cap.set_batch(DOM, row_mask=mask)
    cap.head(a).backward(scale * delta)
    cap.detach()


def brute_force(a, delta, mask, bias: bool) -> torch.Tensor:
    """float64 ``[M, V·(D+bias)]``: per-domain Σ over selected rows of ``δ_rᵀ [a_r, 1]``."""
    out = torch.zeros(M, V, D + int(bias), dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                row = a[b, t].double()
                row = torch.cat([row, row.new_ones(1)]) if bias else row
                out[int(DOM[b])] += torch.outer(delta[b, t].double(), row)
    return out.reshape(M, -1)


def dense_count_sketch(signs: torch.Tensor, k: int) -> torch.Tensor:
    """The ``[k, V]`` matrix of the strided count sketch: S[v mod k, v] = sign_v."""
    S = torch.zeros(k, signs.numel(), dtype=torch.float64)
    S[torch.arange(signs.numel()) % k, torch.arange(signs.numel())] = signs.double()
    return S


@pytest.mark.parametrize(
    ("mode", "dtype", "bias", "scale"),
    [
        ("exact", torch.float64, False, 1.0),  # δ and a not fp32: copied, not gathered in place
        ("exact", torch.float32, True, 1.0),  # the bias column goes into the buffer
        ("exact", torch.float32, False, 0.5),  # 1 / scale == 2 is applied
        ("exact", torch.float64, True, 4.0),
        ("sketch", torch.float64, True, 0.5),  # count sketch over V, projection over d + 1
    ],
)
def test_buffered_rows_equal_brute_force(
    mode: str, dtype: torch.dtype, bias: bool, scale: float
) -> None:
    head = nn.Linear(D, V, bias=bias).to(dtype)
    cap = HeadGradientCapture(head, M, mode=mode, sketch_out=4, sketch_in=3, include_bias=bias)
    cap.set_grad_scale(scale)
    ref = torch.zeros(M, V * (D + int(bias)), dtype=torch.float64)
    for seed in range(3):
        a, delta, mask = step(seed, dtype)
        run(cap, a, delta, mask, scale)
        ref += brute_force(a, delta, mask, bias)
    assert cap._buffer is not None and cap._buffer.pending  # the buffered path ran
    if mode == "sketch":
        assert cap._signs is not None and cap._proj is not None  # both sides sketched
        S_v, S_d = dense_count_sketch(cap._signs, 4), cap._proj.double()
        ref = torch.stack([(S_v @ g.view(V, D + 1) @ S_d.T).reshape(-1) for g in ref])
    torch.testing.assert_close(cap.accumulators.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cap.counts, torch.tensor([6.0, 6.0], dtype=torch.float64))


@pytest.mark.parametrize("buffer_mb", ["auto", 0])
def test_reset_zeroes_skipped_and_drops_buffered_rows(buffer_mb: str | int) -> None:
    cap = HeadGradientCapture(nn.Linear(D, V), M, mode="exact", buffer_mb=buffer_mb)
    run(cap, *step(0, bad=True))
    assert cap.skipped_nonfinite == 1
    run(cap, *step(1))  # buffered: still waiting for a flush when reset
    assert (cap._buffer is not None and cap._buffer.pending) == (buffer_mb == "auto")
    cap.reset()
    assert cap.skipped_nonfinite == 0
    assert float(cap.accumulators.abs().sum()) == 0.0 and float(cap.counts.sum()) == 0.0
    a, delta, mask = step(2)
    run(cap, a, delta, mask)  # the next round accumulates only its own rows
    ref = brute_force(a, delta, mask, bias=False)
    torch.testing.assert_close(cap.accumulators.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.inf, math.nan])
def test_set_grad_scale_rejects_non_positive_or_non_finite(bad: float) -> None:
    cap = HeadGradientCapture(nn.Linear(D, V), M)
    msg = f"grad scale: need a finite scale > 0, got {bad}"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        cap.set_grad_scale(bad)


@pytest.mark.parametrize("buffer_mb", ["auto", 0])
def test_load_state_replaces_buffered_rows(buffer_mb: str | int) -> None:
    kw = {"mode": "sketch", "sketch_out": 4, "sketch_in": 3, "seed": 2, "buffer_mb": buffer_mb}
    cap = HeadGradientCapture(nn.Linear(D, V), M, **kw)
    run(cap, *step(0))
    saved = cap.state_dict()
    run(cap, *step(1))  # rows of a later step (buffered or not) that the checkpoint predates
    run(cap, *step(2, bad=True))
    cap.load_state_dict(saved)
    assert torch.equal(cap.accumulators, saved["accumulators"])
    assert torch.equal(cap.counts, saved["counts"]) and cap.skipped_nonfinite == 0


def test_config_and_mismatch_message_name_every_size() -> None:
    head = nn.Linear(D, V)
    kw = {"mode": "sketch", "sketch_out": 4, "sketch_in": 3, "seed": 9, "include_bias": True}
    saved = HeadGradientCapture(head, M, **kw).state_dict()  # rows_per_example None -> 0
    assert saved["config"].dtype == torch.long
    assert saved["config"].tolist() == [M, V, D, 1, 4, 3, 0, 9, 1]
    other = HeadGradientCapture(head, M, rows_per_example=1, **kw)
    msg = (
        "balance: gradient-capture checkpoint was written with a different configuration "
        f"[{M}, {V}, {D}, 1, 4, 3, 0, 9, 1] vs [{M}, {V}, {D}, 1, 4, 3, 1, 9, 1] "
        "[m, V, d, mode, sketch_out, sketch_in, rows_per_example, seed, include_bias]"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        other.load_state_dict(saved)


def test_results_are_read_only_naming_the_attribute_written() -> None:
    cap = HeadGradientCapture(nn.Linear(D, V), M)
    with pytest.raises(AttributeError) as err:
        cap.counts = torch.zeros(M)
    assert str(err.value) == (
        "HeadGradientCapture.counts is read-only: it is computed (pending work settled "
        "first) from _counts"
    )
    with pytest.raises(AttributeError) as err:
        cap.skipped_nonfinite = 0
    assert str(err.value).startswith("HeadGradientCapture.skipped_nonfinite is read-only")
    assert str(err.value).endswith(" from _skipped")


def test_settled_settles_then_converts_and_keeps_its_doc() -> None:
    class Box:
        total: Settled[int] = Settled("_Xtotal", "settle", "The settled total.", convert=int)

        def __init__(self) -> None:
            self._Xtotal, self.pending = 1.0, 2.0

        def settle(self) -> None:
            self._Xtotal, self.pending = self._Xtotal + self.pending, 0.0

    box = Box()
    assert isinstance(Box.total, Settled) and Box.total.__doc__ == "The settled total."
    assert box.total == 3 and isinstance(box.total, int)
    with pytest.raises(AttributeError, match=r"^Box\.total is read-only: .* from _Xtotal$"):
        box.total = 5
    assert box._Xtotal == 3.0
    # a descriptor attached after the class body was never named: its field stands in
    Box.late = Settled("_Xtotal", "settle", "Attached late.")
    with pytest.raises(AttributeError, match=r"^Xtotal is read-only: .* from _Xtotal$"):
        box.late = 5


def _buffer_bytes(m: int, vk: int, dk: int) -> int:
    """The 'auto' row buffer by hand: 8x the fp32 accumulators within [1, 32] MiB, cut to
    whole rows of δ and a, each held twice (buffer and sorting scratch)."""
    mib = min(32.0, max(1.0, 8 * 4 * m * vk * dk / 2**20))
    return 2 * 4 * (vk + dk) * (int(mib * 2**20) // (2 * 4 * (vk + dk)))


@pytest.mark.parametrize(
    ("V_", "d", "bias", "sketch_kw", "vk", "dk", "sketch"),
    [
        (1000, 300, False, {}, 512, 256, 1000 + 256 * 300),  # defaults 512 x 256, both sketched
        (30, 10, True, {"sketch_out": 64, "sketch_in": 16}, 30, 11, 0),  # both sides exact
        (100, 10, True, {"sketch_out": 64, "sketch_in": 16}, 64, 11, 100),  # signs only
        (30, 40, False, {"sketch_out": 64, "sketch_in": 16}, 30, 16, 16 * 40),  # projection only
        (30, 16, True, {"sketch_out": 30, "sketch_in": 16}, 30, 16, 16 * 17),  # d + bias > k
    ],
)
def test_estimate_memory_bytes_by_hand(
    V_: int, d: int, bias: bool, sketch_kw: dict, vk: int, dk: int, sketch: int
) -> None:
    m = 3
    want = 4 * (m * vk * dk + sketch) + 8 * m + _buffer_bytes(m, vk, dk)
    est = HeadGradientCapture.estimate_memory_bytes(
        m, V_, d, "sketch", include_bias=bias, **sketch_kw
    )
    assert est == want
    cap = HeadGradientCapture(nn.Linear(d, V_), m, mode="sketch", include_bias=bias, **sketch_kw)
    assert (cap._vk, cap._dk) == (vk, dk) and cap.memory_bytes() == want
