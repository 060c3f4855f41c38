"""``doge``: DoGE — domain reweighting by generalization estimation (Fan et al. 2024).

Per round, from the gradient probe's per-domain gradients ``g_i`` (one extra batch per
domain, :mod:`rnb.balance.services.gradient_probe`):

1. each ``g_i`` (and the target gradient) is clipped to norm ``clip_norm`` (5; the
   reference code's ``clip_grad_norm_`` per domain backward);
2. score ``s_i = η_t Σ_{j≠i} <g_i, g_j>`` when the target is the training mix
   (``target: train``, the paper's universal-generalization setting, §3: the diagonal is
   dropped), or ``s_i = η_t <g_i, g_tgt>`` for an explicit target set (``target: eval``
   or ``file``, out-of-domain setting), ``η_t`` the current learning rate;
3. ``s ← s / (mean_i ‖g_i‖ + eps)`` — the mean norm of the *clipped training-domain*
   gradients, as in the reference code (``flat_grad_mat[:-1].norm(dim=-1).mean()``);
4. ``s ← clip(s, η_t·score_clip[0], η_t·score_clip[1])`` (reference ``dw_min=0``,
   ``dw_max=5``);
5. ``α ← softmax(log α + s/μ)``, ``μ = 0.01`` (paper Alg. 1 / reference ``doge_mu``).

The proxy model steps along ``Σ_i α_i g_i``: with ``mode: reweight`` (default) batches are
sampled uniformly and ``α`` multiplies the per-domain training losses (the model hook of
:mod:`rnb.models.weighting`, normalised by the ``α`` of the domains present in the batch).
``mode: resample`` samples with ``α`` instead (an online variant). The output for a final
run is ``summary.json`` ``average_weights`` (the time-averaged ``ᾱ``, as DoGE reports).

Deviations from the reference code (documented choices, not bugs):

* the reference splits each *training* batch by domain and updates ``α`` every step; here
  the per-domain gradients come from separate probe batches (``balance.probe.batch_size``
  per domain) once per round of ``balance.steps_per_round`` steps, so the cost is ``m``
  (+1 with a target) forward/backward passes per round instead of per step;
* the probe runs in eval mode (no dropout; the reference uses train mode) and takes the
  mean over examples of token-mean losses (the reference: token mean over the domain);
* a domain absent from the probe (no training examples) keeps its weight (the reference
  scores it 0, the clip floor, so it loses weight); the mean norm is over present domains;
* a round with non-finite gradients keeps ``α`` (logged, counted in ``skipped_rounds``);
* the re-weighted loss divides by ``Σ α_i`` of the domains in the batch (see
  :func:`rnb.models.weighting.domain_weighted_mean`);
* the reference's optional smoothing ``(1-ε)α + ε/m`` (``reweight_eps``, 0 by default) is
  not exposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnb.balance.strategies.alignment import (
    exponentiated_step,
    read_grad_signal,
    skip_nonfinite,
)
from rnb.balance.strategies.base import MixingStrategy, RoundStats, uniform

__all__ = ["DoGE", "doge_scores"]


def doge_scores(
    gram: np.ndarray,
    present: np.ndarray,
    lr: float,
    clip_norm: float | None = 5.0,
    score_clip: Sequence[float] = (0.0, 5.0),
    target: np.ndarray | None = None,
    target_sq: float | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """DoGE's per-domain scores ``s`` (steps 1–4 of the module docstring).

    Args:
        gram: ``[m, m]`` raw ``<g_i, g_j>``.
        present: ``[m]`` bool; absent domains score 0 and are left out of the sums/means.
        lr: ``η_t``.
        clip_norm: per-gradient norm cap (``None`` = no clipping).
        score_clip: ``(lo, hi)``: scores are clipped to ``[η_t·lo, η_t·hi]``.
        target: ``[m]`` raw ``<g_i, g_tgt>``; ``None`` = target is the training mix.
        target_sq: ``‖g_tgt‖²`` (needed with ``target``).
        eps: added to the mean norm (reference ``1e-6``): zero gradients give zero scores.

    Returns:
        ``[m]`` float64 scores (0 where absent).
    """
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    scale = _clip_scale(norms, clip_norm)
    clipped = gram * scale[:, None] * scale[None, :]
    if target is None:
        mask = present[None, :] & ~np.eye(len(present), dtype=bool)
        raw = (clipped * mask).sum(axis=1)
    else:
        t_norm = float(np.sqrt(max(target_sq or 0.0, 0.0)))
        raw = target * scale * _clip_scale(np.array([t_norm]), clip_norm)[0]
    mean_norm = float((norms * scale)[present].mean()) if present.any() else 0.0
    s = lr * raw / (mean_norm + eps)
    s = np.clip(s, lr * float(score_clip[0]), lr * float(score_clip[1]))
    return np.where(present, s, 0.0)


def _clip_scale(norms: np.ndarray, clip_norm: float | None) -> np.ndarray:
    """``min(1, c/‖g‖)`` per gradient (``clip_grad_norm_``'s factor; 1 for a zero gradient)."""
    if clip_norm is None:
        return np.ones_like(norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > clip_norm, clip_norm / norms, 1.0)


class DoGE(MixingStrategy):
    """DoGE domain weights from probe gradients (see the module docstring).

    Args:
        target: ``train`` (generalise to the training mix, diagonal removed), ``eval``
            (the eval probe subset's gradient) or ``file`` (``balance.probe.target_path``).
        mode: ``reweight`` (uniform sampling, ``α`` as loss multipliers; the paper's proxy)
            or ``resample`` (sample with ``α``, plain loss).
        mu: ``μ > 0``, the softmax temperature of the update.
        clip_norm: norm cap of each gradient (``null`` = off).
        score_clip: ``[lo, hi]``; scores clipped to ``[η_t·lo, η_t·hi]``.
        eps: added to the mean gradient norm.
    """

    def __init__(
        self,
        target: str = "train",
        mode: str = "reweight",
        mu: float = 0.01,
        clip_norm: float | None = 5.0,
        score_clip: Sequence[float] = (0.0, 5.0),
        eps: float = 1e-6,
    ) -> None:
        if target not in ("train", "eval", "file"):
            raise ValueError(f"strategy.target='{target}': choose one of train, eval, file")
        if mode not in ("reweight", "resample"):
            raise ValueError(f"strategy.mode='{mode}': choose reweight or resample")
        if not (np.isfinite(mu) and mu > 0):
            raise ValueError(f"strategy.mu must be a finite number > 0, got {mu}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"strategy.clip_norm must be > 0 or null, got {clip_norm}")
        lo, hi = (float(x) for x in score_clip)
        if not lo <= hi:
            raise ValueError(f"strategy.score_clip=[lo, hi] needs lo <= hi, got {[lo, hi]}")
        if not eps >= 0:
            raise ValueError(f"strategy.eps must be >= 0, got {eps}")
        self.target = target
        self.mode = mode
        self.mu = float(mu)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.score_clip = [lo, hi]
        self.eps = float(eps)
        self.skipped_rounds = 0
        self.last_scores: list[float] | None = None

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        """``domain_grads`` (+ ``target_grad`` with a target set, + ``loss_weights`` when
        re-weighting)."""
        needs = {"domain_grads"}
        if self.target != "train":
            needs.add("target_grad")
        if self.mode == "reweight":
            needs.add("loss_weights")
        return frozenset(needs)

    def apply(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``reweight``: (uniform sampling, ``α`` loss multipliers); ``resample``: (``α``, None)."""
        if self.mode == "resample":
            return weights, None
        return uniform(len(weights)), weights

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        """One DoGE step from the round's probe gradients."""
        sig = read_grad_signal(stats, self.target != "train", "DoGE")
        if not sig.finite():
            self.skipped_rounds += 1
            skip_nonfinite("DoGE", stats.round)
            return weights
        s = doge_scores(
            sig.gram,
            sig.present,
            sig.lr,
            self.clip_norm,
            self.score_clip,
            sig.target,
            sig.target_sq,
            self.eps,
        )
        self.last_scores = [float(x) for x in s]
        return exponentiated_step(weights, s / self.mu, sig.present)

    def state_dict(self) -> dict[str, Any]:
        """Counters (the weights themselves live in the callback)."""
        return {"skipped_rounds": self.skipped_rounds, "last_scores": self.last_scores}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.skipped_rounds = int(state.get("skipped_rounds", 0))
        self.last_scores = state.get("last_scores")
