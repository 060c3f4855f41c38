"""``aioli``: Aioli (Chen et al. 2024), the mixing law re-estimated online from in-line
detours.

"Aioli: A Unified Optimization Framework for Language Model Data Mixing"
(arXiv:2411.05735), Alg. 1 (the round) and Alg. 2 (LearnParams); reference code
github.com/HazyResearch/aioli, ``trainer/aioli_trainer.py``. Each round:

1. LearnParams, as in-line detours (:mod:`rnb.balance.detour_plan`): ``lp_rounds`` sweeps,
   each over all domains in a fresh random order; sweep step ``j`` trains ``lp_steps`` steps
   on the mixture with mass ``f`` (``one_hot_factor``) on ``j`` and ``(1 − f)/(m − 1)`` on
   the others, then evaluates; the drop from the previous evaluation is added to column
   ``j`` of ``D``; ``D`` is averaged over the sweeps.
2. Un-mix: ``A_i = P⁻¹ D_i`` (``unmix: solve``) or the diagonal shortcut ``A_ii = D_ii / f``
   (``unmix: diagonal``) (:mod:`rnb.balance.aioli_math`).
3. Shift to non-negative and normalise (``normalize``), EMA ``Ā = (1 − γ) A + γ Ā`` (``ema``:
   ``γ``), ``p ∝ exp(η · 1ᵀĀ)`` from uniform; with ``ema: null`` the cumulative form
   ``p ← p · exp(η · 1ᵀA)`` (the reference code's behaviour without ``--ema``).
4. Train the rest of the round on ``p``.

The LearnParams steps are ordinary training steps (they count toward ``K``); only the
``m · lp_rounds + 1`` probe evaluations per round are overhead. "Restricted" mode
(``prior``/``prior_steps``): train on a static mixture (any ``strategy=static`` source: a
list, a ``{domain: weight}`` map or another run's ``summary.json``) for ``prior_steps``
steps, then run Aioli from uniform (as the reference code resets its weights).

Deviations: losses are on the fixed stratified probe subset; the sweep order is seeded by
``(seed, boundary)`` so every rank and a resumed run draw the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnb.balance.aioli_math import (
    aioli_scores,
    ema_graph,
    normalize_graph,
    perturbation_matrix,
    unmix,
)
from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats, uniform
from rnb.balance.strategies.static import Static

__all__ = ["Aioli"]


class Aioli(MixingStrategy):
    """Aioli online data mixing.

    Args:
        lp_rounds: sweeps over all domains per round (``r``).
        lp_steps: training steps per sweep step (``s``).
        one_hot_factor: ``f``, the mass on the favoured domain (``(1/m, 1]``).
        eta: step size ``η``.
        ema: ``γ`` of the EMA over rounds (weight of the past), or ``None`` for the
            cumulative multiplicative update.
        unmix: ``"solve"`` or ``"diagonal"``.
        normalize: shift ``A`` to non-negative and divide by its sum.
        round_steps: ``K`` when ``balance.steps_per_round`` is null (the round includes the
            ``m · r · s`` LearnParams steps).
        prior: restricted mode: keyword arguments of
            :class:`~rnb.balance.strategies.static.Static` (``weights``, ``from_summary``,
            ``average``, ``fill``, ``check_fingerprint``), or ``None``.
        prior_steps: steps trained on ``prior`` before Aioli starts (at the first round
            boundary at or after it).

    Raises:
        ValueError: a key out of range (the message names it).
    """

    def __init__(
        self,
        lp_rounds: int = 4,
        lp_steps: int = 4,
        one_hot_factor: float = 0.625,
        eta: float = 0.2,
        ema: float | None = None,
        unmix: str = "solve",
        normalize: bool = True,
        round_steps: int = 250,
        prior: dict[str, Any] | None = None,
        prior_steps: int = 0,
    ) -> None:
        for key, value in (
            ("lp_rounds", lp_rounds),
            ("lp_steps", lp_steps),
            ("round_steps", round_steps),
        ):
            if int(value) < 1:
                raise ValueError(f"strategy.{key} must be >= 1, got {value}")
        if not 0.0 < float(one_hot_factor) <= 1.0:
            raise ValueError(f"strategy.one_hot_factor must be in (0, 1], got {one_hot_factor}")
        if not np.isfinite(float(eta)):
            raise ValueError(f"strategy.eta must be finite, got {eta}")
        if ema is not None and not 0.0 <= float(ema) < 1.0:
            raise ValueError(f"strategy.ema must be in [0, 1) or null, got {ema}")
        if unmix not in ("solve", "diagonal"):
            raise ValueError(f"strategy.unmix must be 'solve' or 'diagonal', got {unmix!r}")
        if int(prior_steps) < 0 or (prior is None and int(prior_steps) > 0):
            raise ValueError("strategy.prior_steps needs strategy.prior (and must be >= 0)")
        self.lp_rounds = int(lp_rounds)
        self.lp_steps = int(lp_steps)
        self.one_hot_factor = float(one_hot_factor)
        self.eta = float(eta)
        self.ema = None if ema is None else float(ema)
        self.unmix = unmix
        self.normalize = bool(normalize)
        self.default_steps_per_round = int(round_steps)  # shadows the class default K
        self.prior = None if prior is None else dict(prior)
        self.prior_steps = int(prior_steps)
        self._prior = None if prior is None else Static(**self.prior)
        self._boundaries = 0
        self._updates = 0
        self._ema: np.ndarray | None = None
        self._last_A: np.ndarray | None = None
        self._order: list[int] = []

    def setup(self, ctx: MixtureContext) -> None:
        super().setup(ctx)
        perturbation_matrix(ctx.num_domains, self.one_hot_factor)  # validates f against m
        if self._prior is not None:
            self._prior.setup(ctx)
        self._check_run_length(ctx)

    def _check_run_length(self, ctx: MixtureContext) -> None:
        """Refuse a run that ends inside its first LearnParams.

        Such a run trains only on perturbed mixtures and never on an Aioli mixture, yet
        would complete like a result (``final_weights`` uniform, ``rounds`` 0).

        Raises:
            ValueError: ``strategy.prior_steps + m · lp_rounds · lp_steps >= trainer.max_steps``
                (names the keys to change).
        """
        m = ctx.num_domains
        if ctx.max_steps is None or m == 1:
            return
        first = self.prior_steps + m * self.lp_rounds * self.lp_steps
        if first >= ctx.max_steps:
            raise ValueError(
                f"strategy=aioli: the first LearnParams ends at step {first} "
                f"(strategy.prior_steps={self.prior_steps} + {m} domains x "
                f"strategy.lp_rounds={self.lp_rounds} x strategy.lp_steps={self.lp_steps}), "
                f"but trainer.max_steps={ctx.max_steps}: the run would never train on an "
                f"Aioli mixture. Raise trainer.max_steps above {first} or lower "
                "strategy.lp_rounds / strategy.lp_steps"
            )

    def initial_weights(self) -> np.ndarray:
        return (
            self._prior.initial_weights() if self._prior is not None else super().initial_weights()
        )

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        """The mixture comes from the detours (:meth:`detours_done`): keep it."""
        return weights

    # ------------------------------------------------------------------ detours
    def perturbed(self, j: int) -> list[float]:
        """The LearnParams mixture that favours domain ``j``."""
        return [float(x) for x in perturbation_matrix(self.ctx.num_domains, self.one_hot_factor)[j]]

    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list[Detour]:
        """LearnParams: ``lp_rounds`` seeded random sweeps over the domains."""
        step = 0 if stats is None else int(stats.step)
        boundary = self._boundaries
        self._boundaries += 1
        m = self.ctx.num_domains
        if step < self.prior_steps or m == 1:
            return []
        rng = np.random.default_rng([self.ctx.seed, 5, boundary])
        self._order = [int(j) for _ in range(self.lp_rounds) for j in rng.permutation(m)]
        return [
            Detour(self.lp_steps, "inline", mixture=self.perturbed(j), tag=f"lp/{j}")
            for j in self._order
        ]

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> np.ndarray:
        """Un-mix the drops into ``A``, normalise, smooth; ``p ∝ exp(η · 1ᵀĀ)``."""
        m = self.ctx.num_domains
        drops = np.zeros((m, m))
        for j, r in zip(self._order, results, strict=True):
            drops[:, j] += np.nan_to_num(r.before - r.after, nan=0.0)
        drops /= self.lp_rounds
        A = unmix(drops, self.one_hot_factor, self.unmix)
        if self.normalize:
            A = normalize_graph(A)
        self._last_A = A
        if self.ema is not None:
            self._ema = ema_graph(self._ema, A, self.ema)
            base, graph = uniform(m), self._ema
        else:  # cumulative: the first update starts from uniform (restricted mode included)
            base, graph = (uniform(m) if self._updates == 0 else weights), A
        self._updates += 1
        score = np.log(np.clip(base, 1e-300, None)) + aioli_scores(graph, self.eta)
        z = np.exp(score - score.max())
        return z / z.sum()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "boundaries": self._boundaries,
            "updates": self._updates,
            "order": list(self._order),
            "ema": None if self._ema is None else self._ema.tolist(),
            "last_A": None if self._last_A is None else self._last_A.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._boundaries = int(state["boundaries"])
        self._updates = int(state["updates"])
        self._order = [int(j) for j in state["order"]]
        self._ema = None if state["ema"] is None else np.asarray(state["ema"], dtype=np.float64)
        self._last_A = None if state["last_A"] is None else np.asarray(state["last_A"])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["last_A"] = None if self._last_A is None else self._last_A.tolist()
        return out
