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


# ---------------------------------------------------------------- pinned by mutation testing
def _reference_batches(
    p: np.ndarray, batch_size: int, seed: int, n_batches: int
) -> list[list[int]]:
    """The documented draw, written out: domain ``i ~ p`` from ``default_rng([seed, 0, b])``,
    then the next example of ``i``'s cycle ``c``, permuted by ``default_rng([seed, 1, i, c])``."""
    doms_ix = _domains()
    cycle, cursor = [0] * len(doms_ix), [0] * len(doms_ix)
    out = []
    for b in range(n_batches):
        doms = np.random.default_rng([seed, 0, b]).choice(len(p), size=batch_size, p=p)
        idx = [0] * batch_size
        for d in np.unique(doms):
            for pos in np.flatnonzero(doms == d):
                n = doms_ix[d].size
                perm = doms_ix[d][np.random.default_rng([seed, 1, d, cycle[d]]).permutation(n)]
                idx[pos] = int(perm[cursor[d]])
                cursor[d] += 1
                if cursor[d] == n:
                    cycle[d], cursor[d] = cycle[d] + 1, 0
        out.append(idx)
    return out


def test_draws_follow_the_documented_random_streams() -> None:
    # 40 batches of 8 pass through domain 2 (7 examples) many cycles: pins the cycle counter.
    p = np.array([0.1, 0.2, 0.5, 0.2])
    s = MixtureBatchSampler(_domains(), 8, p, seed=7)
    it = iter(s)
    got = [next(it) for _ in range(40)]
    assert got == _reference_batches(p, 8, 7, 40)
    assert all(type(i) is int for b in got for i in b)  # a DataLoader indexes with these


def test_default_seed_is_zero_and_batch_size_one_is_valid() -> None:
    s = MixtureBatchSampler(_domains(), 1)
    assert s.state_dict()["seed"] == 0
    it = iter(s)
    assert [next(it) for _ in range(5)] == _reference_batches(np.full(4, 0.25), 1, 0, 5)


def test_weights_are_normalised_in_float64() -> None:
    s = MixtureBatchSampler(_domains(), 4, weights=[1, 2, 3, 4])
    np.testing.assert_array_equal(s.weights, [0.1, 0.2, 0.3, 0.4])
    p32 = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)  # e.g. a [1, m] float32 tensor
    s.set_weights(p32)
    p64 = p32.astype(np.float64).reshape(-1)
    assert s.weights.dtype == np.float64 and s.weights.shape == (4,)
    np.testing.assert_array_equal(s.weights, p64 / p64.sum())


def test_schedule_records_each_change_where_it_takes_effect() -> None:
    a, b, c, d = (np.eye(4)[i] for i in range(4))
    s = MixtureBatchSampler(_domains(), 4, weights=a)
    assert s.set_weights(b) == 0  # before any draw: replaces the initial weights
    assert s.state_dict()["schedule"] == [(0, b.tolist())]
    it = iter(s)
    assert (_domain_of(np.asarray(next(it))) == 1).all()
    s.set_weights(c)
    s.set_weights(d)  # no draw in between: only the last one ever takes effect
    assert s.state_dict()["schedule"] == [(0, b.tolist()), (1, d.tolist())]
    next(it)
    next(it)
    assert s.set_weights(a) == 3
    assert s.state_dict()["schedule"] == [(0, b.tolist()), (1, d.tolist()), (3, a.tolist())]


def test_weight_change_after_restoring_an_earlier_batch_drops_later_changes() -> None:
    a, b, c, d = (np.eye(4)[i].tolist() for i in range(4))
    s = MixtureBatchSampler(_domains(), 4, weights=a)
    it = iter(s)
    next(it)
    next(it)
    s.set_weights(b)  # changes at batches 2 and 3: drawn (prefetched) but not consumed
    next(it)
    s.set_weights(c)
    next(it)
    state = s.state_dict(consumed_batches=0)
    assert state["schedule"] == [(0, a), (2, b), (3, c)]
    r = MixtureBatchSampler(_domains(), 4)
    r.load_state_dict(state)
    assert r.set_weights(d) == 0  # the resumed run changes the mixture before its first draw
    assert r.state_dict()["schedule"] == [(0, d)]
    rit = iter(r)
    assert all((_domain_of(np.asarray(next(rit))) == 3).all() for _ in range(4))


def test_default_history_keeps_64_states() -> None:
    s = MixtureBatchSampler(_domains(), 2)
    it = iter(s)
    for _ in range(65):
        next(it)
    assert s.state_dict(consumed_batches=1)["batch"] == 1
    with pytest.raises(RuntimeError, match="batch 0 is no longer in the history"):
        s.state_dict(consumed_batches=0)


def test_error_messages_name_what_to_change() -> None:
    for rank in (2, -1):
        with pytest.raises(ValueError, match=rf"^sampler rank {rank} outside world size 2$"):
            MixtureBatchSampler(_domains(), 4, rank=rank, world_size=2)
    s = MixtureBatchSampler(_domains(), 4, history=2)
    it = iter(s)
    for _ in range(5):
        next(it)
    with pytest.raises(RuntimeError) as err:
        s.state_dict(consumed_batches=1)
    assert str(err.value) == (
        "sampler state for batch 1 is no longer in the history (drawn 5, history 2): lower "
        "data.num_workers (a loader draws num_workers * prefetch_factor batches ahead)"
    )
    other = MixtureBatchSampler(_domains()[:2], 4)
    with pytest.raises(ValueError) as err2:
        other.load_state_dict(s.state_dict())
    assert str(err2.value) == (
        "checkpoint sampler has 4 domains, this run has 2: resume with the same data/regroup config"
    )


def test_weight_change_after_restore_keeps_changes_that_took_effect() -> None:
    w = [np.eye(4)[i % 4].tolist() for i in range(6)]
    s = MixtureBatchSampler(_domains(), 4, weights=w[0])
    it = iter(s)
    for i in range(1, 5):  # changes at batches 1, 2, 3, 4
        next(it)
        s.set_weights(w[i])
    next(it)
    assert [start for start, _ in s.state_dict()["schedule"]] == [0, 1, 2, 3, 4]
    r = MixtureBatchSampler(_domains(), 4)
    r.load_state_dict(s.state_dict(consumed_batches=2))
    assert r.set_weights(w[5]) == 2  # drops the changes at 2, 3 and 4, keeps the one at 1
    assert r.state_dict()["schedule"] == [(0, w[0]), (1, w[1]), (2, w[5])]


def test_members_and_permutation_cache_are_int32_with_the_same_batches() -> None:
    """Per-example index arrays are int32 when they fit (the RSS a 2M-document corpus pays
    per example); indices past int32 stay int64 and draw the same positions."""
    small = MixtureBatchSampler(_domains(), batch_size=16, seed=5)
    offset = 2**31
    big = MixtureBatchSampler([d + offset for d in _domains()], batch_size=16, seed=5)
    a, b = _draw(small, 40), _draw(big, 40)
    assert [d.dtype for d in small.domains] == [np.int32] * len(SIZES)
    assert {p.dtype for _, p in small._perm_cache.values()} == {np.dtype(np.int32)}
    assert sum(d.nbytes for d in small.domains) == 4 * sum(SIZES)
    assert [d.dtype for d in big.domains] == [np.int64] * len(SIZES)
    np.testing.assert_array_equal(b, a + offset)
    assert a.min() >= 0 and a.max() < sum(SIZES)
