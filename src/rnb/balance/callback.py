"""The Balance callback: gathers per-domain signals and updates the mixture every K steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.adoption import MixtureAdoption
from rnb.balance.checkpointing import BalanceState
from rnb.balance.context import current_lr, mixture_context
from rnb.balance.detours import DetourRunner
from rnb.balance.ledger import DomainLedger, round_metrics
from rnb.balance.services.base import SignalService, build_services
from rnb.balance.services.gram import GramSignal
from rnb.balance.sharding import check_sharding_support
from rnb.balance.stats import DomainStats
from rnb.balance.strategies.base import MixingStrategy, RoundStats, uniform

__all__ = ["BalanceCallback"]


class BalanceCallback(BalanceState, MixtureAdoption, L.Callback):
    """Runs a :class:`MixingStrategy` online and pushes its weights to the sampler.

    Every ``steps_per_round`` optimizer steps the round's statistics are summed across
    ranks, the strategy returns the next mixture, and the DataModule's sampler uses it
    for every batch not drawn yet. At each boundary (and before the first step) the
    strategy may plan detours, run by :class:`~rnb.balance.detours.DetourRunner`. The
    whole mixture state (weights, round, trajectory, mid-round accumulators, detours in
    progress, strategy and sampler state) is checkpointed, so a resumed run continues
    exactly.

    Args:
        strategy: the mixing strategy.
        steps_per_round: ``K`` (``balance.steps_per_round``).
        warmup_rounds: rounds trained with uniform ``p`` before the strategy takes over.
        capture: kwargs of :class:`rnb.balance.capture.HeadGradientCapture` (used only by
            strategies that need ``"gram"``). ``mode: auto`` (default) picks ``exact`` while
            the ``m·V·d`` fp32 accumulators fit in ``exact_limit_bytes``, else ``sketch``.
        save_gram: write each round's Gram matrix as ``.npy`` under the run dir.
        exact_limit_bytes: memory budget of exact accumulators for ``mode: auto``.
    """

    def __init__(
        self,
        strategy: MixingStrategy,
        steps_per_round: int | None = None,
        warmup_rounds: int = 0,
        capture: dict[str, Any] | None = None,
        save_gram: bool = True,
        exact_limit_bytes: int = 64 * 2**20,
        probe: dict[str, Any] | None = None,
        starvation: dict[str, Any] | None = None,
    ) -> None:
        if steps_per_round is None:
            steps_per_round = int(strategy.default_steps_per_round)
        if steps_per_round < 1:
            raise ValueError(f"balance.steps_per_round must be >= 1, got {steps_per_round}")
        if warmup_rounds < 0:
            raise ValueError(f"balance.warmup_rounds must be >= 0, got {warmup_rounds}")
        self.strategy = strategy
        self.steps_per_round = int(steps_per_round)
        self.probe_cfg = dict(probe or {})
        self.starvation_cfg = dict(starvation or {})
        self.services: list[SignalService] = build_services(
            strategy.needs, self.probe_cfg, strategy
        )
        self.warmup_rounds = warmup_rounds
        self.exact_limit_bytes = int(exact_limit_bytes)
        self.gram_signal = (
            GramSignal(capture or {}, self.exact_limit_bytes, save_gram)
            if "gram" in strategy.needs
            else None
        )
        self.weights: np.ndarray | None = None
        self.round = 0
        self.trajectory: list[dict[str, Any]] = []
        self.gq_norms: list[float] = []
        self.batches_seen = 0
        self.rank_checks = 0
        self.rank_spread = 0.0
        self._last_step = 0
        self.meter = OverheadMeter()
        self.output_dir: Path | None = None
        self._setup_done = False

    # ------------------------------------------------------------------ setup
    @property
    def capture(self) -> Any:
        """The final-layer :class:`~rnb.balance.capture.HeadGradientCapture` (``None`` unless
        the strategy needs ``"gram"``)."""
        return self.gram_signal.capture if self.gram_signal is not None else None

    @property
    def gram_paths(self) -> list[str]:
        """Saved ``gram/round_XXXX.npy`` files, in round order."""
        return self.gram_signal.paths if self.gram_signal is not None else []

    @property
    def needs(self) -> frozenset[str]:
        """Signals the strategy asked for."""
        return self.strategy.needs

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._setup_done:
            return
        self._trainer_ref = trainer
        self._rank = trainer.global_rank
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "sampler"):
            raise ValueError("BalanceCallback needs an RnBDataModule (with a mixture sampler)")
        self.sampler = dm.sampler
        self.domain_names = list(dm.domain_names)
        self.output_dir = Path(getattr(dm, "output_dir", None) or trainer.default_root_dir)
        ctx = mixture_context(trainer, dm, self.output_dir)
        self.strategy.setup(ctx)
        self.weights = np.asarray(self.strategy.initial_weights(), dtype=np.float64)
        if self.warmup_rounds > 0:
            self.weights = uniform(len(self.domain_names))
        self.stats = DomainStats(len(self.domain_names), device=pl_module.device)
        self.ledger = DomainLedger(self.domain_names, ctx.domain_sizes, **self.starvation_cfg)
        self._tail: dict[str, torch.Tensor] | None = None
        hook = getattr(pl_module, "set_domain_loss_weights", None)
        if "loss_weights" in self.needs and not callable(hook):
            raise ValueError(
                f"strategy {type(self.strategy).__name__} re-weights the training loss, but "
                f"the model ({type(pl_module).__name__}, model._target_) has no "
                "set_domain_loss_weights: inherit rnb.models.weighting.DomainLossWeighting"
            )
        check_sharding_support(trainer, self.strategy, self.services)
        for service in self.services:
            service.setup(trainer, pl_module, dm, self.meter)
        self.detours = DetourRunner(self.probe_cfg, seed=int(dm.seed))
        self.detours.setup(trainer, dm, self.meter)
        if self.gram_signal is not None:
            self.gram_signal.setup(pl_module, len(self.domain_names), self.meter)
        self._apply(pl_module)
        self._setup_done = True

    def _apply(self, pl_module: L.LightningModule, sampler: bool = True) -> None:
        """Hand the mixture to the sampler (and to the loss, for re-weighting strategies)."""
        assert self.weights is not None
        sample_p, loss_w = self.strategy.apply(self.weights.copy())
        if sampler:
            self.sampler.set_weights(np.asarray(sample_p, dtype=np.float64))
        if "loss_weights" in self.needs:
            pl_module.set_domain_loss_weights(loss_w)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for service in [*self.services, *([self.gram_signal] if self.gram_signal else [])]:
            service.teardown()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fresh = not self.trajectory
        if fresh:
            self._record(trainer.global_step)
        self._last_step = trainer.global_step
        if "loss_weights" in self.needs:  # after a checkpoint restore: the restored mixture
            # (the sampler's restored schedule may hold queued in-line detours: keep it)
            self._apply(pl_module, sampler=not self.detours.active)
        if fresh:
            with self.meter.section():
                self._boundary(trainer, pl_module, None)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Draws of an unfinished last round, for summary.json (a collective: every rank).
        self._tail = self.stats.reduced_all(self._reduce_fn(trainer))

    # ------------------------------------------------------------------ per batch
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.meter.step_started()
        if self.detours.active:
            with self.meter.section():
                self.detours.before_batch(
                    self.batches_seen, trainer, pl_module, self._reduce_fn(trainer)
                )
        if self.gram_signal is not None:
            with self.meter.section():
                self.gram_signal.on_train_batch_start(trainer, pl_module, batch)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.batches_seen += 1
        if isinstance(outputs, dict) and "example_loss" in outputs:
            tokens = outputs.get("example_tokens")
            if self.strategy.static:  # draws bookkeeping only: not mixing work
                self.stats.update(outputs["domain"], outputs["example_loss"], tokens)
            else:
                with self.meter.section():
                    self.stats.update(outputs["domain"], outputs["example_loss"], tokens)
                    for service in self.services:
                        service.on_train_batch_end(trainer, pl_module, batch, outputs)
        if self.detours.active:
            with self.meter.section():
                reduce_fn = self._reduce_fn(trainer)
                if self.detours.after_batch(self.batches_seen, trainer, pl_module, reduce_fn):
                    self._detours_done(trainer, pl_module)
        step = trainer.global_step
        if step != self._last_step:
            self._last_step = step
            if step % self.steps_per_round == 0:
                if self.strategy.static:  # bookkeeping only: no mixing work to meter
                    self._end_round(trainer, pl_module, step)
                else:
                    with self.meter.section():
                        self._end_round(trainer, pl_module, step)
        self.meter.step_finished()

    # ------------------------------------------------------------------ rounds
    def _reduce_fn(self, trainer: L.Trainer) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if trainer.world_size <= 1:
            return None
        return lambda t: trainer.strategy.reduce(t, reduce_op="sum")

    def _end_round(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        reduce_fn = self._reduce_fn(trainer)
        rows = self.stats.reduced_all(reduce_fn)
        counts, loss_sum = rows["counts"], rows["loss_sum"]
        self.ledger.add_round(self.round, rows["drawn"].numpy(), rows["tokens"].numpy())
        gram, extra = None, {"lr": current_lr(trainer)}
        for service in self.services:
            extra.update(service.collect(trainer, pl_module, reduce_fn))
        if self.gram_signal is not None:
            extra.update(self.gram_signal.collect(pl_module, reduce_fn))
            gram = extra.pop("gram")
        stats = RoundStats(
            step=step,
            round=self.round,
            counts=counts,
            loss_sum=loss_sum,
            gram=gram,
            extra=extra,
            tokens=rows["tokens"],
        )
        assert self.weights is not None
        if self.round < self.warmup_rounds:
            new = uniform(len(self.domain_names))
        else:
            new = np.asarray(self.strategy.update(stats, self.weights.copy()), dtype=np.float64)
        self._accept(trainer, new, "update")
        self._apply(pl_module)
        if self.gram_signal is not None and trainer.is_global_zero:
            assert self.output_dir is not None and gram is not None
            self.gram_signal.save(self.output_dir / "gram", self.round, gram, extra["gram_counts"])
        metrics = round_metrics(self.domain_names, new, rows)
        gq = getattr(self.strategy, "last_gq_norm", None)
        if gq is not None:
            self.gq_norms.append(float(gq))
            metrics["balance/gq_norm"] = float(gq)
        self.round += 1
        self._record(step)
        self.stats.reset()
        if self.gram_signal is not None:
            self.gram_signal.reset()
        for service in self.services:
            service.reset()
        # Straight to the loggers, once per round: `LightningModule.log` costs ~1 ms per call
        # (measured), i.e. tens of ms per round with many domains, for values that need no
        # reduction (they are equal on every rank).
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self._boundary(trainer, pl_module, stats)

    # ------------------------------------------------------------------ detours
    def _boundary(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stats: RoundStats | None
    ) -> None:
        """Ask the strategy for detours; run the sandboxed ones, queue the in-line ones."""
        if self.detours.active:
            raise RuntimeError(
                f"round {self.round} ended inside an in-line detour: raise "
                "balance.steps_per_round or shorten the strategy's detours"
            )
        assert self.weights is not None
        plan = self.strategy.plan_detours(stats, self.weights.copy())
        if not plan:
            return
        accumulate = self.detours.accumulate
        done = self.detours.start(
            plan,
            trainer,
            pl_module,
            self.sampler,
            self.sampler.weights,
            next_boundary=self.batches_seen + self.steps_per_round * accumulate,
            reduce_fn=self._reduce_fn(trainer),
        )
        if done:
            self._detours_done(trainer, pl_module)

    def _detours_done(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Hand the results to the strategy; adopt the mixture it returns (not in warm-up)."""
        assert self.weights is not None
        new = self.strategy.detours_done(self.detours.finish(), self.weights.copy())
        if new is None or self.round < self.warmup_rounds:
            return
        self._accept(trainer, np.asarray(new, dtype=np.float64), "detours_done")
        self._apply(pl_module)
        step = int(trainer.global_step)
        if self.trajectory and self.trajectory[-1]["step"] == step:
            self.trajectory.pop()  # the mixture it replaces trained no step
        self._record(step)
