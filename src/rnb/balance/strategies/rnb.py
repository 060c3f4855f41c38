"""``rnb``: the R&B Balance step — softmax of the Gram matrix times the objective.

Per round (method.md §Stage 2): ``G_ij = <g_i, g_j> / (n_i n_j)`` from the per-domain
final-layer gradient sums the callback captured, then ``p = softmax(λ · Gq / ‖Gq‖)``
(``form="normalized"``, Alg. 1) or ``softmax(λ · Gq)`` (``"unnormalized"``, Alg. 3). The
new ``p`` overwrites the old one.

A domain not sampled in a round has a zero row and column in ``G`` (the paper's definition,
``unsampled="zero"``): at a large ``λ`` such a domain gets almost no mass and, never drawn,
never produces the gradient that could bring it back (``summary.json`` ``starved_domains``
lists it). ``unsampled="carry"`` reuses its last observed row and column instead
(:func:`rnb.balance.rnb_math.carry_gram`) — a deviation from the paper, off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from rnb.balance.rnb_math import carry_gram, ema, normalize_gram, rnb_weights
from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats

__all__ = ["RnB"]


class RnB(MixingStrategy):
    """R&B mixing from the Gram matrix of per-domain final-layer gradients.

    Args:
        lambda_: temperature ``λ > 0`` (``strategy.lambda_``); small → near uniform,
            large → mass on the domain best aligned with the objective.
        objective: ``"eval_proportions"`` (``q`` = share of eval examples per domain,
            default), ``"uniform"``, or an explicit vector (one weight per domain).
        form: ``"normalized"`` (Alg. 1) or ``"unnormalized"`` (Alg. 3, ablation).
        gram_ema: if set, ``G`` is an exponential moving average with this weight on the
            past (``0 <= β < 1``); off by default (the paper uses each round's ``G``).
        min_weight: floor on every domain's weight (mixed with uniform); 0 = off.
        unsampled: ``"zero"`` (paper: a domain unsampled in a round has a zero Gram row and
            column) or ``"carry"`` (reuse its last observed row and column while unsampled).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"gram"})

    def __init__(
        self,
        lambda_: float = 3.0,
        objective: str | Sequence[float] = "eval_proportions",
        form: str = "normalized",
        gram_ema: float | None = None,
        min_weight: float = 0.0,
        unsampled: str = "zero",
    ) -> None:
        if not (float(lambda_) >= 0 and np.isfinite(lambda_)):
            raise ValueError(f"strategy.lambda_ must be a finite number >= 0, got {lambda_}")
        if form not in ("normalized", "unnormalized"):
            raise ValueError(f"strategy.form must be 'normalized' or 'unnormalized', got {form!r}")
        if isinstance(objective, str) and objective not in ("eval_proportions", "uniform"):
            raise ValueError(
                "strategy.objective must be 'eval_proportions', 'uniform' or a list of weights, "
                f"got {objective!r}"
            )
        if gram_ema is not None and not 0.0 <= float(gram_ema) < 1.0:
            raise ValueError(f"strategy.gram_ema must be in [0, 1) or null, got {gram_ema}")
        if not 0.0 <= float(min_weight) < 1.0:
            raise ValueError(f"strategy.min_weight must be in [0, 1), got {min_weight}")
        if unsampled not in ("zero", "carry"):
            raise ValueError(f"strategy.unsampled must be 'zero' or 'carry', got {unsampled!r}")
        self.lambda_ = float(lambda_)
        self.objective = objective if isinstance(objective, str) else [float(x) for x in objective]
        self.form = form
        self.gram_ema = None if gram_ema is None else float(gram_ema)
        self.min_weight = float(min_weight)
        self.unsampled = unsampled
        self._G: torch.Tensor | None = None
        self._last: torch.Tensor | None = None  # unsampled=carry: last observed G entries
        self.kept_previous = 0
        self.last_gq_norm: float | None = None

    def setup(self, ctx: MixtureContext) -> None:
        super().setup(ctx)
        m = ctx.num_domains
        if self.objective == "eval_proportions":
            q = np.asarray(ctx.eval_proportions, dtype=np.float64)
        elif self.objective == "uniform":
            q = np.full(m, 1.0 / m)
        else:
            q = np.asarray(self.objective, dtype=np.float64)
            if q.shape != (m,) or (q < 0).any() or q.sum() <= 0:
                raise ValueError(
                    f"strategy.objective: need {m} non-negative weights (one per domain "
                    f"{ctx.domain_names}), got {self.objective}"
                )
        if self.min_weight * m > 1.0:
            raise ValueError(f"strategy.min_weight={self.min_weight} x {m} domains exceeds 1")
        self.q = torch.as_tensor(q / q.sum(), dtype=torch.float64)

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        if stats.gram is None:
            raise RuntimeError(
                "rnb strategy needs the Gram matrix; the callback did not capture it"
            )
        counts = stats.extra.get("gram_counts", stats.counts)
        G = normalize_gram(stats.gram.cpu(), counts.cpu())
        if self.unsampled == "carry":
            G, self._last = carry_gram(G, counts.cpu(), self._last)
        if self.gram_ema is not None:
            G = ema(self._G, G, self.gram_ema)
            self._G = G
        result = rnb_weights(
            G,
            self.q,
            self.lambda_,
            form=self.form,
            prev=torch.as_tensor(weights, dtype=torch.float64),
            min_weight=self.min_weight,
        )
        self.last_gq_norm = result.gq_norm
        self.kept_previous += int(result.kept_previous)
        return result.p.cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self._G.clone() if self._G is not None else torch.empty(0),
            "kept_previous": self.kept_previous,
            "last": self._last.clone() if self._last is not None else torch.empty(0),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        G = state.get("G")
        self._G = G.to(torch.float64) if G is not None and G.numel() else None
        self.kept_previous = int(state.get("kept_previous", 0))
        last = state.get("last")
        self._last = last.to(torch.float64) if last is not None and last.numel() else None
