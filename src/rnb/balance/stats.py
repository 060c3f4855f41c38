"""Per-domain round statistics (sample counts, loss sums), reduced across ranks."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DomainStats"]


class DomainStats:
    """Accumulates per-domain counts and loss sums over a round.

    Kept on the model's device so accumulation never forces a host sync; summed across
    ranks with :meth:`reduced` before a strategy sees them, so every rank computes the
    same mixture.
    """

    def __init__(self, num_domains: int, device: torch.device | str = "cpu") -> None:
        self.num_domains = num_domains
        self.counts = torch.zeros(num_domains, dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros(num_domains, dtype=torch.float64, device=device)
        self.skipped_nonfinite = 0

    def update(self, domain: torch.Tensor, example_loss: torch.Tensor) -> None:
        """Add one (micro-)batch; examples with a non-finite loss are skipped."""
        d = domain.to(self.counts.device).long().view(-1)
        loss = example_loss.detach().to(self.counts.device).double().view(-1)
        finite = torch.isfinite(loss)
        if not bool(finite.all()):
            self.skipped_nonfinite += int((~finite).sum())
            d, loss = d[finite], loss[finite]
        self.counts.index_add_(0, d, torch.ones_like(loss))
        self.loss_sum.index_add_(0, d, loss)

    def reduced(self, reduce_fn: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, loss_sum) summed over ranks with ``reduce_fn(tensor) -> tensor``."""
        both = torch.stack([self.counts, self.loss_sum])
        if reduce_fn is not None:
            both = reduce_fn(both)
        return both[0].cpu(), both[1].cpu()

    def reset(self) -> None:
        """Zero the accumulators for a new round."""
        self.counts.zero_()
        self.loss_sum.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Local (this rank's) accumulators, loadable with ``weights_only=True``."""
        return {
            "counts": self.counts.cpu().clone(),
            "loss_sum": self.loss_sum.cpu().clone(),
            "skipped_nonfinite": self.skipped_nonfinite,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.counts.copy_(state["counts"].to(self.counts))
        self.loss_sum.copy_(state["loss_sum"].to(self.loss_sum))
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
