"""Checkpoint state and ``summary.json`` entries of the Balance callback.

Split from :mod:`rnb.balance.callback` (which conducts the rounds) because what a
checkpoint must hold for a bit-identical resume is a contract of its own: the mixture and
its trajectory, the round's accumulators (summed over ranks; rank 0 restores them), the
per-domain ledger, every service's, the strategy's, the sampler's, the meter's and the
detours' state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnb.balance.ledger import time_average

__all__ = ["BalanceState"]


class BalanceState:
    """Mixin of :class:`~rnb.balance.callback.BalanceCallback`: ``state_dict``,
    ``load_state_dict`` (loadable with ``weights_only=True``) and ``summary``."""

    # Attributes set by the callback (declared for type checkers).
    weights: np.ndarray | None
    round: int
    trajectory: list[dict[str, Any]]
    gq_norms: list[float]
    batches_seen: int
    _last_step: int
    rank_checks: int
    rank_spread: float
    steps_per_round: int
    stats: Any
    ledger: Any
    services: list[Any]
    strategy: Any
    sampler: Any
    meter: Any
    detours: Any
    gram_signal: Any
    _tail: dict[str, torch.Tensor] | None
    gram_paths: list[str]

    def _reduce_fn(self, trainer: Any) -> Any:  # provided by the callback
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer_ref", None)
        reduce_fn = self._reduce_fn(trainer) if trainer is not None else None
        # Accumulators are saved summed over ranks; on load rank 0 takes the sum and the
        # other ranks start from zero, so the next round's reduction is unchanged.
        rows = self.stats.reduced_all(reduce_fn)
        state: dict[str, Any] = {
            "weights": [float(x) for x in (self.weights if self.weights is not None else [])],
            "round": self.round,
            "trajectory": self.trajectory,
            "gram_paths": self.gram_paths,
            "gq_norms": self.gq_norms,
            "batches_seen": self.batches_seen,
            "last_step": self._last_step,
            "rank_checks": self.rank_checks,
            "rank_spread": self.rank_spread,
            "stats": {**rows, "skipped_nonfinite": self.stats.skipped_nonfinite},
            "ledger": self.ledger.state_dict(),
            "services": [s.state_dict() for s in self.services],
            "strategy": self.strategy.state_dict(),
            "sampler": self.sampler.state_dict(consumed_batches=self.batches_seen),
            "meter": self.meter.state_dict(),
            "detours": self.detours.state_dict(),
        }
        if self.gram_signal is not None:
            state["capture"] = self.gram_signal.state_dict(reduce_fn)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank0 = getattr(self, "_rank", 0) == 0
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.round = int(state["round"])
        self.trajectory = list(state["trajectory"])
        if self.gram_signal is not None:
            self.gram_signal.paths = list(state["gram_paths"])
        self.gq_norms = list(state["gq_norms"])
        self.batches_seen = int(state["batches_seen"])
        self._last_step = int(state["last_step"])
        self.rank_checks = int(state.get("rank_checks", 0))
        self.rank_spread = float(state.get("rank_spread", 0.0))
        stats = state["stats"]
        if not rank0:
            stats = {k: v * 0 if isinstance(v, torch.Tensor) else v for k, v in stats.items()}
        self.stats.load_state_dict(stats)
        self.ledger.load_state_dict(state["ledger"])
        for service, s_state in zip(self.services, state["services"], strict=True):
            service.load_state_dict(s_state)
        self.strategy.load_state_dict(state["strategy"])
        self.sampler.load_state_dict(state["sampler"])
        self.meter.load_state_dict(state.get("meter", {}))
        self.detours.load_state_dict(state.get("detours", {}))
        if self.gram_signal is not None and "capture" in state:
            self.gram_signal.load_state_dict(state["capture"], rank0)

    def summary(self) -> dict[str, Any]:
        """Mixture-related entries of ``summary.json``."""
        tail = self._tail or {}
        out: dict[str, Any] = {
            "weights_trajectory": self.trajectory,
            "final_weights": [float(x) for x in self.weights] if self.weights is not None else None,
            # the time average ᾱ (DoReMi/DoGE's output; strategy=static strategy.average=true)
            "average_weights": time_average(self.trajectory, self._last_step),
            "steps_per_round": self.steps_per_round,
            **self.ledger.summary(
                None if "drawn" not in tail else tail["drawn"].numpy(),
                None if "tokens" not in tail else tail["tokens"].numpy(),
            ),
            "rounds": self.round,
            "gram_rounds": self.gram_paths,
            # R&B: ``‖G q‖₂`` of each round's update (method.md §Stage 2); [] for other strategies
            "gq_norms": [float(x) for x in self.gq_norms],
            "skipped_nonfinite": self.stats.skipped_nonfinite
            + (self.gram_signal.skipped_nonfinite if self.gram_signal is not None else 0),
            "balance_memory_bytes": self.gram_signal.memory_bytes()
            if self.gram_signal is not None
            else 0,
            # max |p_rank - p_rank0| over rounds (DDP); 0 in single-process runs
            "rank_weight_spread": float(self.rank_spread),
            # mixtures compared across ranks (DDP: one per round and per detour result; else 0)
            "rank_checks": int(self.rank_checks),
            # probe evaluations and training steps of detours (rnb.balance.detours)
            "detours": self.detours.summary() if hasattr(self, "detours") else None,
        }
        return out
