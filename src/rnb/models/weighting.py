"""The model hook for strategies that re-weight the training loss per domain.

DoReMi trains its proxy model on a fixed mixture with the loss re-weighted by ``α``
(Xie et al. 2023, §2, step 2), and DoGE steps the model along ``Σ_i α_i g_i`` (Fan et al.
2024, Alg. 1). Both are the gradient of ``Σ_i α_i ℓ̄_i`` where ``ℓ̄_i`` is domain ``i``'s
mean loss in the batch. A LightningModule gets this by inheriting
:class:`DomainLossWeighting` and reducing its per-example losses with
:meth:`~DomainLossWeighting.reduce_example_losses`; the Balance callback then calls
:meth:`~DomainLossWeighting.set_domain_loss_weights` whenever the mixture changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DomainLossWeighting", "domain_weighted_mean"]


def domain_weighted_mean(
    example_loss: torch.Tensor,
    domain: torch.Tensor,
    weights: torch.Tensor,
    sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
    world_size: int = 1,
) -> torch.Tensor:
    """``Σ_i α_i ℓ̄_i / Σ_{i∈B} α_i`` over the domains ``i`` present in the batch.

    Under DDP the batch ``B`` is the *global* batch: the per-domain counts are summed over
    ranks (``sum_over_ranks``) and each rank returns ``world_size ×`` its share, so the
    gradient DDP averages over ranks is that of the global objective (the DoReMi reference
    code likewise reduces its normaliser across GPUs). Per-rank means would weigh a rank's
    few examples of a domain like another rank's many.

    Args:
        example_loss: ``[B]`` per-example (token-mean) losses (this rank's).
        domain: ``[B]`` domain ids in ``[0, m)``.
        weights: ``[m]`` non-negative multipliers ``α``.
        sum_over_ranks: sums a tensor over ranks (``None``: one process).
        world_size: number of ranks (with ``sum_over_ranks``).

    Returns:
        A scalar. Renormalising over the present domains keeps the loss on the scale of an
        ordinary mean (and its value comparable across steps) when a small batch misses a
        domain; with ``α`` uniform and every domain present it is the mean of the domain
        means. A batch whose present domains all have ``α_i = 0`` gives ``0 · mean`` (a
        zero gradient, not NaN).
    """
    m = weights.numel()
    d = domain.reshape(-1).long()
    loss = example_loss.reshape(-1)
    sums = torch.zeros(m, dtype=loss.dtype, device=loss.device).index_add(0, d, loss)
    counts = torch.zeros(m, dtype=loss.dtype, device=loss.device).index_add(
        0, d, torch.ones_like(loss)
    )
    scale = 1.0
    if sum_over_ranks is not None:
        counts = sum_over_ranks(counts.detach().clone())
        scale = float(world_size)
    present = counts > 0
    w = weights.to(loss.device, loss.dtype) * present
    means = sums / counts.clamp_min(1)
    total = w.sum()
    if float(total) <= 0:
        return loss.mean() * 0.0
    return scale * (w * means).sum() / total


class DomainLossWeighting:
    """Mixin: per-domain loss multipliers set by the Balance callback (default: none)."""

    _domain_loss_weights: torch.Tensor | None = None

    def set_domain_loss_weights(self, weights: np.ndarray | torch.Tensor | None) -> None:
        """Use ``weights`` (``[m]``, non-negative) as loss multipliers; ``None`` = plain mean.

        Raises:
            ValueError: negative or non-finite weights.
        """
        if weights is None:
            self._domain_loss_weights = None
            return
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"domain loss weights must be finite and >= 0, got {w.tolist()}")
        self._domain_loss_weights = w

    @property
    def domain_loss_weights(self) -> torch.Tensor | None:
        """The multipliers in use (``None`` when the loss is a plain mean)."""
        return self._domain_loss_weights

    def reduce_example_losses(self, example_loss: torch.Tensor, domain: Any) -> torch.Tensor:
        """The training loss: plain mean, or :func:`domain_weighted_mean` when weights are set."""
        if self._domain_loss_weights is None:
            return example_loss.mean()
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return domain_weighted_mean(
            example_loss,
            domain,
            self._domain_loss_weights,
            sum_over_ranks=_all_reduce_sum if world > 1 else None,
            world_size=world,
        )


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
