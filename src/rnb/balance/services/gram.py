"""R&B's own signal: the Gram matrix of per-domain final-layer gradients, from hooks.

Unlike the other services this one does no extra pass: :class:`HeadGradientCapture`
hooks the head during the ordinary backward and accumulates per-domain gradient sums
(method.md §Stage 2). This module wires it into the callback's lifecycle: pick ``exact``
or ``sketch`` (``balance.capture.mode: auto``), hand each batch's domain ids and row mask
to the capture, meter its FLOPs, return ``gram`` + ``gram_counts`` per round, save
``gram/round_XXXX.npy`` and keep the accumulators across a mid-round resume (summed over
ranks in the checkpoint, restored on rank 0 only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn
from rnb.balance.services.probe_eval import batch_positions
from rnb.models.base import HOST_DOMAIN, HOST_ROW_MASK

__all__ = ["GramSignal", "capture_flops_per_row"]


class GramSignal:
    """Final-layer gradient capture for strategies whose ``needs`` include ``"gram"``.

    Args:
        capture: kwargs of :class:`rnb.balance.capture.HeadGradientCapture`
            (``balance.capture``).
        exact_limit_bytes: ``mode: auto`` picks ``exact`` while the ``m·V·d`` fp32
            accumulators fit in this many bytes, else ``sketch``.
        save_gram: write each round's normalised ``G`` under ``<run dir>/gram/``.
    """

    def __init__(
        self, capture: dict[str, Any], exact_limit_bytes: int, save_gram: bool = True
    ) -> None:
        self.cfg = dict(capture)
        self.exact_limit_bytes = int(exact_limit_bytes)
        self.save_gram = save_gram
        self.capture: Any = None
        self.paths: list[str] = []
        self._flops_per_row = 0.0

    def setup(self, pl_module: L.LightningModule, num_domains: int, meter: OverheadMeter) -> None:
        """Build the capture on ``pl_module.head`` and attach its hooks."""
        from rnb.balance.capture import HeadGradientCapture

        cfg = dict(self.cfg)
        head = pl_module.head
        if cfg.get("mode", "auto") == "auto":
            exact_bytes = 4 * num_domains * head.in_features * head.out_features
            cfg["mode"] = "exact" if exact_bytes <= self.exact_limit_bytes else "sketch"
        self.meter = meter
        self.capture = HeadGradientCapture(head, num_domains, timer=meter, **cfg)
        self.capture.attach()
        self._flops_per_row = capture_flops_per_row(self.capture)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any
    ) -> None:
        """Tell the capture which domain (and which rows) each head input belongs to."""
        # Host copies made before the device transfer (`MixtureModule.on_before_batch_transfer`)
        # when present: planning from device tensors would sync the GPU every step.
        mask = batch.get(HOST_ROW_MASK)
        mask_fn = getattr(pl_module, "head_row_mask", None)
        if mask is None and mask_fn is not None:
            mask = mask_fn(batch)
        rows = self.capture.set_batch(batch.get(HOST_DOMAIN, batch["domain"]), row_mask=mask)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # fp16 GradScaler multiplies δ by its scale
            self.capture.set_grad_scale(float(scaler.get_scale()))
        if rows is None:  # no row mask: every input position (one per example if flat)
            rows = batch_positions(batch)
        self.meter.add_flops(rows * self._flops_per_row)

    def collect(self, pl_module: L.LightningModule, reduce_fn: ReduceFn) -> dict[str, Any]:
        """``{"gram": raw <g_i, g_j> [m, m], "gram_counts": n_i [m]}`` summed over ranks."""
        gram = self.capture.gram(reduce_fn)
        # Examples whose gradients were accumulated (non-finite batches excluded): the
        # consistent n_i for normalising G.
        gc = self.capture.counts.to(pl_module.device)
        counts = (reduce_fn(gc.clone()) if reduce_fn else gc).cpu()
        m, dim = self.capture.accumulators.shape
        self.meter.add_flops(2.0 * m * m * dim)
        return {"gram": gram, "gram_counts": counts}

    def save(
        self, folder: Path, round_index: int, gram: torch.Tensor, counts: torch.Tensor
    ) -> None:
        """Write ``G_ij = <g_i, g_j> / (n_i n_j)`` (0 where a domain is unsampled)."""
        if not self.save_gram:
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"round_{round_index:04d}.npy"
        n = counts.double().clamp_min(1)
        normed = torch.where(
            counts[:, None] * counts[None, :] > 0, gram.double() / (n[:, None] * n[None, :]), 0.0
        )
        np.save(path, normed.cpu().numpy())
        self.paths.append(str(path))

    def reset(self) -> None:
        """Zero the accumulators for a new round."""
        self.capture.reset()

    def teardown(self) -> None:
        """Remove the hooks."""
        if self.capture is not None:
            self.capture.detach()

    def state_dict(self, reduce_fn: ReduceFn) -> dict[str, Any]:
        """The capture's state with accumulators summed over ranks (rank 0 restores them)."""
        cap = self.capture.state_dict()
        if reduce_fn is not None:
            cap["accumulators"] = reduce_fn(self.capture.accumulators.clone()).cpu()
            device = self.capture.accumulators.device
            cap["counts"] = reduce_fn(self.capture.counts.to(device)).cpu().double()
        return cap

    def load_state_dict(self, state: dict[str, Any], rank0: bool) -> None:
        """Restore; ranks other than 0 start from zero so the next reduction is unchanged."""
        self.capture.load_state_dict(state)
        if not rank0:
            self.capture.accumulators.zero_()
            self.capture.counts.zero_()

    @property
    def skipped_nonfinite(self) -> int:
        """Batches' examples skipped by the capture for a non-finite gradient."""
        return int(self.capture.skipped_nonfinite)

    def memory_bytes(self) -> int:
        """Bytes held by the accumulators."""
        return int(self.capture.memory_bytes())


def capture_flops_per_row(capture: Any) -> float:
    """Analytic FLOPs of the capture per captured row (token).

    One ``vk × dk`` outer-product accumulation (``2·vk·dk``), plus the count sketch of
    ``δ`` (``V`` multiply-adds) and the projection of ``a`` (``2·d·dk``) when sketching.
    Fused capture (``balance.capture.fused``): 0, its products are the head's weight gradient
    that training computes anyway (what it adds is memory traffic, seen in the wall time).
    """
    if getattr(capture, "fused", False):
        return 0.0
    dim = capture.accumulators.shape[1]
    flops = 2.0 * dim
    if getattr(capture, "_signs", None) is not None:
        flops += 2.0 * capture.V
    if getattr(capture, "_proj", None) is not None:
        flops += 2.0 * capture.d * capture._proj.shape[0]
    return flops
