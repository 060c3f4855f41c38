"""Static strategies: stratified, natural (temperature), static (config / summary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.balance.strategies.base import MixtureContext
from rnb.balance.strategies.natural import Natural
from rnb.balance.strategies.static import Static
from rnb.balance.strategies.stratified import Stratified

CTX = MixtureContext(["a", "b", "c"], np.array([10, 30, 60]), np.array([0.2, 0.3, 0.5]))


def _setup(strategy):
    strategy.setup(CTX)
    return strategy


def test_stratified_uniform() -> None:
    np.testing.assert_allclose(_setup(Stratified()).initial_weights(), [1 / 3] * 3)


@pytest.mark.parametrize(("tau", "expected"), [(1.0, [0.1, 0.3, 0.6]), (1e9, [1 / 3] * 3)])
def test_natural(tau: float, expected: list[float]) -> None:
    np.testing.assert_allclose(_setup(Natural(tau)).initial_weights(), expected, atol=1e-6)


def test_natural_temperature_half_squares_sizes() -> None:
    w = _setup(Natural(0.5)).initial_weights()
    sq = np.array([100, 900, 3600.0])
    np.testing.assert_allclose(w, sq / sq.sum())
    with pytest.raises(ValueError, match="strategy.temperature"):
        Natural(0)


def test_static_list_and_mapping() -> None:
    listed = _setup(Static([1, 1, 2]))
    np.testing.assert_allclose(listed.initial_weights(), [0.25, 0.25, 0.5])
    record = listed.describe()["transfer"]
    assert record["sum_given"] == record["sum_matched"] == 4.0
    mapped = _setup(Static({"c": 2.0, "a": 1.0, "b": 1.0}))  # any order: matched by name
    np.testing.assert_allclose(mapped.initial_weights(), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match=r"missing \['a', 'b'\].*extra \['z'\]"):
        _setup(Static({"c": 1.0, "z": 1.0})).initial_weights()
    with pytest.raises(ValueError, match="expected 3 weights"):
        _setup(Static([1, 2])).initial_weights()


def test_static_from_summary_final_and_average(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    traj = [{"step": 0, "weights": [1, 0, 0]}, {"step": 10, "weights": [0, 0, 1]}]
    path.write_text(json.dumps({"domains": ["a", "b", "c"], "weights_trajectory": traj}))
    np.testing.assert_allclose(_setup(Static(from_summary=str(path))).initial_weights(), [0, 0, 1])
    avg = _setup(Static(from_summary=str(path), average=True)).initial_weights()
    np.testing.assert_allclose(avg, [0.5, 0, 0.5])
    with pytest.raises(FileNotFoundError, match="strategy.from_summary"):
        _setup(Static(from_summary=str(tmp_path / "none.json"))).initial_weights()
