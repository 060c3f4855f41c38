"""Cost accounting of mixing work: wall-clock share and analytic FLOPs.

The wall-clock share is measured, not estimated: every piece of mixing work (gradient
hooks, reductions, strategy updates, extra evaluations) runs inside
:meth:`OverheadMeter.section`, and the whole training step is timed from the callback's
``on_train_batch_start`` to ``on_train_batch_end``. FLOPs follow the paper's Appendix D:
training costs ``6·N·D_t``; each strategy adds its own analytic term.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["OverheadMeter", "training_flops"]


def training_flops(num_params: int, tokens: int) -> float:
    """Standard training cost ``6·N·D_t``."""
    return 6.0 * float(num_params) * float(tokens)


class OverheadMeter:
    """Accumulates mixing time and whole-step time (seconds) and extra FLOPs."""

    def __init__(self) -> None:
        self.mixing_s = 0.0
        self.step_s = 0.0
        self.extra_flops = 0.0
        self.steps = 0
        self._step_t0: float | None = None
        self._depth = 0
        self._section = _Section(self)

    def section(self) -> _Section:
        """Context timing a block of mixing work (nested sections count once)."""
        return self._section

    def add_flops(self, flops: float) -> None:
        """Record analytic FLOPs of mixing work."""
        self.extra_flops += float(flops)

    def step_started(self) -> None:
        """Mark the start of a training (micro-)batch."""
        self._step_t0 = time.perf_counter()

    def step_finished(self) -> None:
        """Mark its end."""
        if self._step_t0 is not None:
            self.step_s += time.perf_counter() - self._step_t0
            self.steps += 1
            self._step_t0 = None

    def report(self, train_flops: float) -> dict[str, float]:
        """``{wall_pct, flops_pct, mixing_s, step_s, extra_flops}``."""
        return {
            "wall_pct": 100.0 * self.mixing_s / self.step_s if self.step_s > 0 else 0.0,
            "flops_pct": 100.0 * self.extra_flops / train_flops if train_flops > 0 else 0.0,
            "mixing_s": self.mixing_s,
            "step_s": self.step_s,
            "extra_flops": self.extra_flops,
        }

    def state_dict(self) -> dict[str, Any]:
        """Totals so far (resumed runs keep counting)."""
        return {
            "mixing_s": self.mixing_s,
            "step_s": self.step_s,
            "extra_flops": self.extra_flops,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.mixing_s = float(state.get("mixing_s", 0.0))
        self.step_s = float(state.get("step_s", 0.0))
        self.extra_flops = float(state.get("extra_flops", 0.0))
        self.steps = int(state.get("steps", 0))


class _Section:
    """Reusable timing context of one meter: a plain class rather than a generator-based
    context manager, because it runs several times per training step."""

    __slots__ = ("_meter", "_t0")

    def __init__(self, meter: OverheadMeter) -> None:
        self._meter = meter
        self._t0 = 0.0

    def __enter__(self) -> None:
        meter = self._meter
        meter._depth += 1
        if meter._depth == 1:
            self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        meter = self._meter
        meter._depth -= 1
        if meter._depth == 0:
            meter.mixing_s += time.perf_counter() - self._t0
