"""``unimax``: uniform over domains within the run's budget, capped at ``N`` epochs each.

Chung et al. 2023 ("UniMax: Fairer and More Effective Language Sampling for Large-Scale
Multilingual Pretraining", §3, Algorithm 1): given the training budget ``B`` and a cap of
``N`` epochs per domain, visit the domains from smallest to largest and give each
``min(remaining budget / remaining domains, N · size_i)``; a domain that hits its cap
hands the rest of its share to the larger ones. ``p_i`` is its share of ``B``. Uniform when
every domain is large enough; a small domain is never repeated more than ``N`` times.
Static and free: computed once from the DataModule's domain sizes.

**Units** (``unit``). The paper allocates tokens (characters of each language). Our sampler
draws *examples* with probability ``p``, and the run's budget is known in examples
(``trainer.max_steps ×`` global batch = ``MixtureContext.example_budget``):

* ``tokens`` (default, the paper's unit): a domain's allocation is measured in loss-bearing
  tokens (``MixtureContext.domain_tokens``), so domains with long examples do not get more
  tokens than the others. With ``t̄_i`` the mean tokens per example of domain ``i``,
  allocating ``b_i`` tokens costs ``b_i / t̄_i`` examples; the smallest-first loop fills a
  common token level ``L`` with ``Σ_i min(L, N·tokens_i) / t̄_i = B`` (examples), exactly
  (no conversion of the budget through an assumed tokens-per-example).
* ``examples``: the same loop on example counts (``t̄_i = 1``): uniform over examples.

``p_i = e_i / Σ e_j`` with ``e_i`` the examples allocated to domain ``i``. When the budget
exceeds ``N`` epochs of every domain, each gets its cap and ``p ∝`` the caps (the repeats then
necessarily exceed ``N``; logged as a warning).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, RoundStats

__all__ = ["UniMax", "unimax_allocation"]

log = logging.getLogger(__name__)

_UNITS = ("tokens", "examples")


def unimax_allocation(
    sizes: np.ndarray, budget: float, max_epochs: float, cost: np.ndarray | None = None
) -> np.ndarray:
    """UniMax Algorithm 1: per-domain allocation in the units of ``sizes``.

    Args:
        sizes: ``[m]`` domain sizes (tokens or examples), ``> 0``.
        budget: what the run can spend, in the units of ``cost`` (``> 0``).
        max_epochs: ``N``, the cap is ``N · sizes_i``.
        cost: ``[m]`` budget spent per unit of size (examples per token, ``1/t̄_i``);
            ``None`` = 1 (budget and sizes in the same unit).

    Returns:
        float64 ``[m]`` allocations ``a_i <= N · sizes_i`` in the units of ``sizes`` with
        ``Σ a_i cost_i = budget`` unless every domain is capped.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    cost = np.ones_like(sizes) if cost is None else np.asarray(cost, dtype=np.float64)
    alloc = np.zeros_like(sizes)
    remaining = float(budget)
    order = list(np.argsort(sizes, kind="stable"))  # smallest first
    while order:
        # the common level every remaining domain would get if none were capped
        level = remaining / cost[order].sum()
        i = order.pop(0)
        alloc[i] = min(level, max_epochs * sizes[i])
        remaining -= alloc[i] * cost[i]
    return alloc


class UniMax(MixingStrategy):
    """UniMax static mixture (see module docstring).

    Args:
        max_epochs: ``N``, the most epochs of any domain the budget may plan (``> 0``).
        unit: ``"tokens"`` (the paper's, default) or ``"examples"`` (``strategy.unit``).
        budget: the run's budget in examples; ``None`` = ``trainer.max_steps ×`` global
            batch size.

    Raises:
        ValueError: bad settings, no budget (a run without ``trainer.max_steps``), or no
            token counts for ``unit: tokens`` (names the key to set).
    """

    static: ClassVar[bool] = True

    def __init__(
        self, max_epochs: float = 1.0, unit: str = "tokens", budget: int | None = None
    ) -> None:
        if not float(max_epochs) > 0:
            raise ValueError(f"strategy.max_epochs must be > 0, got {max_epochs}")
        if unit not in _UNITS:
            raise ValueError(f"strategy.unit must be one of {list(_UNITS)}, got {unit!r}")
        if budget is not None and not int(budget) > 0:
            raise ValueError(f"strategy.budget must be > 0 examples or null, got {budget}")
        self.max_epochs = float(max_epochs)
        self.unit = unit
        self.budget = None if budget is None else int(budget)
        self.allocation: list[float] = []
        self.capped: list[str] = []

    def setup(self, ctx: Any) -> None:
        super().setup(ctx)
        budget = self.budget if self.budget is not None else ctx.example_budget
        if budget is None:
            raise ValueError(
                "strategy=unimax needs the run's budget: set trainer.max_steps (> 0) or "
                "strategy.budget (examples)"
            )
        examples = np.asarray(ctx.domain_sizes, dtype=np.float64)
        if (examples <= 0).any():
            empty = [n for n, s in zip(ctx.domain_names, examples, strict=True) if s <= 0]
            raise ValueError(f"strategy=unimax: domains without training examples: {empty}")
        if self.unit == "tokens":
            if ctx.domain_tokens is None or (np.asarray(ctx.domain_tokens) <= 0).any():
                raise ValueError(
                    "strategy.unit=tokens needs loss-bearing token counts per domain, which "
                    "this DataModule does not give (or a domain has none): set "
                    "strategy.unit=examples"
                )
            sizes = np.asarray(ctx.domain_tokens, dtype=np.float64)
            cost = examples / sizes  # examples per token = 1 / mean tokens per example
        else:
            sizes, cost = examples, np.ones_like(examples)
        alloc = unimax_allocation(sizes, float(budget), self.max_epochs, cost)
        capped = np.isclose(alloc, self.max_epochs * sizes, rtol=1e-12)
        self.allocation = alloc.tolist()
        self.capped = [n for n, c in zip(ctx.domain_names, capped, strict=True) if c]
        if capped.all():
            log.warning(
                "strategy=unimax: the budget (%d examples) exceeds %g epochs of every domain; "
                "p follows the caps and domains repeat more than strategy.max_epochs=%g times",
                budget,
                self.max_epochs,
                self.max_epochs,
            )
        e = alloc * cost
        self._p = e / e.sum()

    def initial_weights(self) -> np.ndarray:
        return self._p.copy()

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return self._p.copy()
