"""`DetourRunner.state_dict` / `load_state_dict`: a checkpoint taken in the middle of an
in-line plan resumes it exactly, and old or hand-written states restore sane defaults.

Drives the runner with the recorded fake `run_probe` of `test_detour_runner_inline`.
Checkpoints hold plain types only, so every state goes through a JSON round trip first.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rnb.balance.detour_plan import Detour
from rnb.balance.detours import DetourRunner
from tests.unit.test_detour_runner_inline import Harness, _check, _loss, reduce_after


def _through_json(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state))


def _assert_idle(runner: DetourRunner) -> None:
    assert runner.plan == [] and runner.results == [] and runner.starts == []
    assert runner.pending_before is None and not runner.active


def test_a_checkpoint_between_two_inline_detours_resumes_the_plan_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = [Detour(2, kind="inline", domain=1), Detour(3, kind="inline", mixture=[1.0, 3.0])]
    h = Harness(monkeypatch, accumulate=1)
    h.start(plan, first=4, boundary=9)  # detours on batches 4-5 and 6-8
    assert h.run(range(0, 7)) == []  # first detour done; one batch into the second
    state = _through_json(h.runner.state_dict())
    step, log_at_cut = h.trainer.global_step, list(h.log)
    assert len(log_at_cut) == 2  # "before" at 4, "after" at 6

    # the original run goes on ...
    [(consumed, results)] = h.run(range(7, 12))
    assert consumed == 9

    # ... and a fresh runner restored from the checkpoint
    r = Harness(monkeypatch, accumulate=1)  # now run_probe records into r
    r.trainer.global_step = step  # restored by Lightning, not by the runner
    r.log = list(log_at_cut)  # evaluations go on numbering where the checkpoint left them
    r.runner.load_state_dict(state)
    assert r.runner.plan == plan and r.runner.starts == [4, 6] and r.runner.active
    done, pending = r.runner.results
    _check(done, plan[0], before=1, after=2, step=6)
    assert done.before.dtype == np.float64 and done.after.dtype == np.float64
    assert pending is None
    assert r.runner.pending_before.dtype == np.float64
    np.testing.assert_array_equal(r.runner.pending_before, _loss(2))  # the first one's "after"
    assert r.runner.summary() == {"evaluations": 2, "sandboxed_steps": 0, "inline_steps": 2}

    [(consumed_r, results_r)] = r.run(range(7, 12))
    assert consumed_r == consumed
    assert r.log == h.log  # no second "before" at batch 6: the restored one is reused
    assert len(results_r) == len(results) == 2
    for got, want in zip(results_r, results, strict=True):
        assert got.detour == want.detour and got.step == want.step
        np.testing.assert_array_equal(got.before, want.before)
        np.testing.assert_array_equal(got.after, want.after)
    _check(results_r[1], plan[1], before=2, after=3, step=9)
    assert r.runner.summary() == h.runner.summary()
    assert r.runner.summary() == {"evaluations": 3, "sandboxed_steps": 0, "inline_steps": 5}


@pytest.mark.parametrize(
    "state",
    [
        {},  # a checkpoint from before the runner had a state
        {"plan": [], "results": [], "starts": [], "pending_before": None},  # no counters yet
    ],
    ids=["empty", "no-counters"],
)
def test_an_old_or_empty_state_restores_an_idle_runner_with_zero_counts(
    state: dict[str, Any],
) -> None:
    runner = DetourRunner({"eval_size": 8}, seed=0)
    # a runner mid-plan with counts: the load must overwrite all of it
    runner.plan = [Detour(1, kind="inline", domain=0)]
    runner.results, runner.starts = [None], [3]
    runner.pending_before = np.ones(2)
    runner.evaluations, runner.sandboxed_steps, runner.inline_steps = 5, 6, 7
    runner.load_state_dict(state)
    _assert_idle(runner)
    assert runner.summary() == {"evaluations": 0, "sandboxed_steps": 0, "inline_steps": 0}
    assert runner.state_dict() == {
        "plan": [],
        "results": [],
        "starts": [],
        "pending_before": None,
        "evaluations": 0,
        "sandboxed_steps": 0,
        "inline_steps": 0,
    }


@pytest.mark.parametrize("missing", ["evaluations", "sandboxed_steps", "inline_steps"])
def test_a_missing_counter_defaults_to_zero_and_the_others_load(missing: str) -> None:
    full = {"evaluations": 4, "sandboxed_steps": 3, "inline_steps": 2}
    runner = DetourRunner({"eval_size": 8}, seed=0)
    runner.load_state_dict({k: v for k, v in full.items() if k != missing})
    assert runner.summary() == {**full, missing: 0}
    _assert_idle(runner)


def test_pending_before_saved_as_ints_comes_back_as_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, accumulate=1)
    one = Detour(1, kind="inline", domain=0)
    state = {
        "plan": [one.to_dict()],
        "results": [None],
        "starts": [3],
        "pending_before": [2, 7],  # hand-written: ints
        "evaluations": 1,
        "sandboxed_steps": 0,
        "inline_steps": 0,
    }
    h.runner.load_state_dict(state)
    assert h.runner.pending_before.dtype == np.float64
    np.testing.assert_array_equal(h.runner.pending_before, [2.0, 7.0])
    h.log = [("before", 3, None)]  # the evaluation the state stands for
    [(consumed, [res])] = h.run(range(3, 5))
    assert consumed == 4 and h.log[1:] == [("after", 4, reduce_after)]
    assert res.before.dtype == np.float64 and res.after.dtype == np.float64
    np.testing.assert_array_equal(res.before, [2.0, 7.0])
    np.testing.assert_array_equal(res.drop, [2.0 - 2.0, 7.0 - 20.0])
    assert h.runner.summary() == {"evaluations": 2, "sandboxed_steps": 0, "inline_steps": 1}
