"""Test helpers shared by integration tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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


def full_and_resumed(over: list[str], root: Path, crash_at: int) -> tuple[dict, dict]:
    """An uninterrupted run and the same run killed before step ``crash_at`` + resumed.

    Returns ``(full, resumed)`` summaries; runs write to ``root/full`` and ``root/part``.
    """
    from rnb.config import compose
    from rnb.train import train

    full = train(compose("train", [*over, f"output_dir={root / 'full'}"]))
    part = [*over, f"output_dir={root / 'part'}"]
    try:
        train(compose("train", part), callbacks=[CrashAt(crash_at)])
    except Crash:
        pass
    else:  # pragma: no cover - the crash is the point of the helper
        raise AssertionError(f"the run did not reach step {crash_at}")
    resumed = train(compose("train", [*part, "resume=auto"]))
    return full, resumed


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", script)
    module = importlib.util.module_from_spec(spec)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)
    return module
