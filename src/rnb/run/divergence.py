"""Stop a diverged run: a non-finite loss ends training with an error, never with a result.

:class:`DivergenceGuard` is a Lightning callback that watches the training loss of every
(micro-)batch and the eval loss of every evaluation. It raises :class:`DivergedError`
(which ``rnb.train.train`` turns into a ``status: "diverged"`` summary and a non-zero exit)
at the first non-finite training loss, or after ``divergence.max_nonfinite_steps``
consecutive ones, and at any non-finite eval loss.

Interaction with Balance: the per-domain statistics and the R&B gradient capture already
skip non-finite examples / batches (method.md), so a tolerated non-finite step never
reaches the mixture. The tolerance only decides whether training continues. It is useful
with ``trainer.precision=16-mixed``, where GradScaler skips the optimizer step of a
batch whose gradients overflow; in fp32/bf16 one non-finite loss gives non-finite
gradients, AdamW writes them into every weight, and all later losses are non-finite too,
so the default (0: stop at the first) loses nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

__all__ = ["DivergedError", "DivergenceGuard", "divergence_hint"]

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """A run's training or eval loss became non-finite.

    Attributes:
        step: optimizer step (1-based count of steps taken) whose loss was non-finite;
            0 for the eval before training.
        reason: what was non-finite, e.g. ``"training loss nan"``.
    """

    def __init__(self, step: int, reason: str, hint: str = "") -> None:
        self.step = int(step)
        self.reason = reason
        super().__init__(
            f"run diverged at step {self.step}: {reason}" + (f"; {hint}" if hint else "")
        )


def divergence_hint(cfg: DictConfig | Mapping[str, Any]) -> str:
    """The config keys that usually cure a divergence, with the run's current values."""
    lr = (cfg.get("model") or {}).get("lr")
    clip = (cfg.get("trainer") or {}).get("gradient_clip_val")
    clipping = (
        f"clip gradients harder with trainer.gradient_clip_val (now {clip})"
        if clip
        else f"clip gradients with trainer.gradient_clip_val (now {clip}; e.g. 1.0)"
    )
    return f"lower the learning rate model.lr (now {lr}) and/or {clipping}"


class DivergenceGuard(L.Callback):
    """Raise :class:`DivergedError` when the loss of a run becomes non-finite.

    Args:
        max_nonfinite_steps: consecutive non-finite training losses tolerated
            (``divergence.max_nonfinite_steps``; 0 stops at the first). Counted per
            (micro-)batch; a finite loss resets the count.
        hint: appended to the error (which config keys to change), see
            :func:`divergence_hint`.
        eval_metric: the logged eval loss checked after every evaluation (fit, the eval
            before training and the final eval).

    Raises:
        ValueError: ``max_nonfinite_steps < 0``.
    """

    def __init__(
        self, max_nonfinite_steps: int = 0, hint: str = "", eval_metric: str = "val/loss"
    ) -> None:
        if int(max_nonfinite_steps) < 0:
            raise ValueError(
                f"divergence.max_nonfinite_steps must be >= 0, got {max_nonfinite_steps}"
            )
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.hint = hint
        self.eval_metric = eval_metric
        self.streak = 0  # consecutive non-finite training losses seen so far
        self.first_step: int | None = None  # step of the first loss in the current streak
        # (host buffer, CUDA event or None, step) of a flag whose copy is still in flight
        self._pending: tuple[torch.Tensor, Any, int] | None = None
        self._buffer: torch.Tensor | None = None

    # ------------------------------------------------------------------ training loss
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # manual optimisation without a returned loss: nothing to watch
        bad = ~torch.isfinite(loss.detach()).all()
        if trainer.world_size > 1:
            # Every rank must stop at the same step, or the others hang in the next
            # collective. On GPU this all-reduce is queued on the stream: no host sync.
            bad = trainer.strategy.reduce(bad.float(), reduce_op="sum") > 0
        # Reading a GPU value on the host (`.item()`, `bool()`) waits for every kernel
        # queued so far, so the CPU could not queue the next step while the GPU works on
        # this one. Instead the flag is copied without blocking into pinned host memory and
        # read one step later, when the copy has long finished: no stall, and the step of
        # the first non-finite loss is still exact (a diverged model computes one more
        # step of NaNs; its weights were already lost, and no checkpoint is written in
        # between: see `on_save_checkpoint`). Lightning's progress bar reads `train/loss`
        # every step, but it is off in many cluster jobs (and in tests), so the guard does
        # not rely on it. CPU values take the same one-step-late path (their copy is
        # synchronous and free), so the logic tested on CPU is the logic run on GPU.
        self._resolve_pending()
        self._pending = self._enqueue(bad, trainer.global_step)

    def _enqueue(self, bad: torch.Tensor, step: int) -> tuple[torch.Tensor, Any, int]:
        if bad.device.type != "cuda":
            return bad.clone(), None, step
        if self._buffer is None:
            self._buffer = torch.empty((), dtype=torch.bool, pin_memory=True)
        self._buffer.copy_(bad, non_blocking=True)  # read only after the previous pending
        event = torch.cuda.Event()
        event.record()
        return self._buffer, event, step

    def _resolve_pending(self) -> None:
        if self._pending is None:
            return
        flag, event, step = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()  # waits for the previous step only, not the queued one
        self._observe(bool(flag), step)

    def _observe(self, nonfinite: bool, step: int) -> None:
        if not nonfinite:
            if self.streak:
                log.warning(
                    "training loss finite again at step %d after %d non-finite step(s) "
                    "(tolerated: divergence.max_nonfinite_steps=%d)",
                    step,
                    self.streak,
                    self.max_nonfinite_steps,
                )
            self.streak, self.first_step = 0, None
            return
        self.streak += 1
        if self.first_step is None:
            self.first_step = step
        if self.streak > self.max_nonfinite_steps:
            raise DivergedError(
                self.first_step,
                f"non-finite training loss ({self.streak} consecutive step(s); "
                f"divergence.max_nonfinite_steps={self.max_nonfinite_steps})",
                self.hint,
            )
        log.warning(
            "non-finite training loss at step %d (%d of %d tolerated by "
            "divergence.max_nonfinite_steps)",
            step,
            self.streak,
            self.max_nonfinite_steps,
        )

    # ------------------------------------------------------------------ flush points
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Never write a checkpoint of diverged weights (resume=auto would pick it up).
        self._resolve_pending()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resolve_pending()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resolve_pending()

    # ------------------------------------------------------------------ eval loss
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn not in (
            TrainerFn.FITTING,
            TrainerFn.VALIDATING,
        ):
            return
        value = trainer.callback_metrics.get(self.eval_metric)
        if value is None:
            return
        value = float(value)  # once per evaluation, which has synchronised already
        if not math.isfinite(value):
            raise DivergedError(
                trainer.global_step, f"non-finite eval loss ({self.eval_metric}={value})", self.hint
            )
