"""``dga``: Dynamic Gradient Alignment (Fan, Grangier, Ablin 2024).

Every round of ``T_r = balance.steps_per_round`` steps the gradient probe
(:mod:`rnb.balance.services.gradient_probe`) computes one batch gradient per domain ``g_i``
and one of the target ("specific") set ``g_tgt`` (``target: eval`` = the eval probe subset,
``file`` = ``balance.probe.target_path``). Then (paper §3, exponentiated gradient on the
alignment of each domain with the target)::

    step = eta · lr_t / mu   (lr_scaled: true)      or   eta   (lr_scaled: false)
    α̂   = softmax(log α + step · <g_i, g_tgt>)
    α   = ema · α_prev + (1 − ema) · α̂               (ema: null = α̂)

and the next round samples with ``α`` (online resampling).

No official code is public. Defaults follow the closest public code by the same first
author (the multi-target GRAPE repository): ``log α_i += lr_t · <g_i, g_tgt> / μ`` with
``lr_t`` the current learning rate and ``μ = 1e-3``, 16 examples per domain batch
(``balance.probe.batch_size``), no normalisation or clipping of the gradients.

Could not be confirmed from the paper (all exposed as keys): the step size ``η`` and
whether it follows the learning rate (``eta``, ``lr_scaled``, ``mu``); the update period
``T_r`` (GRAPE: 10, its configs 100; here ``balance.steps_per_round``, default 20); the
form and weight ``β`` of the EMA on the weights (here on ``α`` after the softmax, the
smoothed weights being the next step's ``α``); the size of the target batch.

rnb choices: a domain absent from the probe keeps its weight; a round with non-finite
gradients keeps ``α`` (logged, counted in ``skipped_rounds``); the probe runs in eval mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnb.balance.strategies.alignment import (
    exponentiated_step,
    read_grad_signal,
    skip_nonfinite,
)
from rnb.balance.strategies.base import MixingStrategy, RoundStats

__all__ = ["DGA"]


class DGA(MixingStrategy):
    """DGA domain weights (see the module docstring).

    Args:
        eta: step size ``η`` of the exponentiated-gradient update.
        mu: ``μ > 0``; with ``lr_scaled`` the step is ``η · lr_t / μ``.
        lr_scaled: scale the step by the current learning rate over ``μ`` (GRAPE).
        ema: ``β`` in ``[0, 1)`` of an EMA on the weights; ``null`` = off.
        target: ``eval`` (the eval probe subset) or ``file`` (``balance.probe.target_path``).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"domain_grads", "target_grad"})

    def __init__(
        self,
        eta: float = 1.0,
        mu: float = 1e-3,
        lr_scaled: bool = True,
        ema: float | None = None,
        target: str = "eval",
    ) -> None:
        if not (np.isfinite(eta) and eta >= 0):
            raise ValueError(f"strategy.eta must be a finite number >= 0, got {eta}")
        if not (np.isfinite(mu) and mu > 0):
            raise ValueError(f"strategy.mu must be a finite number > 0, got {mu}")
        if ema is not None and not 0.0 <= float(ema) < 1.0:
            raise ValueError(f"strategy.ema must be in [0, 1) or null, got {ema}")
        if target not in ("eval", "file"):
            raise ValueError(f"strategy.target='{target}': choose eval or file")
        self.eta = float(eta)
        self.mu = float(mu)
        self.lr_scaled = bool(lr_scaled)
        self.ema = None if ema is None else float(ema)
        self.target = target
        self.skipped_rounds = 0
        self.last_alignment: list[float] | None = None

    def step_size(self, lr: float) -> float:
        """The log-space step per unit of alignment: ``η·lr_t/μ`` or ``η``."""
        return self.eta * lr / self.mu if self.lr_scaled else self.eta

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        """One DGA step from the round's probe gradients."""
        sig = read_grad_signal(stats, True, "DGA")
        if not sig.finite():
            self.skipped_rounds += 1
            skip_nonfinite("DGA", stats.round)
            return weights
        assert sig.target is not None
        self.last_alignment = [float(x) for x in sig.target]
        new = exponentiated_step(weights, self.step_size(sig.lr) * sig.target, sig.present)
        if self.ema is not None:
            new = self.ema * np.asarray(weights, dtype=np.float64) + (1.0 - self.ema) * new
        return new / new.sum()

    def state_dict(self) -> dict[str, Any]:
        """Counters (the weights themselves live in the callback)."""
        return {"skipped_rounds": self.skipped_rounds, "last_alignment": self.last_alignment}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.skipped_rounds = int(state.get("skipped_rounds", 0))
        self.last_alignment = state.get("last_alignment")
