"""The per-domain products ``Σ_{r∈R} δ_rᵀ a_r`` of one backward (hook path of the capture).

Few, large tensor ops on purpose: this runs once per backward with cold caches, where every
extra dispatch measured tens of microseconds on the default model. No ``no_grad()`` needed:
hooks of a plain backward see tensors without history.
"""

from __future__ import annotations

import contextlib

import torch

from rnb.balance.capture.rowbuffer import RowBuffer
from rnb.balance.capture.rows import RowPlan
from rnb.balance.capture.sketch import count_sketch

__all__ = ["accumulate_in_place", "buffer_step", "no_autocast", "prepare_inputs"]


def prepare_inputs(
    a: torch.Tensor, plan: RowPlan, include_bias: bool, proj: torch.Tensor | None
) -> torch.Tensor:
    """Selected rows of ``a`` (``[N, d]``) in fp32, bias column, subsampling weight, projected.

    Returns:
        ``[rows, dk]`` fp32.
    """
    x = a if plan.idx is None else a.index_select(0, plan.idx)
    x = x.float()
    if include_bias:
        x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
    if plan.row_weight is not None:
        # Weighting a (n×d) rather than δ (n×V) is the cheap side of the product.
        x = x * plan.row_weight.to(x.device, non_blocking=True)[:, None]
    if proj is not None:
        x = x @ proj.T
    return x


def accumulate_in_place(
    accs: list[torch.Tensor],
    delta: torch.Tensor,
    a_sel: torch.Tensor,
    plan: RowPlan,
    signs: torch.Tensor | None,
    vk: int,
    inv_scale: float,
) -> bool:
    """Add each segment's ``δᵀa`` into its domain's ``[vk, dk]`` accumulator now.

    Args:
        accs: Per-domain accumulator views.
        delta: ``[N, V]`` output gradient of the whole forward.
        a_sel: Prepared inputs of the planned rows (`prepare_inputs`).
        plan: The forward's row plan.
        signs: Count-sketch signs over ``V`` or None (exact side).
        vk: Sketch buckets over ``V``.
        inv_scale: Divides ``δ`` (fp16 GradScaler).

    Returns:
        False (nothing added) when ``δ`` or ``a`` hold a non-finite value.
    """
    if plan.idx is not None:
        delta = delta.index_select(0, plan.idx)
    if signs is not None:
        delta = count_sketch(delta, signs, vk)
    # One reduction (not isfinite(...).all(), which writes a bool copy): any inf/NaN in
    # δ or a makes the sum non-finite. Skip the whole batch (Decision, method.md).
    if not bool((delta.sum() + a_sel.sum()).isfinite()):
        return False
    delta_t = delta.float().T  # bf16 δ is promoted here, once
    for dom, start, end in plan.segments:
        accs[dom].addmm_(delta_t[:, start:end], a_sel[start:end], alpha=inv_scale)
    return True


def buffer_step(
    buffer: RowBuffer,
    delta: torch.Tensor,
    a: torch.Tensor,
    plan: RowPlan,
    signs: torch.Tensor | None,
    vk: int,
    include_bias: bool,
    proj: torch.Tensor | None,
    inv_scale: float,
) -> None:
    """Copy this backward's selected rows into the buffer (products deferred to a flush).

    The caller flushes first when the rows do not fit (`RowBuffer.fits`).
    """
    n = plan.rows
    d_out, a_out = buffer.slot(n)
    if signs is None and delta.dtype == d_out.dtype:
        torch.index_select(delta, 0, plan.idx, out=d_out)  # gather straight into place
    else:
        rows = delta.index_select(0, plan.idx)
        d_out.copy_(rows if signs is None else count_sketch(rows, signs, vk))
    plain = not (include_bias or proj is not None or plan.row_weight is not None)
    if plain and a.dtype == a_out.dtype:
        torch.index_select(a, 0, plan.idx, out=a_out)
    else:
        a_out.copy_(prepare_inputs(a, plan, include_bias, proj))
    if inv_scale != 1.0:
        a_out.mul_(inv_scale)
    buffer.commit(n, plan.row_domains, plan.example_counts)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """fp32 products under autocast; entering the context only when autocast is on saves tens
    of microseconds per hook on small models. No no_grad() is needed: the hooks only touch
    detached inputs and backward-time gradients, neither of which records a graph."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
