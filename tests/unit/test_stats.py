"""DomainStats: per-domain counts and loss sums, non-finite losses skipped, exact state."""

from __future__ import annotations

import math

import pytest
import torch

from rnb.balance.stats import DomainStats


def test_sums_match_brute_force_and_skip_non_finite() -> None:
    gen = torch.Generator().manual_seed(0)
    stats = DomainStats(3)
    doms, losses = [], []
    for _ in range(5):
        d = torch.randint(0, 3, (7,), generator=gen)
        loss = torch.rand(7, generator=gen)
        doms.append(d)
        losses.append(loss)
        stats.update(d, loss)
    stats.update(torch.tensor([0, 2]), torch.tensor([math.nan, math.inf]))
    d, loss = torch.cat(doms), torch.cat(losses).double()
    want_counts = torch.stack([(d == i).sum() for i in range(3)]).double()
    want_sum = torch.stack([loss[d == i].sum() for i in range(3)])
    torch.testing.assert_close(stats.counts, want_counts)
    torch.testing.assert_close(stats.loss_sum, want_sum)
    assert stats.skipped_nonfinite == 2


def test_reset_keeps_run_wide_skip_count_and_state_round_trips() -> None:
    stats = DomainStats(2)
    stats.update(torch.tensor([0, 1, 1]), torch.tensor([1.0, math.nan, 3.0]))
    stats.reset()
    assert stats.counts.tolist() == [0.0, 0.0] and stats.skipped_nonfinite == 1
    stats.update(torch.tensor([1, 1]), torch.tensor([2.0, 4.0]))
    state = stats.state_dict()  # folds the pending step first
    other = DomainStats(2)
    other.update(torch.tensor([0]), torch.tensor([9.0]))  # discarded by the load
    other.load_state_dict(state)
    assert other.counts.tolist() == [0.0, 2.0] and other.loss_sum.tolist() == [0.0, 6.0]
    assert other.skipped_nonfinite == 1
    counts, loss_sum = other.reduced(lambda t: 2 * t)  # a 2-rank SUM stand-in
    assert counts.tolist() == [0.0, 4.0] and loss_sum.tolist() == [0.0, 12.0]


def test_totals_are_read_only() -> None:
    stats = DomainStats(2)
    with pytest.raises(AttributeError, match="read-only"):
        stats.counts = torch.zeros(2)
