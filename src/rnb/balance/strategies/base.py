"""The mixing-strategy contract shared by R&B and every baseline."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from rnb.balance.detour_plan import Detour, DetourResult

__all__ = ["MixingStrategy", "MixtureContext", "RoundStats", "uniform"]


def uniform(m: int) -> np.ndarray:
    """The uniform (stratified) mixture over ``m`` domains."""
    return np.full(m, 1.0 / m)


@dataclass
class MixtureContext:
    """What a strategy knows about the data before training starts.

    Attributes:
        domain_names: name of each domain.
        domain_sizes: training examples per domain.
        eval_proportions: ``q``, the share of eval examples per domain.
        seed: the run's seed.
        output_dir: the run directory (strategies may write artefacts there).
        domain_fingerprint: what defines the domains (:meth:`domain_definition`), so
            weights keyed by domain name can be checked to mean the same domains;
            ``None`` when unknown.
        domain_tokens: target (loss-bearing) tokens per domain in the training split
            (``[m]``; ``None`` when the DataModule does not say).
        example_budget: training examples the run will draw (``max_steps ×`` global batch
            size; ``None`` when the run has no step limit).
        max_steps: the run's ``trainer.max_steps`` (``None`` when the run has no step
            limit), so a strategy can refuse a run too short for it to act.
    """

    domain_names: list[str]
    domain_sizes: np.ndarray
    eval_proportions: np.ndarray
    seed: int = 0
    output_dir: Path | None = None
    domain_fingerprint: str | None = None
    domain_tokens: np.ndarray | None = None
    example_budget: int | None = None
    max_steps: int | None = None

    @staticmethod
    def domain_definition(domain_field: str | None, regroup_fingerprint: str | None) -> str:
        """The ``domain_fingerprint`` of domains made by Regroup or by ``data.domain_field``.

        A Regroup clustering is identified by its fingerprint (data, embedder, reducer,
        clusterer, k sweep, seed): clusters named ``c00..c15`` of two clusterings are
        different domains. Predefined domains are identified by their field: the domain
        ``web`` of ``data.domain_field=source`` is the same domain in any dataset. Names
        are not part of it (they are compared one by one, see ``strategy.fill``).
        """
        if regroup_fingerprint:
            return f"regroup:{regroup_fingerprint}"
        if domain_field:
            return f"data.domain_field={domain_field}"
        return "one domain (no data.domain_field)"

    @property
    def num_domains(self) -> int:
        """``m``."""
        return len(self.domain_names)


@dataclass
class RoundStats:
    """Signals gathered over one round of ``K`` steps, summed over ranks.

    Attributes:
        step: global optimizer step at the end of the round.
        round: index of the round that just ended (0-based).
        counts: training examples seen per domain ``n_i``.
        loss_sum: sum of per-example training losses per domain.
        gram: raw inner products ``<g_i, g_j>`` of the per-domain final-layer
            gradient sums (``None`` unless the strategy needs ``"gram"``).
        extra: signals from shared services (``rnb.balance.services``), keyed by the
            need that asked for them, plus ``"lr"`` (the optimizer's current learning rate)
            and ``"gram_counts"`` (examples behind ``gram``).
        tokens: target tokens drawn per domain this round (float64 ``[m]``).
    """

    step: int
    round: int
    counts: torch.Tensor
    loss_sum: torch.Tensor
    gram: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens: torch.Tensor | None = None

    @property
    def mean_loss(self) -> torch.Tensor:
        """Mean training loss per domain (``nan`` where unsampled)."""
        return torch.where(self.counts > 0, self.loss_sum / self.counts.clamp_min(1), torch.nan)


class MixingStrategy(ABC):
    """Base class: hyperparameters in ``__init__``, state in ``state_dict``.

    Subclasses declare the signals they need in ``needs`` (e.g. ``{"gram"}``) so the
    callback computes nothing unused, and return new weights from :meth:`update`.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    #: True when weights never change (the callback then skips all signal collection).
    static: ClassVar[bool] = False
    #: ``K`` when ``balance.steps_per_round`` is null: 20 for round-based methods, 1 for
    #: methods that update every step in their papers (ODM, DoReMi).
    default_steps_per_round: ClassVar[int] = 20

    def setup(self, ctx: MixtureContext) -> None:
        """Called once before training with the data context."""
        self.ctx = ctx

    def initial_weights(self) -> np.ndarray:
        """``p_0``; uniform unless a strategy says otherwise."""
        return uniform(self.ctx.num_domains)

    @abstractmethod
    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        """Return the next mixture (on the simplex) given a round's statistics."""

    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list[Detour]:
        """Detours to take at this round boundary (default: none).

        Called before the first training step (``stats`` is ``None``; not again on
        resume) and after every round's :meth:`update` (``weights`` = its result). See
        :mod:`rnb.balance.detour_plan` for the kinds; the results come back through
        :meth:`detours_done` once every detour of the list has finished.
        """
        return []

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> np.ndarray | None:
        """Receive the per-domain probe losses around each planned detour, in plan order.

        Returns:
            The mixture for the rest of the round, or ``None`` to keep ``weights``.
        """
        return None

    def apply(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """How the mixture ``α`` enters training: ``(sampling p, loss multipliers or None)``.

        The default samples with ``α`` (online resampling). Strategies that re-weight the
        training loss instead (DoReMi's proxy, DoGE's ``Σ α_i g_i`` step) return their fixed
        sampling mixture and ``α`` as per-domain loss multipliers, and list
        ``"loss_weights"`` in :attr:`needs` (the model must implement
        :meth:`rnb.models.weighting.DomainLossWeighting.set_domain_loss_weights`).
        """
        return weights, None

    def state_dict(self) -> dict[str, Any]:
        """Strategy state (tensors / numbers / lists only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters for ``summary.json``."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "ctx"}
        return {"name": type(self).__name__, **_jsonable(params)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | torch.Tensor):
        return np.asarray(obj).tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)
