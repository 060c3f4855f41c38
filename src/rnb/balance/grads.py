"""Per-domain gradients of a final ``nn.Linear`` captured from hooks (method.md §Per-example
gradients, §Making capture cheap).

For ``s = a Wᵀ + b`` the gradient of the loss restricted to rows ``R`` is ``Σ_{r∈R} δ_rᵀ a_r``
with ``δ = ∂loss/∂s``. A forward hook keeps ``a`` (autograd keeps it anyway) and puts a
pre-hook on the autograd node of ``s``; that hook receives ``δ`` during the normal backward
pass and each domain's ``δ_Rᵀ a_R`` ends up in a preallocated fp32 accumulator. No extra
forward/backward, no per-example tensors, and ``.grad`` is never read (a tied embedding adds
its own gradient there).

Scale: ``δ`` is the gradient of whatever is backpropagated. Lightning divides the loss by
``accumulate_grad_batches`` and HF causal-LM losses average over the batch's valid tokens, so
the captured sums carry those constant factors; a fp16 ``GradScaler`` multiplies the loss,
which `HeadGradientCapture.set_grad_scale` undoes. Constant factors common to all domains
cancel in the normalized R&B update.

Sketch mode (memory independent of ``V``): the gradient ``G_i`` (``V×d``) is replaced by
``S_V G_i S_dᵀ`` with ``S_d`` a random ``d → sketch_in`` projection (orthonormal rows scaled by
``sqrt(d/k)``: a Gaussian sketch with less variance) and
``S_V`` a count sketch ``V → sketch_out`` with bucket ``v mod sketch_out`` and an independent
random sign per vocabulary entry. Both satisfy ``E[SᵀS] = I`` and are independent, so sketched
inner products ``<Ĝ_i, Ĝ_j>`` are unbiased for ``<G_i, G_j>``. The random signs alone give
unbiasedness for any fixed bucket map; strided buckets (rather than contiguous blocks) spread
the frequent low-id BPE tokens over different buckets, and need neither a permutation gather
nor a scatter (``index_add`` was slower than the exact product): each of the ``⌈V/k⌉``
contiguous column blocks of ``δ`` is multiplied by its signs and added into an ``[n, k]``
buffer. A side whose size is already ≤ its sketch size is kept exact.

Token subsampling (``rows_per_example``): per example, ``s`` of its ``n`` valid rows are drawn
uniformly without replacement and weighted by ``n / s``, which keeps every ``g_i`` unbiased.
The price is variance: an example's contribution gets variance ``n² (1 − s/n) / s`` times the
spread of its per-row terms ``δ_rᵀ a_r`` (zero at ``s = n``, growing like ``n²/s``), which
the sum over a round's many examples averages down (method.md: ~10% Gram error, TV of ``p``
0.02, at 16 of 128 tokens per sequence).

Rows: ``[B, d]`` inputs have one row per example, ``[B, T, d]`` (or ``[B, ..., d]``) inputs
one row per token, each inheriting its example's domain. An optional row mask excludes
ignored/padded rows. Rows are planned on the host in `set_batch` (`rnb.balance.rows`). When at
most half the rows are selected, the backward hook only copies them into a row buffer and
the per-domain products run once per flush (`rnb.balance.rowbuffer`); otherwise ``δ`` is used
in place, one product per run of same-domain examples, since copying a large ``δ`` costs more
than the products. Host syncs: one per flush (or per backward when unbuffered: the
finiteness check), plus one per `set_batch` if the ids or the mask live on the GPU.
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

from rnb.balance.rnb_math import raw_gram
from rnb.balance.rowbuffer import RowBuffer, buffer_rows, buffer_size_mb
from rnb.balance.rows import RowPlan, plan_rows
from rnb.balance.settled import Settled
from rnb.balance.sketch import count_sketch, orthogonal_projection, stream_seed

__all__ = ["HeadGradientCapture"]

_MODES = ("exact", "sketch")


def _dims(V: int, d: int, mode: str, k_out: int, k_in: int, bias: bool) -> tuple[int, int]:
    """Accumulator side lengths (rows over V, columns over d [+1 for the bias])."""
    d_aug = d + int(bias)
    if mode == "exact":
        return V, d_aug
    return min(V, k_out), min(d_aug, k_in)


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
        timer: Any | None = None,
    ) -> None:
        if not isinstance(head, nn.Linear):
            raise ValueError(f"model.head_module: need an nn.Linear, got {type(head).__name__}")
        if mode not in _MODES:
            raise ValueError(f"balance.capture.mode: must be one of {_MODES}, got {mode!r}")
        if num_domains < 1:
            raise ValueError(f"num_domains: need >= 1, got {num_domains}")
        if sketch_out < 1 or sketch_in < 1:
            raise ValueError(
                f"balance.capture.sketch_out/sketch_in: need >= 1, got {sketch_out}, {sketch_in}"
            )
        if rows_per_example is not None and rows_per_example < 1:
            raise ValueError(
                f"balance.capture.rows_per_example: need >= 1 or null, got {rows_per_example}"
            )
        if include_bias and head.bias is None:
            raise ValueError("balance.capture.include_bias: the head has no bias")
        self.head, self.num_domains, self.mode = head, int(num_domains), mode
        self.sketch_out, self.sketch_in, self.seed = int(sketch_out), int(sketch_in), int(seed)
        self.rows_per_example, self.include_bias = rows_per_example, bool(include_bias)
        self.V, self.d = head.out_features, head.in_features
        self._vk, self._dk = _dims(
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

    # ------------------------------------------------------------------ wiring
    def attach(self) -> None:
        """Register the forward hook on the head (idempotent)."""
        if self._handle is None:
            self._handle = self.head.register_forward_hook(self._forward_hook)

    def detach(self) -> None:
        """Remove the hook; graphs already built keep their tensor hooks until backward."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
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
        # NumPy on the host: planning works on these small arrays (see rnb.balance.rows).
        dom = _host(domain_ids).astype(np.int64, copy=False).reshape(-1)
        if dom.size and (int(dom.min()) < 0 or int(dom.max()) >= self.num_domains):
            raise ValueError(
                f"domain_ids: must lie in [0, {self.num_domains}) (num_domains), got "
                f"min {int(dom.min())}, max {int(dom.max())}"
            )
        mask = None
        if row_mask is not None:
            mask = _host(row_mask).astype(bool, copy=False)
            if mask.shape[0] != dom.size:
                raise ValueError(f"row_mask: need [{dom.size}, T], got {tuple(mask.shape)}")
            mask = mask.reshape(dom.size, -1)
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
        """Run the deferred per-domain products of buffered rows (see `rnb.balance.rowbuffer`).

        Called automatically whenever a result is read; timed as mixing work.
        """
        if self._buffer is None or not self._buffer.pending:
            return
        with self._timed(), _no_autocast(self._acc.device.type):
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
        """Bytes held persistently (accumulators, counts, sketch matrices, row buffer)."""
        extra = [t for t in (self._signs, self._proj) if t is not None]
        tensors = [self._acc, self._counts, *extra]
        buffered = 0 if self._buffer is None else self._buffer.nbytes()
        return sum(t.numel() * t.element_size() for t in tensors) + buffered

    @staticmethod
    def estimate_memory_bytes(
        num_domains: int,
        V: int,
        d: int,
        mode: str,
        sketch_out: int = 512,
        sketch_in: int = 256,
        include_bias: bool = False,
        buffer_mb: float | str = "auto",
    ) -> int:
        """`memory_bytes` of a capture with these sizes, without allocating it."""
        if mode not in _MODES:
            raise ValueError(f"balance.capture.mode: must be one of {_MODES}, got {mode!r}")
        vk, dk = _dims(V, d, mode, sketch_out, sketch_in, include_bias)
        d_aug = d + int(include_bias)
        sketch = (V if vk < V else 0) + (dk * d_aug if d_aug > dk else 0)
        mb = buffer_size_mb(buffer_mb, num_domains, vk, dk)
        buffered = 8 * (vk + dk) * buffer_rows(mb, vk, dk)
        held = num_domains * vk * dk + (sketch if mode == "sketch" else 0)
        return 4 * held + 8 * num_domains + buffered

    def state_dict(self) -> dict:
        """Tensors and ints only, loadable with ``torch.load(weights_only=True)``."""
        return {
            "accumulators": self.accumulators.detach().cpu().clone(),
            "counts": self.counts.clone(),
            "skipped_nonfinite": int(self.skipped_nonfinite),
            "config": self._config(),
            "rng_state": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict` output; the configuration (sizes, mode, seed) must match."""
        if not torch.equal(torch.as_tensor(state["config"]), self._config()):
            raise ValueError(
                "balance: gradient-capture checkpoint was written with a different "
                f"configuration {state['config'].tolist()} vs {self._config().tolist()} "
                "[m, V, d, mode, sketch_out, sketch_in, rows_per_example, seed, include_bias]"
            )
        if self._buffer is not None:
            self._buffer.clear()
        self._acc.copy_(state["accumulators"])
        self._counts.copy_(state["counts"])
        self._skipped = int(state["skipped_nonfinite"])
        self._gen.set_state(state["rng_state"])

    def _config(self) -> torch.Tensor:
        rpe = self.rows_per_example or 0
        return torch.tensor(
            [self.num_domains, self.V, self.d, _MODES.index(self.mode), self.sketch_out,
             self.sketch_in, rpe, self.seed, int(self.include_bias)], dtype=torch.long,
        )  # fmt: skip

    # ------------------------------------------------------------------ hooks
    def _timed(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self._timer is None else self._timer.section()

    def _forward_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self._paused or not (module.training and torch.is_grad_enabled()):
            return
        if not (isinstance(output, torch.Tensor) and output.requires_grad):
            return
        if self._pending is None:
            raise RuntimeError(
                "HeadGradientCapture: call set_batch(domain_ids) before each forward"
            )
        dom, mask, plan = self._pending
        self._pending = None  # one forward per set_batch: a stale batch must not be reused
        a = inputs[0]
        if a.dim() < 2 or a.shape[0] != dom.size:
            raise ValueError(
                f"domain_ids: {dom.size} ids for a head input of shape {tuple(a.shape)}"
            )
        if a.shape[0] == 0:
            return
        rows = a.numel() // (a.shape[0] * self.d)  # tokens per example (1 for [B, d] inputs)
        if mask is not None and mask.shape[1] != rows:
            raise ValueError(f"row_mask: need [B, {rows}], got {tuple(mask.shape)}")
        with self._timed():
            self._move_to(a.device)
            if plan is None:
                plan = self._plan(dom, None, rows)
            # The input rows are read in the backward hook: autograd keeps ``a`` alive until
            # then anyway, and one copy straight into the row buffer beats two. A pre-hook on
            # the output's node is what ``Tensor.register_hook`` installs, minus its overhead.
            hook = partial(self._grad_hook, nr=output.output_nr, plan=plan, a=a.detach())
            output.grad_fn.register_prehook(hook)

    def _grad_hook(self, grads: tuple, nr: int, plan: RowPlan, a: torch.Tensor) -> None:
        # Few, large tensor ops on purpose: this runs once per backward with cold caches, where
        # every extra dispatch measured tens of microseconds on the default model.
        # No no_grad() needed: hooks of a plain backward see tensors without history.
        grad = grads[nr]
        if grad is None:
            return
        with self._timed(), _no_autocast(grad.device.type):
            delta = grad.reshape(-1, self.V)
            a = a.reshape(-1, self.d)
            buffer = self._buffer
            if plan.row_domains is not None and buffer is not None and plan.rows <= buffer.capacity:
                self._buffered(delta, a, plan, buffer)
                return
            a_sel = self._prepare_inputs(a, plan)
            if plan.idx is not None:
                delta = delta.index_select(0, plan.idx)
            if self._signs is not None:
                delta = count_sketch(delta, self._signs, self._vk)
            # One reduction (not isfinite(...).all(), which writes a bool copy): any inf/NaN in
            # δ or a makes the sum non-finite. Skip the whole batch (Decision, method.md).
            if not bool((delta.sum() + a_sel.sum()).isfinite()):
                self._skipped += 1
                return
            delta_t = delta.float().T  # bf16 δ is promoted here, once
            accs = self._acc_views
            for dom, start, end in plan.segments:
                accs[dom].addmm_(delta_t[:, start:end], a_sel[start:end], alpha=self._inv_scale)
            self._counts += plan.example_counts

    def _buffered(
        self, delta: torch.Tensor, a: torch.Tensor, plan: RowPlan, buffer: RowBuffer
    ) -> None:
        """Copy this backward's selected rows into the buffer (products deferred to a flush)."""
        n = plan.rows
        if not buffer.fits(n):
            self.flush()
        d_out, a_out = buffer.slot(n)
        if self._signs is None and delta.dtype == d_out.dtype:
            torch.index_select(delta, 0, plan.idx, out=d_out)  # gather straight into place
        else:
            rows = delta.index_select(0, plan.idx)
            d_out.copy_(rows if self._signs is None else count_sketch(rows, self._signs, self._vk))
        plain = not (self.include_bias or self._proj is not None or plan.row_weight is not None)
        if plain and a.dtype == a_out.dtype:
            torch.index_select(a, 0, plan.idx, out=a_out)
        else:
            a_out.copy_(self._prepare_inputs(a, plan))
        if self._inv_scale != 1.0:
            a_out.mul_(self._inv_scale)
        buffer.commit(n, plan.row_domains, plan.example_counts)

    # ------------------------------------------------------------------ internals
    def _plan(self, dom: np.ndarray, mask: np.ndarray | None, rows: int) -> RowPlan:
        plan = plan_rows(dom, mask, rows, self.num_domains, self.rows_per_example, self._gen)
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

    def _prepare_inputs(self, a: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        """Selected rows of ``a`` in fp32, bias column, subsampling weight, d-projected."""
        x = a if plan.idx is None else a.index_select(0, plan.idx)
        x = x.float()
        if self.include_bias:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
        if plan.row_weight is not None:
            # Weighting a (n×d) rather than δ (n×V) is the cheap side of the product.
            x = x * plan.row_weight.to(x.device, non_blocking=True)[:, None]
        if self._proj is not None:
            x = x @ self._proj.T
        return x


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """fp32 products under autocast; entering the context only when autocast is on saves tens
    of microseconds per hook on small models. No no_grad() is needed: the hooks only touch
    detached inputs and backward-time gradients, neither of which records a graph."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _host(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A host NumPy view of ``x`` (copies only device tensors)."""
    if isinstance(x, np.ndarray):
        return x
    return torch.as_tensor(x).detach().cpu().numpy()
