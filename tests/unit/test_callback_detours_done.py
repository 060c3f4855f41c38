"""`BalanceCallback._detours_done`: the strategy's post-detour mixture is checked and adopted.

Stubs stand in for the trainer, detours and sampler, so what is pinned is the method's own
logic: the current mixture is handed over (a copy), warm-up rounds keep the mixture, an
off-simplex answer is refused naming the hook, and an accepted one reaches the sampler.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rnb.balance.callback import BalanceCallback


def _callback(answer: Any, round_: int = 1, warmup: int = 0) -> SimpleNamespace:
    seen: dict[str, Any] = {}

    def detours_done(results: list, weights: np.ndarray) -> Any:
        seen["results"], seen["weights"] = results, weights
        weights[:] = 0.0  # a strategy scribbling on its argument must not reach the callback
        return answer

    cb = SimpleNamespace(
        weights=np.array([0.25, 0.75]),
        round=round_,
        warmup_rounds=warmup,
        seen=seen,
        strategy=SimpleNamespace(detours_done=detours_done),
        detours=SimpleNamespace(finish=lambda: ["r0", "r1"]),
        trajectory=[],
        recorded=[],
        applied=[],
    )
    cb._accept = partial(BalanceCallback._accept, cb)
    cb._apply = lambda pl_module: cb.applied.append((pl_module, cb.weights.copy()))
    cb._record = lambda step: cb.recorded.append(step)
    return cb


TRAINER = SimpleNamespace(world_size=1, global_step=7)


def test_accepted_mixture_is_adopted_applied_and_recorded() -> None:
    cb = _callback(np.array([0.5, 0.5], dtype=np.float32))  # adopted as float64
    cb.trajectory = [{"step": 3}, {"step": 7}]
    BalanceCallback._detours_done(cb, TRAINER, "module")
    assert cb.trajectory == [{"step": 3}]  # the replaced mixture trained no step at 7
    assert cb.seen["results"] == ["r0", "r1"]
    np.testing.assert_array_equal(cb.seen["weights"], [0.0, 0.0])  # its own copy, scribbled
    np.testing.assert_array_equal(cb.weights, [0.5, 0.5])
    assert cb.weights.dtype == np.float64
    assert len(cb.applied) == 1 and cb.applied[0][0] == "module"
    assert cb.recorded == [7]


def test_none_or_warmup_keeps_the_mixture() -> None:
    for cb in (_callback(None), _callback([0.5, 0.5], round_=0, warmup=1)):
        cb.trajectory = [{"step": 7}]
        BalanceCallback._detours_done(cb, TRAINER, "module")
        assert cb.trajectory == [{"step": 7}]
        np.testing.assert_array_equal(cb.weights, [0.25, 0.75])
        assert cb.applied == [] and cb.recorded == []


def test_off_simplex_answer_is_refused_naming_the_hook() -> None:
    cb = _callback([0.9, 0.9])
    with pytest.raises(RuntimeError, match=r"SimpleNamespace\.detours_done returned off-simplex"):
        BalanceCallback._detours_done(cb, TRAINER, "module")
