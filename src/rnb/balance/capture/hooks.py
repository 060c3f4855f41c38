"""The hook path of `HeadGradientCapture` (``balance.capture.fused: false``, sketch capture,
token subsampling): a forward hook on the head registers a pre-hook on its output's node,
which adds the per-domain products in the backward (or copies rows into the row buffer)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from rnb.balance.capture.products import (
    accumulate_in_place,
    buffer_step,
    no_autocast,
    prepare_inputs,
)
from rnb.balance.capture.rows import RowPlan

__all__ = ["forward_hook", "grad_hook"]


def forward_hook(cap: Any, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Forward hook of the head (``cap``: the `HeadGradientCapture`): plan the batch's rows
    and register `grad_hook` on the output's node."""
    if not cap._capturing():
        return
    if not (isinstance(output, torch.Tensor) and output.requires_grad):
        return
    a = inputs[0]
    plan = cap._take_plan(a)
    if plan is None:
        return
    # The input rows are read in the backward hook: autograd keeps ``a`` alive until
    # then anyway, and one copy straight into the row buffer beats two. A pre-hook on
    # the output's node is what ``Tensor.register_hook`` installs, minus its overhead.
    hook = partial(grad_hook, cap, nr=output.output_nr, plan=plan, a=a.detach())
    output.grad_fn.register_prehook(hook)


def grad_hook(cap: Any, grads: tuple, nr: int, plan: RowPlan, a: torch.Tensor) -> None:
    """Backward pre-hook: the per-domain products of ``δ`` (``grads[nr]``) and the head input
    ``a`` into ``cap``'s accumulators, or the rows into its row buffer. Metered."""
    grad = grads[nr]
    if grad is None:
        return
    with cap._timed(), no_autocast(grad.device.type):
        delta = grad.reshape(-1, cap.V)
        a = a.reshape(-1, cap.d)
        buffer = cap._buffer
        if plan.row_domains is not None and buffer is not None and plan.rows <= buffer.capacity:
            if not buffer.fits(plan.rows):
                cap.flush()
            buffer_step(
                buffer, delta, a, plan, cap._signs, cap._vk, cap.include_bias,
                cap._proj, cap._inv_scale,
            )  # fmt: skip
            return
        a_sel = prepare_inputs(a, plan, cap.include_bias, cap._proj)
        if accumulate_in_place(
            cap._acc_views, delta, a_sel, plan, cap._signs, cap._vk, cap._inv_scale
        ):
            cap._counts += plan.example_counts
        else:
            cap._skipped += 1
