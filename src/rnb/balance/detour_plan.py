"""What a strategy asks for at a round boundary: :class:`Detour`; what it gets back:
:class:`DetourResult`.

A *detour* trains for a few steps on a temporary mixture (or on one domain alone), with
a per-domain probe evaluation before and after. Two kinds:

- ``"inline"``: the steps are ordinary training steps of the real model, drawn by the
  run's sampler from the temporary mixture (recorded in its schedule); only the
  evaluations are overhead. Aioli's LearnParams sweeps work this way.
- ``"sandboxed"``: the steps train the real model inside the round-boundary hook on batches
  from the detour's own seeded generator, then model, optimizer, LR scheduler, gradients
  and RNG are restored: the run continues as if the detour never happened, and every
  FLOP of it is overhead. Skill-It's skills-graph estimation works this way. A sandboxed
  detour of 0 steps is a probe evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Detour", "DetourResult"]

KINDS = ("inline", "sandboxed")


@dataclass
class Detour:
    """One detour.

    Attributes:
        steps: training steps (optimizer steps; ``>= 1`` in-line, ``>= 0`` sandboxed).
        kind: ``"inline"`` or ``"sandboxed"`` (see the module docstring).
        mixture: the temporary mixture ``[m]`` (normalised by the sampler) ...
        domain: ... or one domain index (the one-hot mixture); exactly one of the two.
        lr: sandboxed only: learning rate of its steps, ``"current"`` (the run's current
            rate), ``"peak"`` (the optimizer's base rate, before the schedule) or a number.
        tag: a label carried into the result (e.g. ``"graph/3"``).

    Raises:
        ValueError: both or neither of ``mixture`` / ``domain``, a bad ``kind``, ``steps`` or
            ``lr``.
    """

    steps: int
    kind: Literal["inline", "sandboxed"] = "sandboxed"
    mixture: list[float] | None = None
    domain: int | None = None
    lr: float | str = "current"
    tag: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"detour kind must be one of {list(KINDS)}, got {self.kind!r}")
        if (self.mixture is None) == (self.domain is None):
            raise ValueError("a detour needs exactly one of `mixture` or `domain`")
        low = 1 if self.kind == "inline" else 0
        if int(self.steps) < low:
            raise ValueError(f"{self.kind} detours need steps >= {low}, got {self.steps}")
        if isinstance(self.lr, str) and self.lr not in ("current", "peak"):
            raise ValueError(f"detour lr must be 'current', 'peak' or a number, got {self.lr!r}")
        if self.kind == "inline" and self.lr != "current":
            raise ValueError("an inline detour trains with the run's own learning rate")
        self.steps = int(self.steps)
        if self.mixture is not None:
            self.mixture = [float(x) for x in np.asarray(self.mixture, dtype=np.float64)]

    def weights(self, m: int) -> np.ndarray:
        """The detour's mixture as ``[m]`` float64 (validated by the sampler)."""
        if self.domain is not None:
            if not 0 <= int(self.domain) < m:
                raise ValueError(f"detour domain {self.domain} outside 0..{m - 1}")
            out = np.zeros(m)
            out[int(self.domain)] = 1.0
            return out
        return np.asarray(self.mixture, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Checkpointable form (plain Python types)."""
        return {
            "steps": self.steps,
            "kind": self.kind,
            "mixture": self.mixture,
            "domain": self.domain,
            "lr": self.lr,
            "tag": self.tag,
        }


@dataclass
class DetourResult:
    """Per-domain probe losses before and after a detour.

    Attributes:
        detour: the detour.
        before: ``[m]`` mean probe loss per domain before it (``nan``: no probe example).
        after: ``[m]`` the same after it.
        step: the run's optimizer step when it finished.
    """

    detour: Detour
    before: np.ndarray
    after: np.ndarray
    step: int

    @property
    def drop(self) -> np.ndarray:
        """``before − after`` (positive: the detour lowered that domain's loss)."""
        return self.before - self.after

    def to_dict(self) -> dict[str, Any]:
        """Checkpointable form (plain Python types)."""
        return {
            "detour": self.detour.to_dict(),
            "before": [float(x) for x in self.before],
            "after": [float(x) for x in self.after],
            "step": int(self.step),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DetourResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            Detour(**state["detour"]),
            np.asarray(state["before"], dtype=np.float64),
            np.asarray(state["after"], dtype=np.float64),
            int(state["step"]),
        )
