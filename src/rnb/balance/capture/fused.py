"""Fused capture: the head's own weight gradient computed per domain (``balance.capture.fused``).

For ``s = a Wᵀ + b`` autograd computes ``∂W = δᵀ a = Σ_domains δ_Rᵀ a_R``. The hook path
(`products`) computes the per-domain terms a second time, so exact capture costs one extra
weight-gradient product (``2·rows·V·d`` FLOPs: ~13 % of a step on a head-dominated model).
Here the head runs through `FusedLinear`, whose backward computes each ``δ_Rᵀ a_R`` once,
adds it to domain ``R``'s accumulator and returns ``Σ_R δ_Rᵀ a_R`` as the weight gradient:
no extra FLOPs. Autograd still accumulates every other use of ``W`` (a tied input embedding
adds its own gradient into ``.grad``).

What it costs instead: per backward, ``k`` per-domain ``V×d`` products written to a scratch
(``k`` = domains present in the batch), summed into ``∂W`` and added into the accumulators:
about four ``k·V·d`` memory passes that a single ``δᵀa`` product does not make, and ``k``
smaller products in place of one. It wins when a domain's rows in a batch are many compared
with that traffic (measured in ``benchmarks/capture_microbench.py``; see
`rnb.balance.capture.sizes.resolve_fused`).

Rows: with a row mask (``set_batch(row_mask=...)``) only the selected rows enter the
products, so the weight gradient skips the masked rows too. The fused capture plans them in
the *spans* layout (`rows.plan_rows`): each run of selected same-domain rows is read in
place, so ``δ`` is not copied (a gather of ``δ`` was the unmetered cost of the small end,
measured in ``benchmarks/overhead.py``'s phases). That is exact because the mask's
contract is that those rows' ``δ`` is zero (an LM's positions whose next label is ignored);
a mask marking a row with non-zero ``δ`` would change training here, not just the estimate.
Exact mode only, and without ``rows_per_example`` (a subsample is not the weight gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from rnb.balance.capture.rows import RowPlan

__all__ = ["FusedLinear", "domain_products", "fused_forward"]

#: backward callback: (δ [N, V], a [N, d]) -> ∂W with the bias column appended when captured
Products = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FusedLinear(torch.autograd.Function):
    """``F.linear(a, weight, bias)`` whose weight (and bias) gradient comes from ``products``.

    Under autocast the forward runs in the autocast dtype like ``nn.Linear`` would; the
    per-domain products run in fp32 (the weight gradient is returned in the weight's dtype).
    """

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        products: Products,
        with_bias_column: bool,
    ) -> torch.Tensor:
        device, x = a.device.type, a
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = a.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        # The uncast input, as the hook path reads it: the products run in fp32 anyway.
        ctx.save_for_backward(a, weight)
        ctx.products, ctx.with_bias_column = products, with_bias_column
        ctx.has_bias = bias is not None
        with torch.autocast(device, enabled=False):
            return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        a, weight = ctx.saved_tensors
        grad_a = grad @ weight.to(grad.dtype) if ctx.needs_input_grad[0] else None
        V, d = weight.shape
        delta, rows = grad.reshape(-1, V), a.reshape(-1, d)
        grad_w = ctx.products(delta, rows)
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # Σ over all rows, not only the planned ones: the bias costs V per row either way.
            grad_b = grad_w[:, d] if ctx.with_bias_column else delta.sum(0)
        return grad_a, grad_w[:, :d], grad_b, None, None


def domain_products(
    delta: torch.Tensor,
    a: torch.Tensor,
    plan: RowPlan,
    include_bias: bool,
    scratch: torch.Tensor,
) -> tuple[torch.Tensor, list[int]]:
    """Per-domain ``δ_Rᵀ [a_R, 1]`` of one backward, in fp32, one slot per present domain.

    Args:
        delta: ``[N, V]`` output gradient.
        a: ``[N, d]`` head input.
        plan: Row plan (gathered by domain, or runs of examples in place; row weights of the
            in-place layout are 0/1 mask entries and are not applied: masked ``δ`` is zero).
        include_bias: Append a ones column (bias gradient in the last column).
        scratch: ``[m, V, d (+1)]`` fp32 workspace; slots ``0..k-1`` are overwritten.

    Returns:
        (``scratch[:k]``, the domain of each slot).
    """
    if plan.idx is not None:
        delta, a = delta.index_select(0, plan.idx), a.index_select(0, plan.idx)
    delta_t, a = delta.float().T, a.float()
    if include_bias:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    slot: dict[int, int] = {}
    for dom, start, end in plan.segments:
        j = slot.get(dom)
        if j is None:
            j = slot[dom] = len(slot)
            torch.mm(delta_t[:, start:end], a[start:end], out=scratch[j])
        else:
            scratch[j].addmm_(delta_t[:, start:end], a[start:end])
    return scratch[: len(slot)], list(slot)


def fused_forward(cap: Any, a: torch.Tensor) -> torch.Tensor:
    """The head's forward while ``cap`` (a `HeadGradientCapture`) is attached fused."""
    weight, bias = cap.head.weight, cap.head.bias
    if cap._capturing() and (a.requires_grad or weight.requires_grad):
        plan = cap._take_plan(a)
        if plan is not None:
            products = partial(_fused_products, cap, plan=plan)
            return FusedLinear.apply(a, weight, bias, products, cap.include_bias)
    return F.linear(a, weight, bias)


def _fused_products(cap: Any, delta: torch.Tensor, a: torch.Tensor, plan: RowPlan) -> torch.Tensor:
    """Backward of `FusedLinear`: per-domain products into ``cap``'s accumulators, their sum
    (the weight gradient) returned. Metered: only the work plain autograd would not do."""
    with cap._timed():
        if cap._scratch is None or cap._scratch.device != delta.device:
            cap._scratch = delta.new_empty(cap.num_domains, cap.V, cap._dk, dtype=torch.float32)
        if plan.idx is not None:
            # The gather is capture work (plain autograd reads δ in place): metered.
            delta, a = delta.index_select(0, plan.idx), a.index_select(0, plan.idx)
            plan = replace(plan, idx=None)
    parts, doms = domain_products(delta, a, plan, cap.include_bias, cap._scratch)
    with cap._timed():
        grad_w = parts[0].clone() if len(doms) == 1 else parts.sum(0)
        # Any inf/NaN in a product reaches the sum: skip the batch (method.md), train on.
        if bool(grad_w.sum().isfinite()):
            index = torch.tensor(doms, device=parts.device)
            cap._acc.index_add_(0, index, parts.view(len(doms), -1), alpha=cap._inv_scale)
            cap._counts += plan.example_counts
        else:
            cap._skipped += 1
    return grad_w.to(cap.head.weight.dtype)
