"""``ProbeEvaluator``: per-domain eval losses of the current model on a fixed probe subset.

Skill-It and Aioli read the model's per-domain losses on held-out data every round
(baselines.md). Evaluating the whole eval split each round is expensive, and weighting
it by the current mixture makes rounds incomparable (a known complaint about DoReMi
tooling), so the probe is a fixed, seeded, domain-stratified subset of the eval split
(:func:`~rnb.balance.services.probe_set.stratified_probe`): the same examples every
round, every domain present, each domain's loss a plain mean over its own examples.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn, SignalService, evaluating
from rnb.balance.services.probe_set import stratified_probe

__all__ = ["ProbeEvaluator", "batch_rows"]


def batch_rows(split: Any, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch of ``rows`` of a :class:`~rnb.data.tokenize.TokenizedSplit`, on ``device``.

    Args:
        split: a split with ``input_ids``, ``attention_mask``, ``labels`` (``[n, L]``) and
            ``domain`` (``[n]``) arrays.
        rows: ``[b]`` int indices.
        device: where the model is.

    Returns:
        ``{"input_ids", "attention_mask", "labels": [b, L], "domain": [b]}`` int64 tensors.
    """
    return {
        key: torch.as_tensor(np.asarray(getattr(split, key))[rows]).to(device)
        for key in ("input_ids", "attention_mask", "labels", "domain")
    }


class ProbeEvaluator(SignalService):
    """Per-domain mean eval loss on the fixed probe subset, once per round.

    The loss of a domain is the mean over its probe examples of each example's token-mean
    loss (the same definition as ``val/loss/<domain>``), measured in eval mode under
    ``no_grad`` (train mode restored after) and never weighted by the current mixture.
    Under DDP each rank evaluates a strided share of the probe and the per-domain sums and
    counts are summed over ranks, so every rank gets the full-probe result.

    Args:
        eval_size: probe size (``balance.probe.eval_size``; ``<= 0`` = the whole eval split).
        seed: seed of the probe draw (``balance.probe.seed``).
    """

    provides: ClassVar[frozenset[str]] = frozenset({"eval_loss"})

    def __init__(self, eval_size: int = 256, seed: int = 0) -> None:
        self.eval_size = int(eval_size)
        self.seed = int(seed)

    @classmethod
    def from_config(cls, probe: dict[str, Any], strategy: Any) -> ProbeEvaluator:
        return cls(eval_size=probe.get("eval_size", 256), seed=probe.get("seed", 0))

    def setup(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: Any,
        meter: OverheadMeter,
    ) -> None:
        self.meter = meter
        self.split = datamodule.eval_data
        self.m = len(datamodule.domain_names)
        self.batch_size = int(datamodule.eval_batch_size)
        probe = stratified_probe(datamodule.labels.eval, self.eval_size, self.m, self.seed)
        #: The probe indices into the eval split (the same on every rank).
        self.indices = probe
        # This rank's strided share: every probe example is evaluated exactly once.
        self.mine = probe[trainer.global_rank :: max(1, trainer.world_size)]

    def evaluate(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's per-domain sums of example losses and example counts (float64 ``[m]``)."""
        device = pl_module.device
        sums = torch.zeros(self.m, dtype=torch.float64, device=device)
        counts = torch.zeros(self.m, dtype=torch.float64, device=device)
        forward_context = trainer.precision_plugin.forward_context
        n_params = pl_module.num_parameters()
        with evaluating(pl_module):
            for start in range(0, len(self.mine), self.batch_size):
                batch = batch_rows(self.split, self.mine[start : start + self.batch_size], device)
                with forward_context():
                    loss_sum, tokens = pl_module.example_losses(batch)
                per_example = loss_sum.double() / tokens.clamp_min(1).double()
                sums.index_add_(0, batch["domain"], per_example)
                counts.index_add_(0, batch["domain"], torch.ones_like(per_example))
                self.meter.add_flops(2.0 * n_params * batch["input_ids"].numel())
        return sums, counts

    def collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> dict[str, Any]:
        """``{"eval_loss": float64 [m] (nan: no probe example), "eval_counts": float64 [m]}``."""
        sums, counts = self.evaluate(trainer, pl_module)
        if reduce_fn is not None:
            sums, counts = reduce_fn(sums), reduce_fn(counts)
        sums, counts = sums.double().cpu(), counts.double().cpu()
        loss = torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)
        return {"eval_loss": loss, "eval_counts": counts}
