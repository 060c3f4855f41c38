"""``static``: fixed weights from the config or from a previous run's ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, RoundStats


class Static(MixingStrategy):
    """Fixed mixture.

    Args:
        weights: a list (one entry per domain, in domain order) or a mapping
            ``{domain name: weight}`` (missing domains get 0); normalised to sum 1.
        from_summary: path of a previous run's ``summary.json``; its weights are used
            when ``weights`` is unset.
        average: with ``from_summary``, use the trajectory's time-average (as DoReMi
            and DoGE prescribe) instead of the final weights.
    """

    static = True

    def __init__(
        self,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        from_summary: str | None = None,
        average: bool = False,
    ) -> None:
        if weights is None and from_summary is None:
            raise ValueError("strategy.weights or strategy.from_summary must be set for `static`")
        self.weights = weights
        self.from_summary = from_summary
        self.average = average

    def _resolve(self) -> tuple[list[str] | None, np.ndarray]:
        if self.weights is not None:
            if isinstance(self.weights, Mapping):
                names = list(self.weights)
                return names, np.array([float(self.weights[n]) for n in names])
            return None, np.asarray(list(self.weights), dtype=np.float64)
        path = Path(self.from_summary)
        if not path.exists():
            raise FileNotFoundError(f"strategy.from_summary='{path}' does not exist")
        summary = json.loads(path.read_text())
        traj = summary.get("weights_trajectory") or []
        if not traj:
            raise ValueError(f"strategy.from_summary='{path}' has an empty weights_trajectory")
        w = np.asarray([t["weights"] for t in traj], dtype=np.float64)
        return list(summary["domains"]), (w.mean(axis=0) if self.average else w[-1])

    def initial_weights(self) -> np.ndarray:
        names, w = self._resolve()
        m = self.ctx.num_domains
        if names is not None:
            unknown = sorted(set(names) - set(self.ctx.domain_names))
            if unknown:
                raise ValueError(
                    f"strategy weights name unknown domains {unknown}; domains are {self.ctx.domain_names}"
                )
            lookup = dict(zip(names, w, strict=True))
            w = np.array([lookup.get(n, 0.0) for n in self.ctx.domain_names])
        if w.shape != (m,):
            raise ValueError(
                f"strategy.weights: expected {m} weights (one per domain), got {w.shape[0]}"
            )
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"strategy.weights must be finite, >= 0, not all 0; got {w.tolist()}")
        return w / w.sum()

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return np.asarray(weights)
