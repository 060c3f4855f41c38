"""torchmetrics metric for per-domain average losses (synchronised across ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["DomainLoss"]


class DomainLoss(Metric):
    """Mean per-example loss over all examples and per domain.

    ``compute()`` returns ``(mean over examples, per-domain means [m], per-domain counts
    [m])``. The overall mean equals the count-weighted (``q``-weighted) average of the
    domain means. A domain without examples reports ``nan`` with count 0. Note that
    torchmetrics squeezes one-element outputs of ``compute()``: with ``m = 1`` the
    per-domain outputs are 0-d, so callers reshape them to ``[m]``.
    """

    full_state_update = False

    def __init__(self, num_domains: int) -> None:
        super().__init__()
        self.num_domains = num_domains
        self.add_state(
            "loss_sum", torch.zeros(num_domains, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.zeros(num_domains, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, example_loss: torch.Tensor, domain: torch.Tensor) -> None:
        """Add a batch of per-example losses with their domain ids."""
        d = domain.long().to(self.loss_sum.device)
        # out-of-place: states may have been created under inference mode (trainer.validate)
        self.loss_sum = self.loss_sum.index_add(
            0, d, example_loss.detach().double().to(self.loss_sum.device)
        )
        self.count = self.count.index_add(
            0, d, torch.ones(d.shape[0], dtype=self.count.dtype, device=d.device)
        )

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        total = self.count.sum().clamp_min(1)
        mean = self.loss_sum.sum() / total
        per = torch.where(self.count > 0, self.loss_sum / self.count.clamp_min(1), torch.nan)
        return mean, per, self.count

    def named(self, names: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(mean over examples, {domain name: mean})`` over the domains with examples.

        Args:
            names: the ``m`` domain names, in domain-id order.
        """
        mean, per_domain, counts = self.compute()
        # torchmetrics squeezes one-element outputs to 0-d tensors: with one domain (m = 1)
        # the per-domain vectors must stay [m] to pair with the domain names.
        per_domain, counts = per_domain.reshape(-1), counts.reshape(-1)
        return mean, {n: v for n, v, c in zip(names, per_domain, counts, strict=True) if c > 0}
