"""What a run prints: a step-based progress bar and silencing of Lightning's known noise.

Lightning's default bar counts batches of an *epoch*; our loader is infinite, so the bar
read ``Epoch 0/-2`` with no total. :class:`StepProgressBar` counts optimizer steps out of
``trainer.max_steps`` instead. :func:`quiet_lightning` drops two messages every run
printed that say nothing about the run (an advert tip and a torch-internal deprecation
inside Lightning), each matched exactly, so every other warning still shows.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["StepProgressBar", "quiet_lightning"]

#: Loggers Lightning's ``rank_zero_info`` writes to (which one depends on import order).
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    """Drops Lightning's ``💡 Tip: ... try installing litlogger / litmodels`` adverts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_DROP_TIPS = _DropTips()


def quiet_lightning() -> None:
    """Silence the litlogger/litmodels tips, Lightning's ``LeafSpec`` FutureWarning and its
    note that the model's ``on_before_batch_transfer`` is used with a DataModule.

    Idempotent. The tips are info records of Lightning's rank-zero logger (emitted when the
    trainer sets up loggers and callbacks); the warning is torch deprecating
    ``LeafSpec()``, which Lightning's own ``utilities/_pytree.py`` still calls when it
    wraps the dataloaders — nothing a user can act on. Only these exact messages are
    filtered, and the warning only when raised from that Lightning module. The note is by
    design here: `rnb.models.base.MixtureModule` makes host copies for the capture in that
    hook (model-specific: the head row mask), and rnb's DataModules do not define it.
    """
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_TIPS not in logger.filters:
            logger.addFilter(_DROP_TIPS)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"You have overridden `on_before_batch_transfer` in `LightningModule` but have "
        r"passed in a `LightningDataModule`",
    )


class StepProgressBar(TQDMProgressBar):
    """Training bar over optimizer steps: ``Training steps: 120/240``.

    With ``trainer.max_steps <= 0`` (epoch-bounded training) it behaves exactly like
    Lightning's bar. A resumed run starts the bar at the restored step. Under gradient
    accumulation the bar advances once per optimizer step, not per micro-batch.
    """

    def _by_steps(self, trainer: L.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if not self._by_steps(trainer):
            return
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.set_description("Training steps")
        self._show(bar, trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self._by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
            return
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            self._show(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    @staticmethod
    def _show(bar: Any, step: int) -> None:
        if not bar.disable:
            bar.n = step
            bar.refresh()
