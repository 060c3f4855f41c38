"""The contract of `HeadGradientCapture` with its caller: argument checks (exact messages
naming the key), defaults, the set_batch → forward protocol, the row buffer's deferral and
the non-finite counter, against hand-computed values."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.capture.sketch import stream_seed

D, V = 5, 7


def exact(msg: str) -> str:
    return f"^{re.escape(msg)}$"


def test_invalid_arguments_raise_naming_the_key() -> None:
    head = nn.Linear(D, V)
    cases = [
        ({"head": nn.Conv1d(D, V, 1)}, "model.head_module: need an nn.Linear, got Conv1d"),
        ({"num_domains": 0}, "num_domains: need >= 1, got 0"),
        ({"sketch_out": 0}, "balance.capture.sketch_out/sketch_in: need >= 1, got 0, 256"),
        ({"sketch_in": 0}, "balance.capture.sketch_out/sketch_in: need >= 1, got 512, 0"),
        (
            {"rows_per_example": 0},
            "balance.capture.rows_per_example: need >= 1 or null, got 0",
        ),
        (
            {"head": nn.Linear(D, V, bias=False), "include_bias": True},
            "balance.capture.include_bias: the head has no bias",
        ),
        (
            {"fused": True},
            "balance.capture.fused: true needs balance.capture.mode=exact and "
            "balance.capture.rows_per_example=null (got mode='sketch', rows_per_example=None): "
            "a sketch or a row subsample is not the head's weight gradient",
        ),
    ]
    for kw, msg in cases:
        kw = {"head": head, "num_domains": 2, **kw}
        with pytest.raises(ValueError, match=exact(msg)):
            HeadGradientCapture(**kw)


def test_smallest_valid_sizes_are_accepted() -> None:
    head = nn.Linear(D, V)
    cap = HeadGradientCapture(head, 1, sketch_out=1, sketch_in=1, rows_per_example=1)
    assert (cap.num_domains, cap._vk, cap._dk) == (1, 1, 1)
    cap.attach()
    cap.set_batch(torch.tensor([0, 0]))
    head(torch.randn(2, 3, D)).sum().backward()
    assert cap.counts.tolist() == [2.0]


def test_defaults_and_their_checkpoint_config() -> None:
    head = nn.Linear(300, 1000)
    cap = HeadGradientCapture(head, 3)
    # [m, V, d, mode (sketch), sketch_out, sketch_in, rows_per_example, seed, include_bias]
    assert cap.state_dict()["config"].tolist() == [3, 1000, 300, 1, 512, 256, 0, 0, 0]
    assert (cap._vk, cap._dk) == (512, 256) and not cap.fused
    seeded = HeadGradientCapture(head, 3, seed=0)  # the default seed draws the same sketch
    assert cap._signs is not None and torch.equal(cap._signs, seeded._signs)
    assert cap._proj is not None and torch.equal(cap._proj, seeded._proj)


def test_stream_seed_golden_values() -> None:
    # Every run's sketch derives from these: a change silently changes all sketches.
    assert stream_seed(0) == 0x5DEECE66D
    assert stream_seed(1) == 2177342807683326594
    assert stream_seed(12345) == 2390534203076146970
    assert all(0 <= stream_seed(s) < 2**63 for s in (0, 1, 7, 2**40 + 3, 2**70))


@pytest.mark.parametrize(("rows", "capacity"), [(0, None), (1, 1), (2.5, 2)])
def test_buffer_mb_sets_whole_rows_and_zero_means_no_buffer(
    rows: float, capacity: int | None
) -> None:
    mb = rows * 8 * (V + D) / 2**20  # a row of δ and a, each held twice, in fp32
    cap = HeadGradientCapture(nn.Linear(D, V), 2, mode="exact", buffer_mb=mb)
    assert (None if cap._buffer is None else cap._buffer.capacity) == capacity
    est = HeadGradientCapture.estimate_memory_bytes(2, V, D, "exact", buffer_mb=mb)
    assert cap.memory_bytes() == est == 4 * 2 * V * D + 8 * 2 + 8 * (V + D) * (capacity or 0)


def test_forward_needs_a_fresh_set_batch_each_time() -> None:
    head = nn.Linear(D, V)
    cap = HeadGradientCapture(head, 2)
    cap.attach()
    msg = exact("HeadGradientCapture: call set_batch(domain_ids) before each forward")
    with pytest.raises(RuntimeError, match=msg):
        head(torch.randn(2, D))
    cap.set_batch(torch.tensor([0, 1]))
    head(torch.randn(2, D))
    with pytest.raises(RuntimeError, match=msg):  # a stale batch is not reused
        head(torch.randn(2, D))
    cap.set_batch(torch.tensor([0, 1]))
    cap.detach()  # drops the declared batch
    cap.attach()
    with pytest.raises(RuntimeError, match=msg):
        head(torch.randn(2, D))


def test_row_mask_width_must_match_the_rows_per_example() -> None:
    head = nn.Linear(D, V)
    cap = HeadGradientCapture(head, 2)
    cap.attach()
    cap.set_batch(torch.tensor([0, 1]), row_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=exact("row_mask: need [B, 6], got (2, 5)")):
        head(torch.randn(2, 6, D))


@pytest.mark.parametrize("B", [0, 1])
def test_empty_and_single_example_batches(B: int) -> None:
    head = nn.Linear(D, V, bias=False)
    cap = HeadGradientCapture(head, 2, mode="exact")
    cap.attach()
    a, delta = torch.randn(B, 3, D), torch.randn(B, 3, V)
    cap.set_batch(torch.ones(B, dtype=torch.long))
    head(a).backward(delta)
    want = torch.zeros(2, V, D, dtype=torch.float64)
    for b in range(B):
        want[1] += delta[b].double().T @ a[b].double()
    torch.testing.assert_close(cap.accumulators.double(), want.reshape(2, -1), rtol=1e-5, atol=1e-6)
    assert cap.counts.tolist() == [0.0, float(B)]


def test_set_batch_returns_the_rows_that_will_be_captured() -> None:
    cap = HeadGradientCapture(nn.Linear(D, V), 2)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, :2] = mask[2, 1:6] = True
    assert cap.set_batch(torch.tensor([0, 1, 0]), row_mask=mask) == 7  # gather layout
    assert cap.set_batch(torch.tensor([0, 1, 0]), row_mask=torch.ones(3, 8)) == 24  # in place
    assert cap.set_batch(torch.tensor([0, 1, 0])) is None  # rows known only at the forward


def test_fused_capture_plans_spans_without_a_gather() -> None:
    # Right-padded rows: the fused capture reads each example's run in place (no copy of δ).
    cap = HeadGradientCapture(nn.Linear(D, V), 2, mode="exact", fused=True)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, :2] = mask[1, :3] = mask[2, :1] = True
    cap.set_batch(torch.tensor([0, 1, 0]), row_mask=mask)
    assert cap._pending is not None
    plan = cap._pending[2]
    assert plan.idx is None and plan.segments == [(0, 0, 2), (1, 8, 11), (0, 16, 17)]


def _masked_step(cap: HeadGradientCapture, seed: int, bad: bool) -> None:
    """One gather-layout (buffered) step; ``bad``: an inf in a selected row's δ."""
    g = torch.Generator().manual_seed(seed)
    a, delta = torch.randn(2, 6, D, generator=g), torch.randn(2, 6, V, generator=g)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :2] = True
    if bad:
        delta[1, 0, 3] = float("inf")
    cap.set_batch(torch.tensor([0, 1]), row_mask=mask)
    cap.head(a).backward(delta)


def test_buffer_defers_products_until_full_or_read_and_skips_add_up() -> None:
    cap = HeadGradientCapture(nn.Linear(D, V), 2, mode="exact")
    cap.attach()
    assert cap._buffer is not None
    _masked_step(cap, 0, bad=True)
    _masked_step(cap, 1, bad=False)
    assert cap._buffer.fill == 8  # both steps wait: no flush at a forward or backward
    assert cap.skipped_nonfinite == 1  # the read flushed
    _masked_step(cap, 2, bad=True)
    _masked_step(cap, 3, bad=True)
    assert cap.skipped_nonfinite == 3  # a flush adds its dropped steps to the count
    assert cap.counts.tolist() == [1.0, 1.0]
