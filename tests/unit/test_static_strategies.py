"""Static strategies: stratified, natural (temperature), static (config / summary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.balance.strategies.base import MixtureContext, RoundStats, uniform
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


# ---------------------------------------------------------------- pinned by mutation testing
def _round() -> RoundStats:
    return RoundStats(step=4, round=0, counts=torch.tensor([3.0, 0.0, 1.0]),
                      loss_sum=torch.tensor([6.0, 0.0, 0.5]))  # fmt: skip


def test_static_strategies_keep_their_weights_every_round() -> None:
    stats, drifted = _round(), np.array([0.7, 0.2, 0.1])
    strat = _setup(Stratified())
    np.testing.assert_array_equal(strat.update(stats, drifted), [1 / 3] * 3)
    nat = _setup(Natural(0.5))
    np.testing.assert_array_equal(nat.update(stats, drifted), nat.initial_weights())
    static = _setup(Static([1, 1, 2]))
    p0 = static.initial_weights()
    np.testing.assert_array_equal(static.update(stats, p0), [0.25, 0.25, 0.5])
    assert all(s.static for s in (strat, nat, static)) and not (strat.needs | static.needs)


def test_base_contract_uniform_mean_loss_state_and_describe() -> None:
    np.testing.assert_array_equal(uniform(4), [0.25] * 4)
    torch.testing.assert_close(
        _round().mean_loss, torch.tensor([2.0, float("nan"), 0.5]), equal_nan=True
    )
    s = _setup(Stratified())
    assert s.ctx is CTX and s.state_dict() == {} and s.load_state_dict({}) is None
    assert s.describe() == {"name": "Stratified"}
    nat = _setup(Natural(2))
    assert nat.describe() == {"name": "Natural", "temperature": 2.0}


def test_describe_makes_every_value_json() -> None:
    class Probe(Stratified):
        def __init__(self) -> None:
            self.arr, self.ten = np.array([1.0, 2.0]), torch.tensor([3, 4])
            self.gen, self.tup, self.nested = np.float32(0.5), (1, "x"), {1: [np.int64(2)]}
            self.flag, self.none, self.path, self._private = True, None, Path("a/b"), 1

    d = _setup(Probe()).describe()
    assert d == {
        "name": "Probe", "arr": [1.0, 2.0], "ten": [3, 4], "gen": 0.5, "tup": [1, "x"],
        "nested": {"1": [2]}, "flag": True, "none": None, "path": "a/b",
    }  # fmt: skip
    assert type(d["gen"]) is float and type(d["nested"]["1"][0]) is int
    json.dumps(d)


def test_domain_definition_names_what_defines_the_domains() -> None:
    assert MixtureContext.domain_definition("source", "abc") == "regroup:abc"
    assert MixtureContext.domain_definition("source", None) == "data.domain_field=source"
    assert MixtureContext.domain_definition(None, None) == "one domain (no data.domain_field)"
    assert MixtureContext.domain_definition("", "") == "one domain (no data.domain_field)"
    assert CTX.num_domains == 3 and CTX.seed == 0 and CTX.output_dir is None
    assert CTX.domain_fingerprint is None
