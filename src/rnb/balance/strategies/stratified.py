"""``stratified``: uniform 1/m over domains (the paper's main baseline)."""

from __future__ import annotations

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, RoundStats, uniform


class Stratified(MixingStrategy):
    """Always ``p = 1/m``."""

    static = True

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return uniform(self.ctx.num_domains)
