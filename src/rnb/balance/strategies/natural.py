"""``natural``: sample proportionally to domain size, with a temperature."""

from __future__ import annotations

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, RoundStats


class Natural(MixingStrategy):
    """``p_i ∝ |D_i|^(1/τ)``: ``τ = 1`` is size-proportional, ``τ → ∞`` uniform.

    Args:
        temperature: ``τ > 0`` (``strategy.temperature``).
    """

    static = True

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"strategy.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def initial_weights(self) -> np.ndarray:
        sizes = np.asarray(self.ctx.domain_sizes, dtype=np.float64)
        # log-space so large sizes with small temperatures cannot overflow
        logits = np.log(sizes) / self.temperature
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return self.initial_weights()
