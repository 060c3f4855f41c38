"""`HeadGradientCapture`: wiring of the per-domain head-gradient capture into training.

The idea, the sketch and the costs are described in the package docstring
(`rnb.balance.capture`); this module holds the object a training loop talks to: hooks on the
head, the batch declaration, the round's results, checkpoint state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from rnb.balance.capture import sizes, state
from rnb.balance.capture.fused import fused_forward
from rnb.balance.capture.hooks import forward_hook
from rnb.balance.capture.products import no_autocast
from rnb.balance.capture.rowbuffer import RowBuffer, buffer_rows, buffer_size_mb
from rnb.balance.capture.rows import RowPlan, parse_batch, plan_rows
from rnb.balance.capture.settled import Settled
from rnb.balance.capture.sketch import orthogonal_projection, stream_seed
from rnb.balance.rnb_math import raw_gram

__all__ = ["HeadGradientCapture"]


class HeadGradientCapture:
    """Accumulates per-domain gradients of a final linear layer during ordinary backward passes.

    Usage per (micro-)batch: ``set_batch(domain_ids)`` → forward → backward. At a round's end
    read `gram` (raw inner products) and `counts`, then `reset`.

    Args:
        head: The final ``nn.Linear`` (``lm_head``, classifier head, projection).
        num_domains: Number of domains ``m``.
        mode: ``"exact"`` (``V·d`` floats per domain) or ``"sketch"``.
        sketch_out: Count-sketch buckets over the output dimension ``V``.
        sketch_in: Random projection size over the input dimension ``d``.
        rows_per_example: If set, unbiased uniform subsample of that many valid rows per example.
        seed: Seeds the sketch and the row sampler; must be equal on all DDP ranks so that
            accumulators can be summed across ranks.
        include_bias: Also capture the bias gradient (an extra input column of ones).
        buffer_mb: Row-buffer size (`rowbuffer.buffer_size_mb`); 0 = products every step.
        fused: Compute the head's weight gradient per domain and reuse it (`fused`):
            True, False or ``"auto"`` (`sizes.resolve_fused`); exact mode only.
        timer: Optional meter with a ``section()`` context manager (e.g.
            `rnb.accounting.OverheadMeter`); the hooks' work is timed inside it, since it runs
            within the model's forward/backward where a caller cannot time it.
    """

    def __init__(
        self,
        head: nn.Linear,
        num_domains: int,
        mode: str = "sketch",
        sketch_out: int = 512,
        sketch_in: int = 256,
        rows_per_example: int | None = None,
        seed: int = 0,
        include_bias: bool = False,
        buffer_mb: float | str = "auto",
        fused: bool | str = False,
        timer: Any | None = None,
    ) -> None:
        sizes.check_args(
            head, num_domains, mode, sketch_out, sketch_in, rows_per_example, include_bias
        )
        self.head, self.num_domains, self.mode = head, int(num_domains), mode
        self.sketch_out, self.sketch_in, self.seed = int(sketch_out), int(sketch_in), int(seed)
        self.rows_per_example, self.include_bias = rows_per_example, bool(include_bias)
        self.V, self.d = head.out_features, head.in_features
        self._vk, self._dk = sizes.accumulator_dims(
            self.V, self.d, mode, self.sketch_out, self.sketch_in, include_bias
        )
        device = head.weight.device
        gen = torch.Generator().manual_seed(stream_seed(self.seed))
        self._signs: torch.Tensor | None = None
        self._proj: torch.Tensor | None = None
        if mode == "sketch" and self._vk < self.V:
            self._signs = (torch.randint(0, 2, (self.V,), generator=gen) * 2 - 1).float().to(device)
        if mode == "sketch" and self.d + int(include_bias) > self._dk:
            self._proj = orthogonal_projection(self._dk, self.d + int(include_bias), gen).to(device)
        self._gen = gen  # continues after the sketch draws: the row sampler's stream
        self._acc = torch.zeros(self.num_domains, self._vk * self._dk, device=device)
        self._acc_views = list(self._acc.view(-1, self._vk, self._dk).unbind(0))
        self._counts = torch.zeros(self.num_domains, dtype=torch.float64)
        self._skipped = 0
        self.buffer_mb = buffer_size_mb(buffer_mb, self.num_domains, self._vk, self._dk)
        rows = buffer_rows(self.buffer_mb, self._vk, self._dk)
        self._buffer = RowBuffer(rows, self._vk, self._dk, device) if rows > 0 else None
        self._inv_scale = 1.0
        self._pending: tuple[np.ndarray, np.ndarray | None, RowPlan | None] | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._paused = False
        self._timer = timer
        self.fused = sizes.resolve_fused(fused, mode, rows_per_example)
        self._scratch: torch.Tensor | None = None  # fused: [m, V, d(+1)] per-domain products

    # ------------------------------------------------------------------ wiring
    def attach(self) -> None:
        """Register the forward hook on the head, or route it through `FusedLinear`
        (idempotent)."""
        if self.fused:
            # An instance attribute shadows nn.Linear.forward; hooks and wrappers still apply.
            self.head.forward = partial(fused_forward, self)
        elif self._handle is None:
            self._handle = self.head.register_forward_hook(partial(forward_hook, self))

    def detach(self) -> None:
        """Remove the hook; graphs already built keep their tensor hooks until backward."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if "forward" in vars(self.head):
            del self.head.forward
        self._pending = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Context in which training-mode forwards are not captured (e.g. gradient probes)."""
        old, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = old

    def set_batch(
        self,
        domain_ids: torch.Tensor | np.ndarray,
        row_mask: torch.Tensor | np.ndarray | None = None,
    ) -> int | None:
        """Declare the example-level domains of the next forward.

        Args:
            domain_ids: ``[B]`` integer domain per example; every row (token) of an example
                inherits it.
            row_mask: Optional ``[B, T]`` (or ``[B]``) bool, False for rows whose ``δ`` is zero
                (ignored/padded labels); such rows are skipped for speed. Marking a row whose
                ``δ`` is non-zero as False biases the estimate.

        Returns:
            The number of rows that will be captured, or None without ``row_mask`` (the rows
            per example are known only at the forward).
        """
        dom, mask = parse_batch(domain_ids, row_mask, self.num_domains)
        # Plan now rather than in the forward hook: the hooks run right after large matrix
        # products, with cold caches, where the same host work measured ~3x slower.
        plan = None if mask is None else self._plan(dom, mask, mask.shape[1])
        self._pending = (dom, mask, plan)
        return None if plan is None else plan.rows

    def set_grad_scale(self, scale: float) -> None:
        """Divide captured ``δ`` by ``scale`` (the fp16 GradScaler's current scale); default 1."""
        scale = float(scale)
        if not (scale > 0.0 and math.isfinite(scale)):
            raise ValueError(f"grad scale: need a finite scale > 0, got {scale}")
        self._inv_scale = 1.0 / scale

    # ------------------------------------------------------------------ results
    accumulators: Settled[torch.Tensor] = Settled(
        "_acc", "flush", "fp32 ``[m, vk·dk]`` per-domain gradient sums (buffered rows included)."
    )
    counts: Settled[torch.Tensor] = Settled(
        "_counts", "flush", "float64 ``[m]`` examples accumulated (finite steps only)."
    )
    skipped_nonfinite: Settled[int] = Settled(
        "_skipped", "flush", "(Micro-)batches skipped this round for non-finite ``δ`` or ``a``."
    )

    def flush(self) -> None:
        """Run the deferred per-domain products of buffered rows (see `rnb.balance.capture.rowbuffer`).

        Called automatically whenever a result is read; timed as mixing work.
        """
        if self._buffer is None or not self._buffer.pending:
            return
        with self._timed(), no_autocast(self._acc.device.type):
            counts, dropped = self._buffer.flush(self._acc_views)
        if counts is not None:
            self._counts += counts
        self._skipped += dropped

    def gram(self, reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Raw float64 ``[m, m]`` inner products ``<g_i, g_j>`` of the accumulated gradients.

        Args:
            reduce_fn: Optional cross-rank SUM (DDP). Applied to a copy of the accumulators
                before the products: ``<Σ_ranks g_i, Σ_ranks g_j>`` is not the sum of per-rank
                Grams. Valid because every rank uses the same seed, hence the same sketch.
        """
        acc = self.accumulators if reduce_fn is None else reduce_fn(self.accumulators.clone())
        return raw_gram(acc)

    def reset(self) -> None:
        """Start a new round: zero accumulators, counts and the non-finite counter."""
        if self._buffer is not None:
            self._buffer.clear()
        self._acc.zero_()
        self._counts.zero_()
        self._skipped = 0

    def memory_bytes(self) -> int:
        """Bytes held persistently (accumulators, counts, sketch matrices, row buffer, fused
        scratch)."""
        extra = [t for t in (self._signs, self._proj, self._scratch) if t is not None]
        tensors = [self._acc, self._counts, *extra]
        buffered = 0 if self._buffer is None else self._buffer.nbytes()
        return sum(t.numel() * t.element_size() for t in tensors) + buffered

    estimate_memory_bytes = staticmethod(sizes.estimate_memory_bytes)

    def state_dict(self) -> dict:
        """Tensors and ints only, loadable with ``torch.load(weights_only=True)``."""
        return state.capture_state(self)

    def load_state_dict(self, saved: dict) -> None:
        """Restore `state_dict` output; the configuration (sizes, mode, seed) must match.

        Raises:
            ValueError: the checkpoint's configuration differs (named in the message).
        """
        state.load_capture_state(self, saved)

    # ------------------------------------------------------------------ hooks
    def _timed(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self._timer is None else self._timer.section()

    def _capturing(self) -> bool:
        return not self._paused and self.head.training and torch.is_grad_enabled()

    def _take_plan(self, a: torch.Tensor) -> RowPlan | None:
        """The pending batch's row plan for head input ``a`` (None: nothing to capture)."""
        if self._pending is None:
            raise RuntimeError(
                "HeadGradientCapture: call set_batch(domain_ids) before each forward"
            )
        dom, mask, plan = self._pending
        self._pending = None  # one forward per set_batch: a stale batch must not be reused
        if a.dim() < 2 or a.shape[0] != dom.size:
            raise ValueError(
                f"domain_ids: {dom.size} ids for a head input of shape {tuple(a.shape)}"
            )
        if a.shape[0] == 0:
            return None
        rows = a.numel() // (a.shape[0] * self.d)  # tokens per example (1 for [B, d] inputs)
        if mask is not None and mask.shape[1] != rows:
            raise ValueError(f"row_mask: need [B, {rows}], got {tuple(mask.shape)}")
        with self._timed():
            self._move_to(a.device)
            return self._plan(dom, None, rows) if plan is None else plan

    # ------------------------------------------------------------------ internals
    def _plan(self, dom: np.ndarray, mask: np.ndarray | None, rows: int) -> RowPlan:
        plan = plan_rows(
            dom, mask, rows, self.num_domains, self.rows_per_example, self._gen, self.fused
        )
        if plan.idx is not None:  # one host→device copy, shared by forward and backward
            plan.idx = plan.idx.to(self.head.weight.device, non_blocking=True)
        return plan

    def _move_to(self, device: torch.device) -> None:
        # Lightning moves the model after callbacks' setup: follow the head's activations.
        if self._acc.device != device:
            self.flush()
            self._acc = self._acc.to(device)
            self._acc_views = list(self._acc.view(-1, self._vk, self._dk).unbind(0))
            if self._buffer is not None:
                self._buffer.to(device)
            self._signs = None if self._signs is None else self._signs.to(device)
            self._proj = None if self._proj is None else self._proj.to(device)
