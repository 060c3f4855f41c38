"""benchmarks/overhead.py: runs advance one step at a time, in ABBA turn order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_benchmark

pytest.importorskip("greenlet")


def load_bench():
    return load_benchmark("overhead")


def test_runs_interleave_step_by_step_in_abba_order(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    bench = load_bench()
    from greenlet import greenlet

    order: list[str] = []

    class Logged(bench.TakeTurns):
        def __init__(self, name: str, scheduler) -> None:
            super().__init__(scheduler)
            self.name = name

        def on_train_batch_start(self, *args) -> None:
            order.append(self.name)
            super().on_train_batch_start(*args)

    scheduler = bench.Scheduler()
    runs = {}
    for name, strategy in [("A", "stratified"), ("B", "rnb")]:
        clock = Logged(name, scheduler)
        over = [*tiny_overrides, "logger=none", "trainer.max_steps=6"]
        runs[name] = (bench.build(strategy, over, 6, clock, tmp_path), clock)
        scheduler.runs.append(greenlet(lambda run=runs[name][0]: run["trainer"].fit(
            run["model"], datamodule=run["datamodule"])))  # fmt: skip
    scheduler.run_all()
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A", "A", "B", "B", "A"]
    for run, clock in runs.values():
        assert run["trainer"].global_step == 6 and len(clock.times) == 6
        # every step's phases are timed, and they add up to the step
        assert all(len(clock.phases[p]) == 6 for p in bench.PHASES)
        total = sum(np.asarray(clock.phases[p]) for p in bench.PHASES)
        np.testing.assert_allclose(total, clock.times, rtol=0.05, atol=2e-3)
    lo, hi = bench.bootstrap_ratio(*(np.asarray(clock.times) for _, clock in runs.values()))
    assert 0 < lo <= hi
