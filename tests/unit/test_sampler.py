"""MixtureBatchSampler: frequencies, weight changes, rank sharding, exact save/restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.data.sampler import MixtureBatchSampler

SIZES = [50, 120, 7, 300]


def _domains() -> list[np.ndarray]:
    out, start = [], 0
    for n in SIZES:
        out.append(np.arange(start, start + n))
        start += n
    return out


def _domain_of(idx: np.ndarray) -> np.ndarray:
    bounds = np.cumsum(SIZES)
    return np.searchsorted(bounds, idx, side="right")


def _draw(sampler: MixtureBatchSampler, n_batches: int) -> np.ndarray:
    it = iter(sampler)
    return np.concatenate([np.asarray(next(it)) for _ in range(n_batches)])


def test_frequencies_match_weights_within_3_sigma() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    s = MixtureBatchSampler(_domains(), batch_size=32, weights=p, seed=3)
    n_batches = 500
    doms = _domain_of(_draw(s, n_batches))
    n = doms.size
    freq = np.bincount(doms, minlength=4) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 3 * sigma), (freq, p)


def test_each_domain_cycles_through_all_examples_before_repeating() -> None:
    s = MixtureBatchSampler(_domains(), batch_size=16, weights=[0, 0, 1, 0], seed=0)
    idx = _draw(s, 3)  # 48 draws from a 7-example domain: 6 full cycles + 6
    for c in range(6):
        assert sorted(idx[7 * c : 7 * c + 7].tolist()) == list(range(170, 177))
    assert len(set(idx[42:].tolist())) == 6


def test_set_weights_changes_subsequent_batches_only() -> None:
    s = MixtureBatchSampler(_domains(), batch_size=64, weights=[1, 0, 0, 0], seed=1)
    it = iter(s)
    first = [np.asarray(next(it)) for _ in range(5)]
    assert all((_domain_of(b) == 0).all() for b in first)
    start = s.set_weights([0, 0, 0, 1])
    assert start == 5
    later = [np.asarray(next(it)) for _ in range(5)]
    assert all((_domain_of(b) == 3).all() for b in later)


def test_ranks_draw_disjoint_streams_whose_union_is_the_global_batch() -> None:
    # Disjoint within a domain's cycle: 3 global batches of 16 never exhaust a 50+ domain.
    p = [0.4, 0.3, 0.0, 0.3]
    ranks = [MixtureBatchSampler(_domains(), 8, p, seed=5, rank=r, world_size=2) for r in range(2)]
    single = MixtureBatchSampler(_domains(), 16, p, seed=5)
    its = [iter(r) for r in ranks]
    sit = iter(single)
    seen: list[set[int]] = [set(), set()]
    for _ in range(3):
        a, b = next(its[0]), next(its[1])
        g = next(sit)
        seen[0].update(a)
        seen[1].update(b)
        assert sorted(a + b) == sorted(g)
    assert not seen[0] & seen[1]


def test_state_round_trip_reproduces_exact_index_sequence(tmp_path) -> None:
    p = [0.4, 0.3, 0.2, 0.1]
    s = MixtureBatchSampler(_domains(), 16, p, seed=11)
    it = iter(s)
    for _ in range(7):
        next(it)
    s.set_weights([0.1, 0.1, 0.1, 0.7])
    for _ in range(3):
        next(it)
    state = s.state_dict()
    torch.save(state, tmp_path / "s.pt")
    expected = [next(it) for _ in range(20)]

    restored = MixtureBatchSampler(_domains(), 16, seed=0)
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    rit = iter(restored)
    assert [next(rit) for _ in range(20)] == expected


def test_state_as_of_consumed_batch_replays_prefetched_batches_with_their_weights() -> None:
    p = [0.25, 0.25, 0.25, 0.25]
    s = MixtureBatchSampler(_domains(), 16, p, seed=2)
    it = iter(s)
    consumed = [next(it) for _ in range(4)]
    prefetched = [next(it) for _ in range(2)]  # drawn by a prefetching loader, not yet trained on
    s.set_weights([0, 0, 0, 1])  # takes effect from batch 6
    after = [next(it) for _ in range(3)]
    state = s.state_dict(consumed_batches=4)
    assert state["batch"] == 4 and consumed

    r = MixtureBatchSampler(_domains(), 16, seed=0)
    r.load_state_dict(state)
    rit = iter(r)
    assert [next(rit) for _ in range(5)] == prefetched + after


def test_state_for_batch_outside_history_raises() -> None:
    s = MixtureBatchSampler(_domains(), 4, seed=0, history=2)
    it = iter(s)
    for _ in range(5):
        next(it)
    with pytest.raises(RuntimeError, match="history"):
        s.state_dict(consumed_batches=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1, 2]}, "expected 4"),
        ({"weights": [-1, 1, 1, 1]}, ">= 0"),
        ({"weights": [0, 0, 0, 0]}, "not all zero"),
        ({"batch_size": 0}, "data.batch_size"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        MixtureBatchSampler(_domains(), **args)


def test_empty_domain_rejected() -> None:
    with pytest.raises(ValueError, match="zero examples"):
        MixtureBatchSampler([np.arange(3), np.array([], dtype=np.int64)], 4)


def test_load_with_other_domain_count_names_config() -> None:
    s = MixtureBatchSampler(_domains(), 4)
    other = MixtureBatchSampler(_domains()[:2], 4)
    with pytest.raises(ValueError, match="same data/regroup"):
        other.load_state_dict(s.state_dict())
