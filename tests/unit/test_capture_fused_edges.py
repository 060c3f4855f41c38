"""Edges of the capture's fused path, hook path and `Settled` totals.

Fused (`rnb.balance.capture.fused`): gathered rows (a fragmented mask), one-domain batches,
frozen heads, autocast without a bias, a float64 head, non-finite batches; the training
gradients must equal plain autograd and the accumulators brute-force ``Σ δ_rᵀ [a_r, 1]``
per domain. Hooks (`rnb.balance.capture.hooks`): outputs without grad, the row buffer at
and over its capacity. Every check runs on tiny CPU tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.capture.fused import domain_products
from rnb.balance.capture.rows import plan_rows
from rnb.balance.capture.settled import Settled

Loss = Callable[[torch.Tensor], torch.Tensor]


def brute_force(
    head: nn.Linear,
    x: torch.Tensor,
    dom: list[int],
    keep: np.ndarray | None,
    loss_fn: Loss,
    m: int,
    include_bias: bool,
) -> torch.Tensor:
    """``[m, V·(d+bias)]`` float64: per domain, Σ over its selected rows of ``δ_rᵀ [a_r, 1]``,
    ``δ`` from autograd on a detached copy of the head."""
    w = head.weight.detach().double().requires_grad_()
    b = None if head.bias is None else head.bias.detach().double()
    out = F.linear(x.detach().double(), w, b)
    out.retain_grad()
    loss_fn(out).backward()
    V, d = w.shape
    delta, a = out.grad.reshape(-1, V), x.detach().double().reshape(-1, d)
    if include_bias:
        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    T = delta.shape[0] // len(dom)
    flat = np.ones(delta.shape[0], dtype=bool) if keep is None else keep.reshape(-1)
    ref = torch.zeros(m, V, a.shape[1], dtype=torch.float64)
    for r in range(delta.shape[0]):
        if flat[r]:
            ref[dom[r // T]] += torch.outer(delta[r], a[r])
    return ref.reshape(m, -1)


def brute_force_rows(
    delta: torch.Tensor,
    a: torch.Tensor,
    dom: np.ndarray,
    keep: np.ndarray,
    m: int,
    include_bias: bool,
) -> torch.Tensor:
    """``[m, V, d(+1)]`` float64 per-domain ``Σ δ_rᵀ [a_r, 1]`` over the selected rows."""
    T = keep.shape[1]
    a = a.double()
    if include_bias:
        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    ref = torch.zeros(m, delta.shape[1], a.shape[1], dtype=torch.float64)
    for r, selected in enumerate(keep.reshape(-1).tolist()):
        if selected:
            ref[dom[r // T]] += torch.outer(delta[r].double(), a[r])
    return ref


def masked_square_loss(keep: np.ndarray, V: int, seed: int = 0) -> Loss:
    """A loss whose ``δ`` is zero on unselected rows (the row mask's contract)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(*keep.shape, V, generator=g, dtype=torch.float64)
    sel = torch.from_numpy(keep)[..., None]

    def loss(out: torch.Tensor) -> torch.Tensor:
        return (out.square() * c.to(out.dtype) * sel).sum()

    return loss


def every_other_row(B: int, T: int) -> np.ndarray:
    keep = np.zeros((B, T), dtype=bool)
    keep[:, ::2] = True
    return keep


# ----------------------------------------------------------------------------- fused
@pytest.mark.parametrize("include_bias", [False, True])
def test_fused_fragmented_mask_gathers_rows_and_matches_autograd(include_bias: bool) -> None:
    torch.manual_seed(0)
    B, T, d, V, m = 3, 12, 4, 5, 3
    head = nn.Linear(d, V).double()
    ref_head = copy.deepcopy(head)
    keep = every_other_row(B, T)  # T/2 runs per example: too fragmented for spans
    dom = [2, 0, 2]
    plan = plan_rows(np.array(dom), keep, T, m, spans=True)
    assert plan.idx is not None  # the gather layout is what this test exercises
    cap = HeadGradientCapture(head, m, mode="exact", include_bias=include_bias, fused=True)
    cap.attach()
    cap.set_grad_scale(4.0)
    want = torch.zeros(m, V * (d + include_bias), dtype=torch.float64)
    for step in range(2):  # the scratch is reused by the second backward
        x = torch.randn(B, T, d, dtype=torch.float64, requires_grad=True)
        loss_fn = masked_square_loss(keep, V, seed=step)
        assert cap.set_batch(torch.tensor(dom), torch.from_numpy(keep)) == int(keep.sum())
        (4.0 * loss_fn(head(x))).backward()
        x_ref = x.detach().clone().requires_grad_()
        (4.0 * loss_fn(ref_head(x_ref))).backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        want += brute_force(head, x, dom, keep, loss_fn, m, include_bias)
    torch.testing.assert_close(head.weight.grad, ref_head.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.bias.grad, ref_head.bias.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cap.accumulators.double(), want, rtol=1e-5, atol=1e-6)
    assert cap.counts.tolist() == [2.0, 0.0, 4.0]


@pytest.mark.parametrize("include_bias", [False, True])
def test_domain_products_gather_the_planned_rows(include_bias: bool) -> None:
    torch.manual_seed(1)
    B, T, d, V, m = 4, 6, 3, 7, 3
    dom = np.array([1, 0, 1, 1])
    keep = np.zeros((B, T), dtype=bool)
    keep[0, 1:3] = keep[1, 4] = keep[2, :5] = keep[3, 5] = True  # 9 of 24 rows
    plan = plan_rows(dom, keep, T, m)
    assert plan.idx is not None
    delta, a = torch.randn(B * T, V), torch.randn(B * T, d)
    delta[torch.from_numpy(~keep.reshape(-1))] = 0.0
    scratch = torch.full((m, V, d + include_bias), float("nan"))
    parts, doms = domain_products(delta, a, plan, include_bias, scratch)
    assert doms == [0, 1]
    ref = brute_force_rows(delta, a, dom, keep, m, include_bias)
    torch.testing.assert_close(parts, ref[doms].float(), rtol=1e-5, atol=1e-6)


def test_fused_one_domain_batch_reuses_the_scratch() -> None:
    torch.manual_seed(2)
    head = nn.Linear(4, 3)
    ref_head = copy.deepcopy(head)
    cap = HeadGradientCapture(head, 3, mode="exact", fused=True)
    cap.attach()
    x = torch.randn(5, 4)
    cap.set_batch(torch.full((5,), 1))
    head(x).square().sum().backward()
    scratch = cap._scratch
    ref_head(x).square().sum().backward()
    torch.testing.assert_close(head.weight.grad, ref_head.weight.grad)
    acc = cap.accumulators.view(3, 3, 4)
    torch.testing.assert_close(acc[1], ref_head.weight.grad)
    assert float(acc[0].abs().max()) == float(acc[2].abs().max()) == 0.0
    cap.set_batch(torch.tensor([0, 2, 0, 2, 2]))
    head(x).square().sum().backward()
    assert cap._scratch is scratch  # allocated once, not per backward
    assert cap.counts.tolist() == [2.0, 5.0, 3.0]


@pytest.mark.parametrize(
    ("kw", "bad"), [({"fused": True}, (0, 0, "inf")), ({"buffer_mb": 0}, (2, 1, "nan"))]
)
def test_nonfinite_batches_are_each_counted(kw: dict, bad: tuple) -> None:
    """Fused path and hook path alike: every non-finite batch is skipped and counted."""
    head = nn.Linear(4, 3)
    cap = HeadGradientCapture(head, 2, mode="exact", **kw)
    cap.attach()
    x = torch.randn(4, 4)
    x[bad[0], bad[1]] = float(bad[2])
    for _ in range(3):
        cap.set_batch(torch.tensor([0, 1, 1, 0]))
        head(x).sum().backward()
    assert cap.skipped_nonfinite == 3 and cap.counts.tolist() == [0.0, 0.0]


def test_fused_frozen_head_still_passes_the_input_gradient() -> None:
    torch.manual_seed(3)
    head = nn.Linear(4, 3)
    head.weight.requires_grad_(False)
    cap = HeadGradientCapture(head, 2, mode="exact", fused=True)
    cap.attach()
    x = torch.randn(6, 4, requires_grad=True)
    dom = [0, 1, 1, 0, 0, 1]
    cap.set_batch(torch.tensor(dom))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return out.square().sum()

    loss_fn(head(x)).backward()
    x_ref = x.detach().clone().requires_grad_()
    loss_fn(F.linear(x_ref, head.weight, head.bias)).backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert head.weight.grad is None
    torch.testing.assert_close(
        cap.accumulators.double(), brute_force(head, x, dom, None, loss_fn, 2, False)
    )


def test_fused_autocast_head_without_bias_matches_hooks() -> None:
    torch.manual_seed(4)
    fused, hooked = nn.Linear(8, 6, bias=False), nn.Linear(8, 6, bias=False)
    hooked.load_state_dict(fused.state_dict())
    x = torch.randn(5, 8)
    caps = []
    for head, is_fused in ((fused, True), (hooked, False)):
        cap = HeadGradientCapture(head, 2, mode="exact", fused=is_fused, buffer_mb=0)
        cap.attach()
        cap.set_batch(torch.tensor([1, 0, 1, 1, 0]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(x)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        caps.append(cap)
    torch.testing.assert_close(caps[0].accumulators, caps[1].accumulators, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.weight.grad, hooked.weight.grad, rtol=2e-2, atol=2e-2)


def test_fused_float64_head_gradients_come_from_the_fp32_products() -> None:
    # FusedLinear's contract: the products (bias column included) run in fp32 and are
    # returned in the weight's dtype, so a float64 head sees fp32-rounded gradients.
    torch.manual_seed(5)
    head = nn.Linear(4, 6).double()
    ref_head = copy.deepcopy(head)
    cap = HeadGradientCapture(head, 2, mode="exact", include_bias=True, fused=True)
    cap.attach()
    x = torch.randn(7, 4, dtype=torch.float64)
    c = torch.randn(7, 6, dtype=torch.float64)
    cap.set_batch(torch.tensor([0, 1, 1, 0, 1, 0, 0]))
    (head(x) * c).sum().backward()
    (ref_head(x) * c).sum().backward()
    for got, ref in (
        (head.weight.grad, ref_head.weight.grad),
        (head.bias.grad, ref_head.bias.grad),
    ):
        assert got.dtype == torch.float64
        assert torch.equal(got, got.float().double())  # fp32 values
        assert not torch.equal(ref, ref.float().double())  # plain autograd: float64 sums
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- hooks
def test_hook_ignores_an_output_without_grad() -> None:
    head = nn.Linear(4, 3).requires_grad_(False)
    cap = HeadGradientCapture(head, 2, mode="exact")
    cap.attach()
    cap.set_batch(torch.tensor([0, 1]))
    out = head(torch.randn(2, 4))  # training mode, grad enabled, nothing requires grad
    assert not out.requires_grad
    assert float(cap.accumulators.abs().max()) == 0.0 and cap.counts.tolist() == [0.0, 0.0]


def buffered_cap(head: nn.Linear, m: int, capacity: int, include_bias: bool) -> HeadGradientCapture:
    width = head.out_features + head.in_features + include_bias
    mb = capacity * 2 * 4 * width / 2**20  # buffer + sorting scratch, fp32
    cap = HeadGradientCapture(head, m, mode="exact", include_bias=include_bias, buffer_mb=mb)
    assert cap._buffer is not None and cap._buffer.capacity == capacity
    cap.attach()
    return cap


@pytest.mark.parametrize("include_bias", [False, True])
def test_row_buffer_takes_a_batch_of_exactly_its_capacity_then_flushes_before_overflow(
    include_bias: bool,
) -> None:
    torch.manual_seed(6)
    B, T, d, V, m = 4, 4, 3, 5, 2
    head = nn.Linear(d, V)
    cap = buffered_cap(head, m, 6, include_bias)
    first = np.zeros((B, T), dtype=bool)
    first[0, :2] = first[1, 1] = first[3, 1:4] = True  # 6 rows: exactly the capacity
    second = np.zeros((B, T), dtype=bool)
    second[1, :2] = second[2, 2:] = True  # 4 rows: do not fit behind the first 6
    dom = [1, 0, 0, 1]
    want = torch.zeros(m, V * (d + include_bias), dtype=torch.float64)
    for step, keep in enumerate((first, second)):
        x = torch.randn(B, T, d)
        loss_fn = masked_square_loss(keep, V, seed=step)
        assert cap.set_batch(torch.tensor(dom), torch.from_numpy(keep)) == int(keep.sum())
        loss_fn(head(x)).backward()
        assert cap._buffer.pending  # rows deferred to a flush
        # Products so far: none after the first step; the first step's before the second.
        torch.testing.assert_close(cap._acc.double(), want, rtol=1e-5, atol=1e-6)
        want += brute_force(head, x, dom, keep, loss_fn, m, include_bias)
    torch.testing.assert_close(cap.accumulators.double(), want, rtol=1e-5, atol=1e-6)
    assert not cap._buffer.pending
    assert cap.counts.tolist() == [4.0, 4.0]


# ----------------------------------------------------------------------------- Settled
class Owner:
    total: Settled[int] = Settled("_total", "settle", "The total, settled.", convert=int)
    raw: Settled[torch.Tensor] = Settled("_total", "settle", "The stored total.")

    def __init__(self) -> None:
        self._total = torch.tensor(2.0)
        self.settled = 0

    def settle(self) -> None:
        self.settled += 1
        self._total += 1


def test_settled_settles_then_converts_on_each_read() -> None:
    owner = Owner()
    value = owner.total
    assert value == 3 and type(value) is int and owner.settled == 1
    raw = owner.raw
    assert raw is owner._total and float(raw) == 4.0 and owner.settled == 2


def test_settled_on_the_class_is_the_descriptor_and_is_read_only() -> None:
    assert isinstance(Owner.total, Settled) and Owner.total.__doc__ == "The total, settled."
    owner = Owner()
    with pytest.raises(AttributeError) as err:
        owner.total = 5
    assert str(err.value) == (
        "Owner.total is read-only: it is computed (pending work settled first) from _total"
    )
    assert owner.settled == 0 and float(owner._total) == 2.0
