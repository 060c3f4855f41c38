"""Aioli's LearnParams arithmetic (Chen et al. 2024, "Aioli: A Unified Optimization
Framework for Language Model Data Mixing", arXiv:2411.05735, Alg. 2 and §4; reference code
github.com/HazyResearch/aioli, ``trainer/aioli_trainer.py``).

Sweep ``j`` trains on the perturbed mixture ``P_j`` (mass ``f`` on domain ``j``,
``(1 − f)/(m − 1)`` on each other domain); under Aioli's linear mixing law the loss drop of
domain ``i`` is ``D_ij = Σ_k A_ik P_jk``, i.e. ``D = A Pᵀ``. Un-mixing solves it for ``A``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["aioli_scores", "ema_graph", "normalize_graph", "perturbation_matrix", "unmix"]


def perturbation_matrix(m: int, f: float) -> np.ndarray:
    """``P [m, m]``: row ``j`` is the mixture of sweep ``j`` (``f`` on ``j``, the rest even).

    Raises:
        ValueError: ``f`` outside ``(1/m, 1]`` (the matrix would be singular or not a
            perturbation towards ``j``; the message names ``strategy.one_hot_factor``).
    """
    if m == 1:
        return np.ones((1, 1))
    if not 1.0 / m < f <= 1.0:
        raise ValueError(
            f"strategy.one_hot_factor must be in (1/m, 1] = ({1.0 / m:.4g}, 1], got {f}"
        )
    P = np.full((m, m), (1.0 - f) / (m - 1))
    np.fill_diagonal(P, f)
    return P


def unmix(drops: np.ndarray, f: float, mode: str = "solve") -> np.ndarray:
    """``A`` from the averaged loss drops ``D [m, m]`` (row: evaluated domain, column: sweep).

    Args:
        drops: ``D_ij`` = drop of domain ``i``'s loss over the sweep that favoured ``j``.
        f: the perturbation mass (``strategy.one_hot_factor``); ``f = 1`` needs no un-mixing.
        mode: ``"solve"`` (``A_i = P⁻¹ D_i`` for every row, the exact inverse of ``D = A Pᵀ``)
            or ``"diagonal"`` (Aioli's shortcut: ``A_ii = D_ii / f``, zero elsewhere).

    Returns:
        ``A [m, m]``.
    """
    m = drops.shape[0]
    if mode == "diagonal":
        return np.diag(np.diag(drops) / f)
    if mode != "solve":
        raise ValueError(f"strategy.unmix must be 'solve' or 'diagonal', got {mode!r}")
    if f == 1.0:
        return drops.copy()
    P = perturbation_matrix(m, f)
    return np.linalg.solve(P, drops.T).T


def normalize_graph(A: np.ndarray) -> np.ndarray:
    """Shift to non-negative (subtract the minimum entry when it is negative), divide by the
    sum (reference ``--aioli_normalize_A``); an all-zero matrix stays zero."""
    out = A - min(0.0, float(A.min()))
    total = float(out.sum())
    return out / total if total > 0 else out


def ema_graph(previous: np.ndarray | None, new: np.ndarray, gamma: float) -> np.ndarray:
    """``Ā_t = (1 − γ) A_t + γ Ā_{t−1}`` (reference code: ``γ`` weighs the past; the first
    round takes ``A_1``)."""
    return new.copy() if previous is None else (1.0 - gamma) * new + gamma * previous


def aioli_scores(A: np.ndarray, eta: float) -> np.ndarray:
    """``η · 1ᵀ A``: how much training on each domain lowers all losses (column sums)."""
    return eta * A.sum(axis=0)
