"""``doremi``: DoReMi (Xie et al. 2023): domain weights from the excess loss over a reference.

The update (paper §2, Alg. 1; reference code ``doremi/trainer.py``,
``DoReMiTrainer.update_domain_weights``, ``doremiv1``), each round:

1. score ``s_i`` = mean over domain ``i``'s loss-bearing tokens of ``max(ℓ − ℓ_ref, 0)``
   (``clip: token``; ``clip: domain_mean`` clips after the mean, ``max(mean(ℓ − ℓ_ref), 0)``,
   as Aioli's re-implementation does); a domain without tokens this round keeps its last
   score; before its first tokens it takes the mean score of the domains present
   (``initial_score: mean``, see the deviations);
2. ``α ← softmax(log α + η s)``;
3. ``α ← (1 − ε) α + ε / m`` (smoothing).

Original DoReMi (``mode: reweight``) trains a *proxy* model that samples from a fixed mixture
(uniform, Alg. 1's ``P_u``) and multiplies each domain's loss by ``α``; the output is the
time-averaged ``ᾱ`` (``summary.json`` ``average_weights``), on which a final model is trained
(``strategy=static strategy.from_summary=<proxy run>/summary.json strategy.average=true``).
``mode: resample`` is the online variant: the model samples with ``α`` directly.

Deviations from the reference code, each on purpose:

* Timing: the reference updates ``α`` with step ``t``'s excess loss and re-weights step
  ``t``'s own loss with the new ``α``; here an update takes effect from the next step (the
  training forward has already run when the excess loss is known). With
  ``balance.steps_per_round = K > 1`` the score is the token mean over the round's ``K``
  steps (the reference always uses ``K = 1``, the default here).
* Loss re-weighting goes through the model hook
  (:func:`rnb.models.weighting.domain_weighted_mean`): ``Σ_i α_i ℓ̄_i / Σ_{i present} α_i``
  with ``ℓ̄_i`` the mean of domain ``i``'s per-example token-mean losses; the reference weighs
  every token, ``Σ_tok α_{d(tok)} ℓ_tok / Σ_tok α_{d(tok)}`` (longer examples weigh more).
* A domain absent before its first tokens: the reference code starts every score at
  ``log |V|`` (its ``perdomain_scores`` buffer), which never matters there (512-example
  batches gathered over GPUs cover every domain at step 1) but adds ``η log |V|`` (≈ 7–11)
  to an absent domain's log-weight per step when batches are small: ``α`` collapses onto
  whichever domain missed the first batch (measured: ᾱ = 0.91 on one of 6 domains after 12
  steps of 8 examples). The default ``initial_score: mean`` gives an unseen domain the mean
  score of the present ones (its weight neither grows nor shrinks against the average);
  ``initial_score: log_vocab`` is the reference code's choice, a number a fixed start.
* ``ᾱ`` is the step-weighted average of the trajectory (``rnb.balance.ledger.time_average``:
  ``α_0`` counts for the first round, the last update for no step); the reference averages
  ``α_0 .. α_T`` with equal weights — the same up to one step of ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats, uniform

__all__ = ["DoReMi"]

CLIPS = ("token", "domain_mean")
MODES = ("reweight", "resample")


class DoReMi(MixingStrategy):
    """DoReMi's exponentiated-gradient ascent on the excess loss over a reference model.

    Args:
        reference: ``strategy.reference``: the reference model, a completed run dir (its
            ``checkpoints/last.ckpt``) or a ``.ckpt``; required (checked when the run is
            built, by :class:`~rnb.balance.services.reference.ReferenceModel`).
        eta: step size ``η >= 0`` (reference code: 1).
        smoothing: ``ε ∈ [0, 1]``, mixed in uniformly after each update (reference: 1e-3).
        clip: ``token`` (clip each token's excess loss at 0, the paper) or ``domain_mean``
            (clip the domain's mean excess loss).
        mode: ``reweight`` (proxy samples ``proxy_mixture``, ``α`` multiplies the per-domain
            losses: the paper) or ``resample`` (sample with ``α``, plain loss).
        proxy_mixture: ``reweight``: the fixed sampling mixture: ``uniform`` (the paper),
            ``natural`` (proportional to domain size) or a list of ``m`` weights.
        initial_score: score of a domain before its first tokens: ``mean`` (the mean score
            of the domains present in that round), ``log_vocab`` (``log |V|``, the reference
            code) or a number.

    Raises:
        ValueError: an option outside its range (naming the ``strategy.*`` key).
    """

    default_steps_per_round = 1

    def __init__(
        self,
        reference: str | None = None,
        eta: float = 1.0,
        smoothing: float = 1e-3,
        clip: str = "token",
        mode: str = "reweight",
        proxy_mixture: str | Sequence[float] = "uniform",
        initial_score: str | float = "mean",
    ) -> None:
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"strategy.eta must be finite and >= 0, got {eta}")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"strategy.smoothing must be in [0, 1], got {smoothing}")
        if clip not in CLIPS:
            raise ValueError(f"strategy.clip must be one of {list(CLIPS)}, got {clip!r}")
        if mode not in MODES:
            raise ValueError(f"strategy.mode must be one of {list(MODES)}, got {mode!r}")
        if isinstance(proxy_mixture, str) and proxy_mixture not in ("uniform", "natural"):
            raise ValueError(
                "strategy.proxy_mixture must be uniform, natural or a list of weights, got "
                f"{proxy_mixture!r}"
            )
        if isinstance(initial_score, str) and initial_score not in ("mean", "log_vocab"):
            raise ValueError(
                f"strategy.initial_score must be mean, log_vocab or a number, got {initial_score!r}"
            )
        self.reference = reference
        self.eta = float(eta)
        self.smoothing = float(smoothing)
        self.clip = clip
        self.mode = mode
        self.proxy_mixture = proxy_mixture
        self.initial_score = initial_score
        # Instance-level: the loss hook is needed only when α re-weights the loss.
        self.needs = frozenset(
            {"reference_loss", "loss_weights"} if mode == "reweight" else {"reference_loss"}
        )
        #: Last score of every domain (``None`` until the first update).
        self.scores: np.ndarray | None = None

    # ------------------------------------------------------------------ mixture
    def setup(self, ctx: MixtureContext) -> None:
        super().setup(ctx)
        self._proxy = self._proxy_weights()

    def _proxy_weights(self) -> np.ndarray:
        m = self.ctx.num_domains
        if self.proxy_mixture == "uniform":
            return uniform(m)
        if self.proxy_mixture == "natural":
            sizes = np.asarray(self.ctx.domain_sizes, dtype=np.float64)
            return sizes / sizes.sum()
        w = np.asarray(list(self.proxy_mixture), dtype=np.float64)
        if w.shape != (m,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"strategy.proxy_mixture: need {m} finite weights >= 0, not all 0 (one per "
                f"domain: {self.ctx.domain_names}), got {list(self.proxy_mixture)}"
            )
        return w / w.sum()

    def apply(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``reweight``: (fixed proxy mixture, ``α`` as loss multipliers); else (``α``, None)."""
        if self.mode == "reweight":
            return self._proxy.copy(), np.asarray(weights, dtype=np.float64)
        return weights, None

    # ------------------------------------------------------------------ update
    def domain_scores(self, stats: RoundStats) -> np.ndarray:
        """This round's scores ``s`` (``[m]``; absent domains keep their last score).

        Raises:
            KeyError: no ``excess_loss`` in ``stats.extra`` (the reference service is missing).
            ValueError: a non-finite excess loss for a domain with tokens.
        """
        ex = stats.extra["excess_loss"]
        tokens = _np(ex["tokens"])
        raw = _np(ex["clipped"]) if self.clip == "token" else np.maximum(_np(ex["mean"]), 0.0)
        present = tokens > 0
        bad = present & ~np.isfinite(raw)
        if bad.any():
            names = [self.ctx.domain_names[i] for i in np.flatnonzero(bad)]
            raise ValueError(
                f"DoReMi: non-finite excess loss for domains {names} at step {stats.step} "
                f"(round {stats.round}): the model's or the reference model's "
                f"(strategy.reference={self.reference}) per-token losses are not finite; "
                "lower model.lr / set trainer.gradient_clip_val, or check the reference run"
            )
        if self.scores is None:
            self.scores = np.full(len(raw), np.nan)  # nan: not seen yet
        self.scores = np.where(present, raw, self.scores)
        return np.where(np.isnan(self.scores), self._unseen_score(raw, present, ex), self.scores)

    def _unseen_score(self, raw: np.ndarray, present: np.ndarray, ex: dict[str, Any]) -> float:
        """Score of a domain that has had no tokens yet (``strategy.initial_score``)."""
        if self.initial_score == "log_vocab":
            return math.log(float(ex["vocab_size"]))
        if self.initial_score == "mean":
            return float(raw[present].mean()) if present.any() else 0.0
        return float(self.initial_score)

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        s = self.domain_scores(stats)
        with np.errstate(divide="ignore"):  # a weight of exactly 0 (ε = 0) stays at 0
            logits = np.log(np.asarray(weights, dtype=np.float64)) + self.eta * s
        alpha = np.exp(logits - logits.max())
        alpha /= alpha.sum()
        m = len(alpha)
        return (1.0 - self.smoothing) * alpha + self.smoothing / m

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"scores": None if self.scores is None else self.scores.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scores = state.get("scores")
        self.scores = None if scores is None else np.asarray(scores, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["needs"] = sorted(self.needs)
        return out


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
