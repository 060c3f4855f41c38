"""The DDP rank-agreement check of the Balance callback, without processes.

``BalanceCallback._check_ranks_agree`` gathers the mixture from every rank; here the gather is
a stub returning chosen per-rank mixtures, so the check's arithmetic (max abs spread to rank 0,
tolerance 1e-9, the count of checks) is pinned in-process (the DDP integration tests run in
subprocesses, which mutation testing cannot see).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rnb.balance.callback import BalanceCallback


def _state() -> SimpleNamespace:
    return SimpleNamespace(rank_checks=0, rank_spread=0.0)


def _trainer(*ranks: list[float]) -> SimpleNamespace:
    gathered = torch.tensor(ranks, dtype=torch.float64)

    def all_gather(t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.float64  # compared at full precision
        np.testing.assert_array_equal(t.numpy(), gathered[0].numpy())  # this rank = rank 0
        return gathered

    return SimpleNamespace(strategy=SimpleNamespace(all_gather=all_gather))


def test_equal_ranks_are_counted_and_spread_is_zero() -> None:
    cb = _state()
    p = [0.25, 0.75]
    BalanceCallback._check_ranks_agree(cb, _trainer(p, p), np.array(p))
    BalanceCallback._check_ranks_agree(cb, _trainer(p, p, p), np.array(p))
    assert cb.rank_checks == 2 and cb.rank_spread == 0.0


def test_spread_within_tolerance_is_recorded_as_the_maximum() -> None:
    cb = _state()
    p = np.array([0.5, 0.5])
    BalanceCallback._check_ranks_agree(cb, _trainer([0.5, 0.5], [0.5 + 4e-10, 0.5]), p)
    BalanceCallback._check_ranks_agree(cb, _trainer([0.5, 0.5], [0.5, 0.5 - 1e-10]), p)
    assert cb.rank_checks == 2
    assert cb.rank_spread == pytest.approx(4e-10, rel=1e-6)  # the max, not the last


def test_ranks_that_disagree_stop_the_run() -> None:
    cb = _state()
    p = np.array([0.2, 0.3, 0.5])
    other = [0.2, 0.3 - 2e-6, 0.5 + 3e-6]  # largest |difference| on the last domain
    with pytest.raises(RuntimeError, match=r"differs across ranks by 3\.0\d*e-06"):
        BalanceCallback._check_ranks_agree(cb, _trainer(list(p), other), p)
    assert cb.rank_checks == 1
    assert cb.rank_spread == pytest.approx(3e-6, rel=1e-6)
