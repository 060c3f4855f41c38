"""Static baselines' edge cases found by mutation testing: defaults, overflow, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.balance.strategies.base import MixtureContext
from rnb.balance.strategies.natural import Natural
from rnb.balance.strategies.static import Static

CTX = MixtureContext(["a", "b", "c"], np.array([10, 30, 60]), np.array([0.2, 0.3, 0.5]))


def _setup(strategy):
    strategy.setup(CTX)
    return strategy


def test_natural_default_temperature_is_size_proportional() -> None:
    np.testing.assert_allclose(_setup(Natural()).initial_weights(), [0.1, 0.3, 0.6])


def test_natural_small_temperature_does_not_overflow() -> None:
    s = Natural(0.01)  # logits log(n)/T up to ~690: exp would overflow without the shift
    s.setup(MixtureContext(["a", "b"], np.array([10, 1000]), np.array([0.5, 0.5])))
    w = s.initial_weights()
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w, [0.0, 1.0], atol=1e-12)


def test_static_needs_weights_or_summary() -> None:
    with pytest.raises(
        ValueError, match=r"^strategy\.weights or strategy\.from_summary must be set"
    ):
        Static()


@pytest.mark.parametrize(
    "weights", [[1.0, -0.5, 1.0], [float("nan"), 1.0, 1.0], [0.0, 0.0, 0.0], [float("inf"), 1, 1]]
)
def test_static_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(
        ValueError, match=r"^strategy\.weights: weights must be finite, >= 0, not all 0"
    ):
        _setup(Static(weights)).initial_weights()


def test_static_from_summary_last_or_average(tmp_path: Path) -> None:
    traj = [{"step": 0, "weights": [0.2, 0.3, 0.5]}, {"step": 4, "weights": [0.6, 0.2, 0.2]},
            {"step": 8, "weights": [0.1, 0.1, 0.8]}]  # fmt: skip
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"domains": ["a", "b", "c"], "weights_trajectory": traj}))
    np.testing.assert_allclose(
        _setup(Static(from_summary=str(path))).initial_weights(), [0.1, 0.1, 0.8]
    )
    avg = _setup(Static(from_summary=str(path), average=True)).initial_weights()
    np.testing.assert_allclose(avg, [0.3, 0.2, 0.5])
    path.write_text(json.dumps({"domains": ["a", "b", "c"], "weights_trajectory": []}))
    with pytest.raises(
        ValueError, match=r"strategy\.from_summary='.*' has an empty weights_trajectory"
    ):
        _setup(Static(from_summary=str(path))).initial_weights()
