"""``odm``: Online Data Mixing — EXP3 over domains, rewarded by their training loss.

Albalak et al. 2023 ("Efficient Online Data Mixing for Language Model Pre-Training",
arXiv:2312.02406, §3) treat each domain as an arm of a multi-armed bandit whose reward is
the training loss of the data drawn from it (a high loss = much left to learn). It needs no
extra passes: the reward is the loss the training step computed anyway
(``RoundStats.loss_sum / counts``).

Per update ``t`` (reference code: ``Exp3WeightUpdater`` / ``SmoothedMeanWeightUpdater`` in
``megatron/data/data_sampling_utils.py`` of github.com/alon-albalak/online-data-mixing):

* exploration ``ε_t = min(1/m, sqrt(ln m / (m t)))`` with ``t`` the global optimizer step
  (the reference passes its ``iteration``), ``ε_0 = 1/m``;
* the reward estimate ``R̂`` (``reward``):

  - ``importance`` (``Exp3WeightUpdater``): ``R̂_i += (ℓ_i / scale) / π_i``, the
    importance-weighted EXP3 estimate, ``scale = 10`` in the official code (a later
    re-implementation uses 15);
  - ``smoothed`` (``SmoothedMeanWeightUpdater``, which the official README calls the
    paper's method): ``R̂_i ← β R̂_i + (1 − β) f(ℓ_i)`` with ``β = smoothing`` (0.9; the
    reference scripts use 0.5) and no importance weighting. The official code averages
    ``f(ℓ) = exp(ℓ)`` ("smoothed exponentiated mean"; ``smoothed_of: exp_loss``, default);
    baselines.md describes a smoothed mean of ``ℓ`` itself (``smoothed_of: loss``);

* ``π = (1 − m ε_t) · softmax(ε_{t−1} R̂) + ε_t`` (the reference's ``prev_eps``: the ``ε``
  of the previous update, ``1/m`` before the first), then the optional probability
  ``floor`` (mixed with uniform as little as needed, like R&B's ``min_weight``; the
  re-implementation's exploration floor is 0.03, the official code has none).

**Rounds with several domains per batch.** The official ``train`` draws one domain per
batch and rewards that arm; our sampler mixes domains inside every batch (the reference's
``train_mixed_minibatch`` / ``group_update`` does the same). Every domain drawn in a round
(``counts_i > 0``) is credited once with its mean per-example loss over the round; a domain
not drawn is an unplayed arm (its estimate is unchanged, the EXP3 zero estimate). ``ε`` is
updated once per round. With ``balance.steps_per_round: null`` a round is one optimizer
step (``default_steps_per_round = 1``, the reference updates every step).

**Deviations, each a key.** ``importance: probability`` divides by ``π_i`` as the reference
does; in a mixed batch of ``n`` examples the chance that domain ``i`` is drawn at all is
``1 − (1 − π_i)^n``, not ``π_i``, so dividing by ``π_i`` over-credits rare domains (it
pulls the mixture towards ``π ∝ ℓ``); ``importance: inclusion`` divides by that inclusion
probability instead. ``warmup_steps``: the reference trains 2000 steps on the initial
weights before the first update (rewards of those steps are discarded); our default runs
are 240 steps, so the default is 20. The paper's pseudo-code could not be checked offline:
whether its smoothed form importance-weights the loss is not confirmed.

**Non-finite rewards** (documented skip): examples with a non-finite loss never reach
``loss_sum`` (:class:`rnb.balance.stats.DomainStats` counts them in
``summary.json`` ``skipped_nonfinite``); a domain whose round reward is still non-finite
(e.g. ``exp`` overflow) is treated as not drawn and counted in ``skipped_rewards``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from rnb.balance.rnb_math import apply_min_weight
from rnb.balance.strategies.base import MixingStrategy, RoundStats

__all__ = ["ODM", "exp3_mixture", "exploration"]

_REWARDS = ("importance", "smoothed")
_SMOOTHED_OF = ("exp_loss", "loss")
_IMPORTANCE = ("probability", "inclusion")


def exploration(m: int, t: int) -> float:
    """``ε_t = min(1/m, sqrt(ln m / (m t)))`` (ODM §3; ``t >= 1``)."""
    if m < 1 or t < 1:
        raise ValueError(f"exploration: need m >= 1 and t >= 1, got m={m}, t={t}")
    return min(1.0 / m, math.sqrt(math.log(m) / (m * t)))


def exp3_mixture(estimate: np.ndarray, eps_prev: float, eps: float) -> np.ndarray:
    """``π = (1 − m ε) · softmax(ε_prev · R̂) + ε`` (float64 ``[m]``, sums to 1).

    The softmax is taken in log space so a large ``ε_prev · R̂`` cannot overflow (the
    reference exponentiates directly).
    """
    r = np.asarray(estimate, dtype=np.float64)
    logits = eps_prev * r
    e = np.exp(logits - logits.max())
    return (1.0 - r.size * eps) * e / e.sum() + eps


class ODM(MixingStrategy):
    """EXP3 bandit over domains with the training loss as reward (see module docstring).

    Args:
        reward: ``"importance"`` (EXP3 estimate ``R̂_i += (ℓ_i/scale)/π_i``) or
            ``"smoothed"`` (``R̂_i ← β R̂_i + (1−β) f(ℓ_i)``) (``strategy.reward``).
        scale: divisor of the loss in the ``importance`` form (official: 10).
        smoothing: ``β`` of the ``smoothed`` form, in ``[0, 1)`` (official: 0.9).
        smoothed_of: ``"exp_loss"`` (official code: ``f = exp``) or ``"loss"`` (``f = id``).
        importance: ``"probability"`` (divide by ``π_i``, official) or ``"inclusion"``
            (divide by ``1 − (1 − π_i)^n``, ``n`` the examples drawn in the round).
        warmup_steps: optimizer steps trained on the initial (uniform) mixture before the
            first update; their rewards are discarded, as in the reference.
        floor: minimum probability of every domain (``0 <= floor <= 1/m``); 0 = off.

    Raises:
        ValueError: on an unknown option or an out-of-range number (names the key).
    """

    #: the reference updates the mixture after every optimizer step
    default_steps_per_round: ClassVar[int] = 1

    def __init__(
        self,
        reward: str = "smoothed",
        scale: float = 10.0,
        smoothing: float = 0.9,
        smoothed_of: str = "exp_loss",
        importance: str = "probability",
        warmup_steps: int = 20,
        floor: float = 0.0,
    ) -> None:
        for key, value, options in (
            ("reward", reward, _REWARDS),
            ("smoothed_of", smoothed_of, _SMOOTHED_OF),
            ("importance", importance, _IMPORTANCE),
        ):
            if value not in options:
                raise ValueError(f"strategy.{key} must be one of {list(options)}, got {value!r}")
        if not (float(scale) > 0 and math.isfinite(scale)):
            raise ValueError(f"strategy.scale must be a finite number > 0, got {scale}")
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f"strategy.smoothing must be in [0, 1), got {smoothing}")
        if int(warmup_steps) < 0:
            raise ValueError(f"strategy.warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= float(floor) < 1.0:
            raise ValueError(f"strategy.floor must be in [0, 1), got {floor}")
        self.reward = reward
        self.scale = float(scale)
        self.smoothing = float(smoothing)
        self.smoothed_of = smoothed_of
        self.importance = importance
        self.warmup_steps = int(warmup_steps)
        self.floor = float(floor)
        self._estimate: np.ndarray | None = None
        self._eps: float | None = None
        self.skipped_rewards = 0
        self.updates = 0

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        m = ctx.num_domains
        if self.floor * m > 1.0 + 1e-12:
            raise ValueError(
                f"strategy.floor={self.floor} x {m} domains exceeds 1: need floor <= 1/{m}"
            )
        self._estimate = np.zeros(m)
        self._eps = 1.0 / m

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        assert self._estimate is not None and self._eps is not None
        if stats.step <= self.warmup_steps:
            return weights
        rewards = self._rewards(stats)
        pi = np.asarray(weights, dtype=np.float64)
        for i in np.flatnonzero(np.isfinite(rewards)):
            if self.reward == "importance":
                self._estimate[i] += (rewards[i] / self.scale) / self._played(pi[i], stats)
            else:
                self._estimate[i] = (
                    self.smoothing * self._estimate[i] + (1.0 - self.smoothing) * rewards[i]
                )
        eps_prev, self._eps = self._eps, exploration(len(pi), max(int(stats.step), 1))
        p = exp3_mixture(self._estimate, eps_prev, self._eps)
        self.updates += 1
        return apply_min_weight(torch.as_tensor(p), self.floor).numpy()

    def _rewards(self, stats: RoundStats) -> np.ndarray:
        """Per-domain reward of the round (``nan`` = not drawn, or skipped as non-finite)."""
        counts = stats.counts.double().cpu().numpy()
        loss = stats.mean_loss.double().cpu().numpy()
        drawn = counts > 0
        with np.errstate(over="ignore", invalid="ignore"):
            r = (
                np.exp(loss)
                if self.reward == "smoothed" and self.smoothed_of == "exp_loss"
                else loss
            )
        bad = drawn & ~np.isfinite(r)
        self.skipped_rewards += int(bad.sum())
        return np.where(drawn & np.isfinite(r), r, np.nan)

    def _played(self, p: float, stats: RoundStats) -> float:
        """The probability that the arm was played: ``π_i`` or the inclusion probability."""
        if self.importance == "probability":
            return p
        n = float(stats.counts.sum())
        return 1.0 - (1.0 - p) ** max(n, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "estimate": torch.as_tensor(self._estimate, dtype=torch.float64).clone(),
            "eps": float(self._eps) if self._eps is not None else -1.0,
            "skipped_rewards": self.skipped_rewards,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._estimate = state["estimate"].double().numpy().copy()
        self._eps = float(state["eps"])
        self.skipped_rewards = int(state.get("skipped_rewards", 0))
        self.updates = int(state.get("updates", 0))
