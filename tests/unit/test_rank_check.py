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


def test_spread_is_measured_from_rank_zero() -> None:
    # ranks 0, 1, 2 at 0, 1e-10 and 5e-10: the largest distance to rank 0 is 5e-10 (to rank 1
    # it would be 4e-10)
    cb = _state()
    p = np.array([0.0, 1.0])
    BalanceCallback._check_ranks_agree(cb, _trainer([0.0, 1.0], [1e-10, 1.0], [5e-10, 1.0]), p)
    assert cb.rank_spread == pytest.approx(5e-10, rel=1e-6)


def test_spread_of_exactly_the_tolerance_is_accepted() -> None:
    cb = _state()
    p = np.array([0.0, 1.0])
    BalanceCallback._check_ranks_agree(cb, _trainer([0.0, 1.0], [1e-9, 1.0]), p)  # no raise
    assert cb.rank_spread == 1e-9


def test_reduce_fn_sums_over_ranks_only_with_several_ranks() -> None:
    calls: list[tuple[torch.Tensor, str]] = []

    def reduce(t: torch.Tensor, reduce_op: str) -> torch.Tensor:
        calls.append((t, reduce_op))
        return t * 2

    strategy = SimpleNamespace(reduce=reduce)
    cb = _state()
    assert BalanceCallback._reduce_fn(cb, SimpleNamespace(world_size=1, strategy=strategy)) is None
    fn = BalanceCallback._reduce_fn(cb, SimpleNamespace(world_size=2, strategy=strategy))
    assert fn is not None
    t = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(fn(t), torch.tensor([2.0, 6.0]))
    assert len(calls) == 1 and calls[0][0] is t and calls[0][1] == "sum"
