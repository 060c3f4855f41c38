"""Where the capture's tensors live, and the autocast guard of its products.

The meta device stands in for an accelerator on a CPU-only machine: its tensors have a
device and a shape but no data, so placement is checked without running any product.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.capture.products import no_autocast, prepare_inputs
from rnb.balance.capture.rows import RowPlan

META = torch.device("meta")
D, V, M = 5, 7, 2
SKETCH = {"mode": "sketch", "sketch_out": 4, "sketch_in": 3}  # signs and a projection


def test_capture_allocates_on_the_heads_device() -> None:
    cap = HeadGradientCapture(nn.Linear(D, V, device=META), M, **SKETCH)
    assert cap._signs is not None and cap._signs.device == META
    assert cap._proj is not None and cap._proj.device == META
    assert cap.accumulators.device == META and cap.accumulators.shape == (M, 4 * 3)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :2] = True
    assert cap.set_batch(torch.tensor([0, 1]), row_mask=mask) == 4
    assert cap._pending is not None
    plan = cap._pending[2]  # the gather indices: copied to the head's device once, at planning
    assert plan.idx is not None and plan.idx.device == META


@pytest.mark.parametrize(
    ("kw", "sketched"),
    [(SKETCH, True), ({"mode": "exact"}, False), ({**SKETCH, "buffer_mb": 0}, True)],
)
def test_capture_follows_the_head_to_another_device(kw: dict, sketched: bool) -> None:
    """Lightning moves the model after callbacks' setup: the first forward on the new device
    flushes what was buffered on the old one, then moves accumulators, buffer and sketch."""
    head = nn.Linear(D, V)
    cap = HeadGradientCapture(head, M, **kw)
    cap.attach()
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :2] = True
    cap.set_batch(torch.tensor([0, 1]), row_mask=mask)
    head(torch.randn(2, 6, D)).backward(torch.randn(2, 6, V))  # buffered on the CPU
    cap.set_batch(torch.tensor([1, 1, 0]))
    head.to(META)
    head(torch.empty(3, 4, D, device=META, requires_grad=True))
    assert cap._acc.device == META
    views = cap._acc_views
    assert len(views) == M and all(v.shape == (cap._vk, cap._dk) for v in views)
    assert all(v.device == META and v._base is cap._acc for v in views)  # views of _acc
    if cap._buffer is not None:
        assert cap._buffer.device == META and cap._buffer.fill == 0
    assert cap.counts.tolist() == [1.0, 1.0]  # the CPU step was flushed before the move
    for t in (cap._signs, cap._proj):
        assert (t is not None) == sketched
        assert t is None or t.device == META


def test_prepare_inputs_weights_rows_on_the_inputs_device() -> None:
    plan = RowPlan(None, [(0, 0, 3)], torch.ones(3), torch.zeros(M, dtype=torch.float64), 3)
    out = prepare_inputs(torch.empty(3, D, device=META), plan, True, None)
    assert out.device == META and out.shape == (3, D + 1)


def test_prepare_inputs_weights_and_projects_rows() -> None:
    a = torch.arange(6.0).reshape(3, 2)
    plan = RowPlan(torch.tensor([2, 0]), [(0, 0, 2)], torch.tensor([0.5, 2.0]), torch.ones(1), 2)
    proj = torch.tensor([[1.0, 0.0, 1.0]])
    out = prepare_inputs(a, plan, True, proj)
    # rows 2, 0 with a bias column: [4, 5, 1], [0, 1, 1]; weighted by 0.5, 2; projected
    assert out.tolist() == [[2.5], [2.0]]


def test_no_autocast_turns_autocast_off_only_where_it_is_on() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
        with no_autocast("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
    ctx = no_autocast("cpu")
    assert not isinstance(ctx, torch.autocast)  # off already: nothing to enter
    with ctx:
        assert not torch.is_autocast_enabled("cpu")
