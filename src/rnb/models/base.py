"""What every rnb LightningModule shares: the optimizer, the parameter count, the eval record.

:class:`~rnb.models.lm.CausalLMModule` and :class:`~rnb.models.classifier.ClassifierModule`
differ in their forward pass and metrics, not in how they are optimised or in what
``train`` reads back after validation; those parts live here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.models.optim import adamw_warmup_cosine

__all__ = ["HOST_DOMAIN", "HOST_ROW_MASK", "MixtureModule"]

#: Batch keys of host (NumPy) copies made before the batch moves to the device: the capture
#: plans its rows on the host, and reading a CUDA tensor back would sync every step.
HOST_DOMAIN, HOST_ROW_MASK = "host_domain", "host_row_mask"


class MixtureModule(L.LightningModule):
    """Base of the rnb models (the model side of the mixing contract).

    A subclass saves the hyper-parameters ``lr``, ``weight_decay``, ``betas``,
    ``warmup_steps`` and ``min_lr_ratio`` (``save_hyperparameters``) and calls
    :meth:`record_eval` at the end of each validation epoch.

    Attributes:
        last_eval: the latest validation's ``{"eval_<metric>": mean,
            "eval_<metric>_per_domain": {domain: value}, ..., "step": global step}``
            (``None`` before the first); ``train`` copies it into ``summary.json``.
    """

    last_eval: dict[str, Any] | None = None

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Add host copies of a training batch's domain ids (`HOST_DOMAIN`) and, where the
        model defines ``head_row_mask``, its head row mask (`HOST_ROW_MASK`), while the batch
        is still on the host (Lightning calls this before the device transfer, which leaves
        NumPy arrays where they are). Gradient capture reads these instead of copying device
        tensors back, so declaring a batch costs no host-device sync on a GPU."""
        trainer = self._trainer
        if trainer is None or not trainer.training or not isinstance(batch, dict):
            return batch
        if "domain" not in batch:
            return batch
        batch = dict(batch)
        batch[HOST_DOMAIN] = np.asarray(batch["domain"].detach().cpu())
        mask_fn = getattr(self, "head_row_mask", None)
        if mask_fn is not None:
            batch[HOST_ROW_MASK] = mask_fn(batch)
        return batch

    def num_parameters(self) -> int:
        """Trainable parameters (tied weights counted once: ``parameters()`` dedups them)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with warm-up and cosine decay over ``trainer.max_steps``
        (:func:`~rnb.models.optim.adamw_warmup_cosine`, keys ``model.lr`` etc.)."""
        hp = self.hparams
        max_steps = self.trainer.max_steps if self.trainer else None
        return adamw_warmup_cosine(
            self, max_steps, hp.lr, hp.weight_decay, hp.betas, hp.warmup_steps, hp.min_lr_ratio
        )

    def record_eval(
        self, metrics: Mapping[str, tuple[str, torch.Tensor, Mapping[str, torch.Tensor]]]
    ) -> None:
        """Log a validation epoch's metrics and keep them in :attr:`last_eval`.

        Args:
            metrics: ``{log name: (summary name, mean, {domain: value})}``, e.g.
                ``{"loss": ("loss", mean, per_domain)}`` logs ``val/loss`` and
                ``val/loss/<domain>`` and records ``eval_loss`` and
                ``eval_loss_per_domain``. Scalars are 0-d tensors.
        """
        logs: dict[str, torch.Tensor] = {}
        record: dict[str, Any] = {}
        for name, (summary_name, mean, per_domain) in metrics.items():
            logs[f"val/{name}"] = mean
            logs.update({f"val/{name}/{d}": v for d, v in per_domain.items()})
            record[f"eval_{summary_name}"] = float(mean)
            record[f"eval_{summary_name}_per_domain"] = {d: float(v) for d, v in per_domain.items()}
        self.log_dict(logs, prog_bar=False, sync_dist=False)
        self.last_eval = {**record, "step": int(self.global_step)}
