"""Adopting a strategy's mixture: the checks every new ``p`` passes, and its trajectory.

Split from :mod:`rnb.balance.callback` (which conducts the rounds) because what makes a
mixture acceptable is a contract of its own: on the probability simplex, of the run's domain
count, and equal on every rank (the statistics are reduced before every update, so a spread
means a reduction was missed). A check that never ran is told apart from one that passed by
``rank_checks``, which ``summary.json`` reports.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

__all__ = ["MixtureAdoption"]


class MixtureAdoption:
    """Mixin of :class:`~rnb.balance.callback.BalanceCallback`: ``_accept``,
    ``_check_ranks_agree`` and ``_record``."""

    # Attributes set by the callback (declared for type checkers).
    strategy: Any
    weights: np.ndarray | None
    trajectory: list[dict[str, Any]]
    rank_checks: int
    rank_spread: float

    def _accept(self, trainer: L.Trainer, new: np.ndarray, source: str) -> None:
        """Check a strategy's mixture (simplex; equal on every rank) and adopt it.

        Raises:
            RuntimeError: ``new`` is off the simplex (wrong shape, sum not 1, a negative
                entry), naming ``<Strategy>.<source>``; or it differs across ranks.
        """
        assert self.weights is not None
        if new.shape != self.weights.shape or not np.isclose(new.sum(), 1.0) or (new < 0).any():
            raise RuntimeError(
                f"{type(self.strategy).__name__}.{source} returned off-simplex weights {new}"
            )
        if trainer.world_size > 1:
            self._check_ranks_agree(trainer, new)
        self.weights = new

    def _check_ranks_agree(self, trainer: L.Trainer, p: np.ndarray) -> None:
        """Every rank must hold the same mixture (statistics are reduced before updating).

        Raises:
            RuntimeError: ``max_r |p_r − p_0| > 1e-9`` over the gathered ``[world, m]``.
        """
        gathered = trainer.strategy.all_gather(torch.as_tensor(p, dtype=torch.float64))
        spread = float((gathered - gathered[0]).abs().max())
        # Counted so a test can tell "checked and equal" from "never checked" (spread 0 both).
        self.rank_checks += 1
        self.rank_spread = max(self.rank_spread, spread)
        if spread > 1e-9:
            raise RuntimeError(
                f"mixture differs across ranks by {spread:.3e}: stats were not reduced"
            )

    def _record(self, step: int) -> None:
        """Append the current mixture to the trajectory at optimizer step ``step``."""
        assert self.weights is not None
        self.trajectory.append({"step": int(step), "weights": [float(x) for x in self.weights]})
