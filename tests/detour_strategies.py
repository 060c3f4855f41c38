"""Test-only strategies that exercise the detour mechanism (``strategy._target_=tests...``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.strategies.base import MixingStrategy, RoundStats, uniform


class SandboxedNoop(MixingStrategy):
    """Uniform ``p``; at every boundary three detours whose results it ignores.

    Sandboxed (default): two single-domain detours and a uniform one; a run with it must
    match plain uniform sampling exactly (sandboxes leave no trace). ``kind="inline"``: three
    in-line detours on the uniform mixture itself, so the sampler draws exactly the batches
    of a uniform run and the evaluations between them must leave no trace either.
    """

    def __init__(self, steps: int = 3, kind: str = "sandboxed") -> None:
        self.steps = int(steps)
        self.kind = kind
        self.received: list[list[DetourResult]] = []

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return uniform(self.ctx.num_domains)

    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list[Detour]:
        m = self.ctx.num_domains
        if self.kind == "inline":
            return [Detour(self.steps, "inline", mixture=list(uniform(m))) for _ in range(3)]
        return [
            Detour(self.steps, "sandboxed", domain=0),
            Detour(self.steps, "sandboxed", domain=m - 1, lr=1e-2),
            Detour(self.steps, "sandboxed", mixture=list(uniform(m))),
        ]

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> None:
        self.received.append(results)
        return None


class InlineProbe(MixingStrategy):
    """Two back-to-back detours per boundary (in-line unless ``kind``); the next mixture
    follows their drops.

    ``p`` after the detours is the mean of ``softmax(scale · drop)`` of the one-hot detour's
    loss drops and the mixture it replaces (the callback must pass the current one), so the
    weight trajectory depends on every detour evaluation and on the mixture handed over.
    """

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, steps: int = 2, scale: float = 20.0, kind: str = "inline") -> None:
        self.steps = int(steps)
        self.scale = float(scale)
        self.kind = kind
        self.boundaries = 0

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return weights

    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list[Detour]:
        m = self.ctx.num_domains
        mix = np.arange(1, m + 1, dtype=np.float64)
        d = self.boundaries % m
        self.boundaries += 1
        return [
            Detour(self.steps, self.kind, domain=d, tag="onehot"),
            Detour(self.steps, self.kind, mixture=list(mix / mix.sum()), tag="mix"),
        ]

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> np.ndarray:
        drop = np.nan_to_num(results[0].drop)
        z = np.exp(self.scale * (drop - drop.max()))
        assert weights.shape == z.shape and np.isclose(weights.sum(), 1.0)
        return 0.5 * z / z.sum() + 0.5 * weights

    def state_dict(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.boundaries = int(state["boundaries"])


class OffSimplex(MixingStrategy):
    """Returns weights that do not sum to 1 at its first update: the callback must refuse
    them (naming ``OffSimplex.update``) and the run must fail, not train on them."""

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return np.full(self.ctx.num_domains, 0.5)


class OneDomainAtTheEdge(MixingStrategy):
    """Puts every weight on domain 0 at its first update (the others exactly 0): a vertex of
    the simplex is a valid mixture, which the callback must adopt, not refuse."""

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        p = np.zeros(self.ctx.num_domains)
        p[0] = 1.0
        return p
