"""Detour specs, sandbox batch draws and the sampler's queued detour segments."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.sandbox import draw_detour_batch
from rnb.data.sampler import MixtureBatchSampler

SIZES = [50, 120, 7, 300]


def _domains() -> list[np.ndarray]:
    bounds = np.cumsum([0, *SIZES])
    return [np.arange(a, b) for a, b in itertools.pairwise(bounds)]


def _domain_of(idx: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(SIZES), idx, side="right")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 2}, "a detour needs exactly one of `mixture` or `domain`"),
        (
            {"steps": 2, "domain": 0, "mixture": [1.0]},
            "a detour needs exactly one of `mixture` or `domain`",
        ),
        ({"steps": 0, "kind": "inline", "domain": 0}, "inline detours need steps >= 1, got 0"),
        ({"steps": -1, "domain": 0}, "sandboxed detours need steps >= 0, got -1"),
        (
            {"steps": 1, "kind": "detached", "domain": 0},
            "detour kind must be one of ['inline', 'sandboxed'], got 'detached'",
        ),
        (
            {"steps": 1, "domain": 0, "lr": "fast"},
            "detour lr must be 'current', 'peak' or a number, got 'fast'",
        ),
        (
            {"steps": 1, "kind": "inline", "domain": 0, "lr": 0.1},
            "an inline detour trains with the run's own learning rate",
        ),
    ],
)
def test_detour_validation(kwargs: dict, message: str) -> None:
    """Each refusal, with its exact text."""
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Detour(**kwargs)


def test_detour_weights_and_result_roundtrip() -> None:
    d = Detour(3, "sandboxed", domain=2, lr="peak", tag="graph/2")
    np.testing.assert_array_equal(d.weights(4), [0, 0, 1, 0])
    with pytest.raises(ValueError, match="outside 0..1"):
        d.weights(2)
    r = DetourResult(d, np.array([2.0, np.nan, 1.0]), np.array([1.5, np.nan, 1.25]), 7)
    np.testing.assert_allclose(r.drop, [0.5, np.nan, -0.25])
    back = DetourResult.from_dict(r.to_dict())
    assert back.detour == d and back.step == 7
    np.testing.assert_array_equal(back.before, r.before)
    np.testing.assert_array_equal(back.after, r.after)


def test_sandbox_batches_follow_the_mixture_and_the_seed() -> None:
    doms = _domains()
    idx, d = draw_detour_batch(doms, np.array([0.0, 0, 1, 0]), 32, [0, 3, 5, 1, 0])
    assert (_domain_of(idx) == 2).all() and (d == 2).all()  # 32 draws from a 7-example domain
    again, _ = draw_detour_batch(doms, np.array([0.0, 0, 1, 0]), 32, [0, 3, 5, 1, 0])
    np.testing.assert_array_equal(idx, again)
    other, _ = draw_detour_batch(doms, np.array([0.0, 0, 1, 0]), 32, [0, 3, 5, 1, 1])
    assert not np.array_equal(idx, other)
    idx, _ = draw_detour_batch(doms, np.array([0.0, 1, 0, 0]), 100, [1])
    assert len(set(idx.tolist())) == 100  # without replacement inside a large domain


def test_schedule_segments_queue_detours_then_return() -> None:
    s = MixtureBatchSampler(_domains(), batch_size=16, weights=[1, 0, 0, 0], seed=2)
    it = iter(s)
    next(it)  # batch 0 drawn with the old mixture
    start = s.schedule_segments([(2, [0, 0, 0, 1]), (1, [0, 1, 0, 0])], then=[0, 0, 1, 0])
    assert start == 1
    doms = [_domain_of(np.asarray(next(it))) for _ in range(5)]
    assert [int(np.unique(d)[0]) for d in doms] == [3, 3, 1, 2, 2]
    assert [e[0] for e in s.state_dict()["schedule"]] == [0, 1, 3, 4]
    with pytest.raises(ValueError, match=">= 1 batch"):
        s.schedule_segments([(0, [1, 0, 0, 0])], then=[1, 0, 0, 0])


def test_resume_inside_a_segment_redraws_the_same_batches() -> None:
    s = MixtureBatchSampler(_domains(), batch_size=8, seed=4)
    it = iter(s)
    next(it)
    s.schedule_segments([(3, [0, 1, 0, 0]), (3, [0.5, 0, 0, 0.5])], then=[0.25] * 4)
    drawn = [np.asarray(next(it)) for _ in range(9)]
    state = s.state_dict(consumed_batches=3)  # killed inside the first segment (batches 1-3)
    r = MixtureBatchSampler(_domains(), batch_size=8, seed=4)
    r.load_state_dict(state)
    rit = iter(r)
    for want in drawn[2:]:
        np.testing.assert_array_equal(np.asarray(next(rit)), want)


def test_segments_after_a_longer_history_keep_it() -> None:
    """The segments replace only the entry ``set_weights`` just appended, never history."""
    s = MixtureBatchSampler(_domains(), batch_size=16, weights=[1, 0, 0, 0], seed=2)
    it = iter(s)
    next(it)  # batch 0: domain 0
    s.set_weights([0, 1, 0, 0])
    next(it)  # batch 1: domain 1
    start = s.schedule_segments([(2, [0, 0, 0, 1])], then=[0, 0, 1, 0])
    assert start == 2
    starts = [e[0] for e in s.state_dict()["schedule"]]
    assert starts == [0, 1, 2, 4]
    doms = [int(np.unique(_domain_of(np.asarray(next(it))))[0]) for _ in range(3)]
    assert doms == [3, 3, 2]
    assert [w.index(1.0) for _, w in s.state_dict()["schedule"]] == [0, 1, 3, 2]
