"""``ProbeEvaluator``: per-domain eval losses of the current model on a fixed probe subset.

Skill-It and Aioli read the model's per-domain losses on held-out data every round
(baselines.md). Evaluating the whole eval split each round is expensive, and weighting
it by the current mixture makes rounds incomparable, so the probe is a fixed, seeded,
domain-stratified subset of the eval split
(:func:`~rnb.balance.services.probe_set.stratified_probe`): the same examples every
round, every domain present, each domain's loss a plain mean over its own examples.
The evaluation itself is :func:`~rnb.balance.services.probe_eval.probe_losses`, shared
with the detours' before/after evaluations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn, SignalService
from rnb.balance.services.probe_eval import run_probe
from rnb.balance.services.probe_set import stratified_probe

__all__ = ["ProbeEvaluator"]


class ProbeEvaluator(SignalService):
    """Per-domain mean eval loss on the fixed probe subset, once per round.

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
        #: The probe indices into the eval split (the same on every rank).
        self.indices = stratified_probe(datamodule.labels.eval, self.eval_size, self.m, self.seed)

    def collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> dict[str, Any]:
        """``{"eval_loss": float64 [m] (nan: no probe example), "eval_counts": float64 [m]}``."""
        loss, counts = run_probe(
            trainer,
            pl_module,
            self.split,
            self.indices,
            batch_size=self.batch_size,
            num_domains=self.m,
            reduce_fn=reduce_fn,
            meter=self.meter,
        )
        return {"eval_loss": loss, "eval_counts": counts}
