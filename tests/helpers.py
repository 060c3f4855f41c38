"""Test helpers shared by integration tests."""

from __future__ import annotations

import lightning as L


class Crash(RuntimeError):
    """A simulated kill of a training process."""


class CrashAt(L.Callback):
    """Raises at the start of the batch after optimizer step ``step`` (after its checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")
