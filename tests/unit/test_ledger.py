"""Per-domain draw ledger: time-averaged mixture, epochs, starvation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rnb.balance.ledger import DomainLedger, time_average


def test_time_average_weighs_each_mixture_by_the_steps_it_held() -> None:
    traj = [
        {"step": 0, "weights": [1.0, 0.0]},
        {"step": 4, "weights": [0.0, 1.0]},
        {"step": 10, "weights": [0.5, 0.5]},
    ]
    # [1,0] for 4 steps, [0,1] for 6 steps, [.5,.5] for 2 steps (until step 12)
    expected = (4 * np.array([1, 0]) + 6 * np.array([0, 1]) + 2 * np.array([0.5, 0.5])) / 12
    np.testing.assert_allclose(time_average(traj, 12), expected)


def test_time_average_edge_cases() -> None:
    assert time_average([], 5) is None
    only = [{"step": 3, "weights": [0.2, 0.8]}]
    assert time_average(only, 3) == [0.2, 0.8]  # no step taken: the first mixture
    np.testing.assert_allclose(time_average(only, 9), [0.2, 0.8])


def test_epochs_and_tokens_accumulate_over_rounds_and_tail() -> None:
    led = DomainLedger(["a", "b"], [10, 40])
    led.add_round(0, np.array([5.0, 15.0]), np.array([50.0, 300.0]))
    led.add_round(1, np.array([5.0, 25.0]), np.array([40.0, 400.0]))
    out = led.summary(np.array([2.0, 0.0]), np.array([7.0, 0.0]))
    assert out["examples_per_domain"] == {"a": 12, "b": 40}
    assert out["tokens_per_domain"] == {"a": 97, "b": 700}
    assert out["epochs_per_domain"] == pytest.approx({"a": 1.2, "b": 1.0})
    assert out["starved_domains"] == []


def test_starvation_needs_consecutive_rounds_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    led = DomainLedger(["a", "b", "c"], [10, 10, 10], starve_share=0.01, starve_rounds=3)
    starving = np.array([0.0, 50.0, 50.0])
    with caplog.at_level(logging.WARNING, logger="rnb.balance.ledger"):
        led.add_round(0, starving, starving)
        led.add_round(1, starving, starving)
        led.add_round(2, np.array([2.0, 49.0, 49.0]), starving)  # 2 % breaks the streak
        led.add_round(3, starving, starving)
        led.add_round(4, starving, starving)
        assert led.summary()["starved_domains"] == []
        led.add_round(5, starving, starving)
        led.add_round(6, starving, starving)
    out = led.summary()
    assert out["starved_domains"] == ["a"] and out["starved_since_round"] == {"a": 5}
    assert sum("'a'" in r.getMessage() for r in caplog.records) == 1


def test_ledger_state_round_trip() -> None:
    led = DomainLedger(["a", "b"], [1, 1], starve_rounds=1)
    led.add_round(0, np.array([0.0, 3.0]), np.array([0.0, 9.0]))
    other = DomainLedger(["a", "b"], [1, 1], starve_rounds=1)
    other.load_state_dict(led.state_dict())
    assert other.summary() == led.summary()
