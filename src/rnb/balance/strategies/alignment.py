"""Shared pieces of the gradient-alignment strategies (DoGE, DGA).

Both read the gradient probe's signals (:mod:`rnb.balance.services.gradient_probe`) and take
an exponentiated-gradient step ``α ← softmax(log α + step)`` on the domains the probe saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from rnb.balance.strategies.base import RoundStats

__all__ = ["GradSignal", "exponentiated_step", "read_grad_signal", "skip_nonfinite"]

log = logging.getLogger(__name__)


@dataclass
class GradSignal:
    """Inner products of one round's probe gradients, float64 on the host.

    Attributes:
        gram: ``[m, m]`` ``<g_i, g_j>`` of the domain gradients.
        target: ``[m]`` ``<g_i, g_tgt>`` (``None`` without a target gradient).
        target_sq: ``‖g_tgt‖²`` (``None`` without a target gradient).
        present: ``[m]`` bool, domains the probe had examples of.
        lr: the optimizer's current learning rate ``η_t``.
    """

    gram: np.ndarray
    target: np.ndarray | None
    target_sq: float | None
    present: np.ndarray
    lr: float

    def finite(self) -> bool:
        """All inner products (and ``η_t``) are finite."""
        parts = [self.gram, np.asarray(self.lr)]
        if self.target is not None:
            parts += [self.target, np.asarray(self.target_sq)]
        return all(np.isfinite(p).all() for p in parts)


def read_grad_signal(stats: RoundStats, need_target: bool, strategy: str) -> GradSignal:
    """Gram matrix (and target products) of the round's probe gradients.

    Products are taken in the probe's fp32 on its device (``m × P`` stays there) and
    returned in float64.

    Raises:
        KeyError: the round carries no ``domain_grads`` / ``target_grad`` / ``lr``
            (the strategy's ``needs`` and the services disagree).
    """
    extra = stats.extra
    for key in ("domain_grads", "grad_present") + (("target_grad",) if need_target else ()):
        if key not in extra:
            raise KeyError(f"{strategy}: RoundStats.extra has no '{key}' (gradient probe missing)")
    if extra.get("lr") is None:
        raise KeyError(f"{strategy}: RoundStats.extra['lr'] is missing (no optimizer?)")
    grads: torch.Tensor = extra["domain_grads"]
    gram = (grads @ grads.T).double().cpu().numpy()
    target = target_sq = None
    if need_target:
        tgt: torch.Tensor = extra["target_grad"]
        target = (grads @ tgt).double().cpu().numpy()
        target_sq = float(tgt.double() @ tgt.double())
    present = np.asarray(torch.as_tensor(extra["grad_present"]).cpu(), dtype=bool)
    return GradSignal(gram, target, target_sq, present, float(extra["lr"]))


def exponentiated_step(weights: np.ndarray, step: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``α_i ← α_i e^{s_i} / Σ_j α_j e^{s_j}`` over the present domains.

    Absent domains keep their weight exactly (nothing was measured for them); the present
    ones share the rest of the mass. Computed in log space (a stable softmax).

    Args:
        weights: ``[m]`` current ``α`` (on the simplex).
        step: ``[m]`` log-space increments ``s`` (ignored where absent).
        present: ``[m]`` bool.

    Returns:
        ``[m]`` float64 on the simplex.
    """
    w = np.asarray(weights, dtype=np.float64).copy()
    mass = w[present].sum()
    if not present.any() or mass <= 0:
        return w
    with np.errstate(divide="ignore"):  # a zero weight stays zero (log 0 = -inf)
        logits = np.log(w[present]) + np.asarray(step, dtype=np.float64)[present]
    logits -= logits.max()
    e = np.exp(logits)
    w[present] = mass * e / e.sum()
    return w / w.sum()


def skip_nonfinite(strategy: str, round_: int) -> None:
    """Log the documented skip of a round whose gradients are not finite."""
    log.warning(
        "%s: round %d's probe gradients are not finite (inf/nan); the mixture is kept. "
        "Lower model.lr or set trainer.gradient_clip_val if this repeats",
        strategy,
        round_,
    )
