"""`DetourRunner` through sandboxed plans without a training loop: what each sandbox is handed
(the ranks' sum, the learning rate, this rank's rows), which evaluations run and when, and
which tokens the FLOPs meter is charged.

The sandbox and the probe evaluation are replaced by recorders: a sandbox step reports
``2**24 + 1`` tokens (a float32 sum over ranks would round it), an evaluation returns a
distinct loss vector per call. The runner's own `evaluate` and counts stay real. Rank 1 of
a world of 2 whose sum over the ranks doubles a tensor (the other rank's copy).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import rnb.balance.detours as detours_mod
from rnb.balance.detour_plan import Detour
from rnb.balance.detours import DetourRunner

M, BATCH, N_PARAMS, TOKENS = 2, 3, 1000, 2**24 + 1


class Meter:
    """Records the FLOPs it is charged."""

    def __init__(self) -> None:
        self.flops: list[float] = []

    def add_flops(self, flops: float) -> None:
        self.flops.append(flops)


class Harness:
    """A runner bound to fake data (domain ``i``: training rows ``10 i .. 10 i + 9``), a
    recording sandbox and probe, and a sum over the ranks that logs what it sums."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runner = r = DetourRunner({"eval_size": 8}, seed=0)
        r.m, r.accumulate, r.meter = M, 1, Meter()  # what setup() binds and this path reads
        r.eval_split, r.probe, r.eval_batch_size = "eval", np.arange(8), 4
        r.train_split, r.batch_size = "train", BATCH
        r.domains = [np.arange(10 * i, 10 * i + 10) for i in range(M)]
        self.trainer = SimpleNamespace(global_step=4, world_size=2, global_rank=1)
        self.module = SimpleNamespace(device=torch.device("cpu"), num_parameters=lambda: N_PARAMS)
        self.log: list[tuple[Any, ...]] = []  # what happened, in order
        self.summed: list[tuple[tuple[int, ...], torch.dtype]] = []
        self.inside = False  # a sandbox is entered
        monkeypatch.setattr(detours_mod, "run_probe", self._probe)
        monkeypatch.setattr(detours_mod, "Sandbox", self._sandbox)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        self.summed.append((tuple(t.shape), t.dtype))
        return t * 2

    def _probe(self, trainer: Any, pl_module: Any, split: Any, indices: Any, **kw: Any) -> Any:
        assert (trainer, pl_module, split) == (self.trainer, self.module, "eval")
        evals = sum(1 for e in self.log if e[0] == "eval")
        self.log.append(("eval", self.inside, kw["reduce_fn"]))
        k = float(evals + 1)  # evaluation k returns [k, 10 k]: each one recognisable
        return torch.tensor([k, 10.0 * k], dtype=torch.float64), torch.ones(M)

    def _sandbox(self, trainer: Any, pl_module: Any, reduce_fn: Any, rng_seed: int) -> Any:
        assert (trainer, pl_module) == (self.trainer, self.module)
        self.log.append(("sandbox", reduce_fn))
        harness = self

        class Box:
            def __enter__(self) -> Box:
                harness.inside = True
                return self

            def __exit__(self, *exc: object) -> None:
                harness.inside = False
                harness.log.append(("exit",))

            def set_lr(self, lr: float | str) -> None:
                harness.log.append(("lr", lr))

            def step(self, split: Any, rows: np.ndarray) -> int:
                assert split == "train" and harness.inside
                harness.log.append(("step", np.array(rows)))
                return TOKENS

        return Box()

    def start(self, plan: list[Detour]) -> list[Any]:
        done = self.runner.start(
            plan, self.trainer, self.module, None, np.full(M, 0.5), 8, self.reduce
        )
        assert done is True  # sandboxed only: the plan is complete at once
        return self.runner.finish()


def test_a_one_step_detour_trains_in_a_sandbox_that_sums_over_the_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    [res] = h.start([Detour(1, "sandboxed", domain=1, lr=0.5)])
    red = h.reduce
    # the start evaluation; the sandbox (handed the ranks' sum), its rate, one step on this
    # rank's share of the global batch, the evaluation after it inside the sandbox
    assert [e[0] for e in h.log] == ["eval", "sandbox", "lr", "step", "eval", "exit"]
    assert h.log[0] == ("eval", False, red) and h.log[1] == ("sandbox", red)
    assert h.log[2] == ("lr", 0.5) and h.log[4] == ("eval", True, red)
    rows = h.log[3][1]
    assert rows.shape == (BATCH,) and set(rows) <= set(range(10, 20))  # domain 1's rows
    np.testing.assert_array_equal(res.before, [1.0, 10.0])
    np.testing.assert_array_equal(res.after, [2.0, 20.0])
    assert res.step == 4
    assert h.runner.summary() == {"evaluations": 2, "sandboxed_steps": 1, "inline_steps": 0}
    # the tokens, summed over the ranks in float64 (exact above 2**24): 6·N per token
    assert h.summed == [((1,), torch.float64)]
    assert h.runner.meter.flops == [6.0 * N_PARAMS * 2 * TOKENS]


def test_a_zero_step_detour_is_the_start_evaluation_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    plan = [
        Detour(0, "sandboxed", domain=0),
        Detour(2, "sandboxed", mixture=[1.0, 3.0]),
        Detour(0, "sandboxed", domain=1),
    ]
    results = h.start(plan)
    # one start evaluation for the plan; no sandbox nor evaluation for a 0-step detour
    kinds = [e[0] for e in h.log]
    assert kinds == ["eval", "sandbox", "lr", "step", "step", "eval", "exit"], kinds
    assert h.log[2] == ("lr", "current")
    for res in results[0], results[2]:
        np.testing.assert_array_equal(res.before, [1.0, 10.0])
        np.testing.assert_array_equal(res.after, [1.0, 10.0])
    np.testing.assert_array_equal(results[1].after, [2.0, 20.0])
    assert [r.detour for r in results] == plan
    assert h.runner.summary() == {"evaluations": 2, "sandboxed_steps": 2, "inline_steps": 0}
    assert h.summed == [((1,), torch.float64)]  # the 2-step detour's tokens only
    assert h.runner.meter.flops == [6.0 * N_PARAMS * 2 * (2 * TOKENS)]
