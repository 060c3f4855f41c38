"""`DetourRunner` through in-line plans without a training loop: which batches get a probe
evaluation, which `reduce_fn` reaches it, and which losses land in the results.

The probe evaluation itself (`run_probe`) is replaced by a recorder that returns a distinct
loss vector per call; the runner's own `evaluate` (and its `evaluations` count) stays real.
The driver calls the runner the way the callback does: `before_batch(b)` before global batch
`b`, `after_batch(b + 1)` after it (``b + 1`` batches consumed), while a plan is active.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import rnb.balance.detours as detours_mod
from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.detours import DetourRunner

M = 2


def reduce_before(x: torch.Tensor) -> torch.Tensor:
    """Sentinel reduce_fn handed to before_batch."""
    return x


def reduce_after(x: torch.Tensor) -> torch.Tensor:
    """Sentinel reduce_fn handed to after_batch."""
    return x


class Sampler:
    """Records the queued segments; the first one starts at batch ``first``."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.calls: list[tuple[list[tuple[int, np.ndarray]], np.ndarray]] = []

    def schedule_segments(self, segments: list[tuple[int, np.ndarray]], then: np.ndarray) -> int:
        self.calls.append((list(segments), np.asarray(then)))
        return self.first


class Harness:
    """A runner bound to fake data plus a log of its probe evaluations."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, accumulate: int) -> None:
        self.runner = DetourRunner({"eval_size": 8}, seed=0)
        r = self.runner
        r.m, r.accumulate = M, accumulate  # what setup() binds and these paths read
        r.eval_split, r.probe, r.eval_batch_size, r.meter = "split", np.arange(8), 4, "meter"
        self.trainer = SimpleNamespace(global_step=0)
        self.module = object()
        self.phase: tuple[str, int] = ("idle", -1)
        self.log: list[tuple[str, int, Any]] = []  # (hook, batch number, reduce_fn)
        monkeypatch.setattr(detours_mod, "run_probe", self._probe)

    def _probe(self, trainer: Any, pl_module: Any, split: Any, indices: Any, **kw: Any) -> Any:
        assert (trainer, pl_module, split) == (self.trainer, self.module, "split")
        assert kw["num_domains"] == M and kw["batch_size"] == 4 and kw["meter"] == "meter"
        self.log.append((*self.phase, kw["reduce_fn"]))
        k = float(len(self.log))  # evaluation k returns [k, 10 k]: each one recognisable
        return torch.tensor([k, 10.0 * k], dtype=torch.float64), torch.ones(M)

    def start(self, plan: list[Detour], first: int, boundary: int) -> Sampler:
        sampler = Sampler(first)
        done = self.runner.start(
            plan, self.trainer, self.module, sampler, np.full(M, 0.5), boundary, reduce_before
        )
        assert done is False  # in-line detours pending: the plan is not complete yet
        return sampler

    def run(self, batches: range) -> list[tuple[int, list[DetourResult]]]:
        """Train ``batches`` (an optimizer step every ``accumulate``); when ``after_batch``
        reports the plan complete, ``finish`` it as the callback does: ``(consumed, results)``
        per completed plan."""
        done = []
        for b in batches:
            if self.runner.active:
                self.phase = ("before", b)
                self.runner.before_batch(b, self.trainer, self.module, reduce_before)
            if (b + 1) % self.runner.accumulate == 0:
                self.trainer.global_step += 1
            if self.runner.active:
                self.phase = ("after", b + 1)
                if self.runner.after_batch(b + 1, self.trainer, self.module, reduce_after):
                    done.append((b + 1, self.runner.finish()))
            self.phase = ("idle", -1)
        return done


def _loss(k: int) -> list[float]:
    return [float(k), 10.0 * k]


def _check(res: DetourResult, detour: Detour, before: int, after: int, step: int) -> None:
    assert res.detour == detour and res.step == step
    np.testing.assert_array_equal(res.before, _loss(before))
    np.testing.assert_array_equal(res.after, _loss(after))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_back_to_back_detours_evaluate_at_plan_start_and_after_each(
    monkeypatch: pytest.MonkeyPatch, accumulate: int
) -> None:
    h = Harness(monkeypatch, accumulate)
    a = accumulate
    plan = [Detour(2, kind="inline", domain=1), Detour(3, kind="inline", mixture=[1.0, 3.0])]
    sampler = h.start(plan, first=4, boundary=4 + 5 * a)
    # both segments queued in one call, in batches (steps x accumulate), then the mixture
    [(segments, then)] = sampler.calls
    assert [n for n, _ in segments] == [2 * a, 3 * a]
    np.testing.assert_array_equal(segments[0][1], [0.0, 1.0])
    np.testing.assert_array_equal(then, [0.5, 0.5])
    assert h.log == [] and h.runner.starts == [4, 4 + 2 * a]  # nothing evaluated yet

    [(consumed, results)] = h.run(range(0, 4 + 5 * a + 3))
    # "before" once, at the plan's first batch, with before_batch's reduce_fn; the second
    # detour starts from the first one's "after": no evaluation before its first batch
    assert h.log == [
        ("before", 4, reduce_before),
        ("after", 4 + 2 * a, reduce_after),
        ("after", 4 + 5 * a, reduce_after),
    ]
    assert consumed == 4 + 5 * a and not h.runner.active
    assert h.runner.evaluations == 3 and h.runner.inline_steps == 5
    first, second = results  # in plan order
    _check(first, plan[0], before=1, after=2, step=(4 + 2 * a) // a)
    _check(second, plan[1], before=2, after=3, step=(4 + 5 * a) // a)
    assert second.before is not first.after  # a copy: the results do not alias


def test_a_later_plan_evaluates_again_before_its_own_first_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, accumulate=1)
    one = Detour(1, kind="inline", domain=0)
    h.start([one], first=2, boundary=8)
    [(consumed, [res])] = h.run(range(0, 10))
    assert consumed == 3  # batch 2 only
    _check(res, one, before=1, after=2, step=3)
    # next plan: nothing carries over from the last "after"; batches 3..9 passed untouched
    two = Detour(2, kind="inline", mixture=[0.5, 0.5])
    h.start([two], first=10, boundary=16)
    [(consumed, [res])] = h.run(range(10, 16))
    assert consumed == 12
    assert h.log == [
        ("before", 2, reduce_before),
        ("after", 3, reduce_after),
        ("before", 10, reduce_before),
        ("after", 12, reduce_after),
    ]
    _check(res, two, before=3, after=4, step=12)
    assert h.runner.summary() == {"evaluations": 4, "sandboxed_steps": 0, "inline_steps": 3}


def test_before_batch_ignores_batches_that_start_no_detour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, accumulate=1)
    h.start([Detour(2, kind="inline", domain=0), Detour(1, kind="inline", domain=1)], 5, 9)
    for b in (0, 3, 4, 6, 8, 9):  # no detour starts here (the second one starts at 7)
        h.runner.before_batch(b, h.trainer, h.module, reduce_before)
    assert h.log == [] and h.runner.pending_before is None
    h.phase = ("before", 5)
    h.runner.before_batch(5, h.trainer, h.module, reduce_before)
    h.runner.before_batch(5, h.trainer, h.module, reduce_before)  # repeated: still once
    assert h.log == [("before", 5, reduce_before)]
    np.testing.assert_array_equal(h.runner.pending_before, _loss(1))


def test_a_plan_at_the_first_batch_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan made before step 0 queues its detours from batch 0: that is a start too."""
    h = Harness(monkeypatch, accumulate=1)
    one = Detour(2, kind="inline", domain=1)
    h.start([one], first=0, boundary=4)
    [(consumed, [res])] = h.run(range(0, 4))
    assert consumed == 2
    assert h.log == [("before", 0, reduce_before), ("after", 2, reduce_after)]
    _check(res, one, before=1, after=2, step=2)


def test_inline_detours_past_the_next_boundary_are_refused_with_the_exact_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message names the first in-line detour's start batch (not the second's)."""
    h = Harness(monkeypatch, accumulate=1)
    plan = [Detour(2, kind="inline", domain=0), Detour(3, kind="inline", domain=1)]
    want = (
        "in-line detours of 5 steps (starting at batch 4) end after the next round boundary "
        "(batch 8): raise balance.steps_per_round or shorten the detours (the strategy's "
        "detour steps / sweeps)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(want) + "$"):
        h.runner.start(plan, h.trainer, h.module, Sampler(4), np.full(M, 0.5), 8, reduce_before)
