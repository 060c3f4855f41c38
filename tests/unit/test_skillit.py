"""Skill-It: the update rule on hand-computed inputs, graph estimation, loading, state."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.skills_graph import estimate_graph, load_graph
from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.skillit import SkillIt, skillit_weights

NAMES = ["a", "b", "c"]


def _ctx(tmp_path: Path | None = None, names: list[str] = NAMES) -> MixtureContext:
    m = len(names)
    return MixtureContext(names, np.full(m, 10), np.full(m, 1 / m), output_dir=tmp_path)


def _stats(loss: list[float], rnd: int = 0) -> RoundStats:
    m = len(loss)
    return RoundStats(
        step=4 * (rnd + 1),
        round=rnd,
        counts=torch.ones(m),
        loss_sum=torch.ones(m),
        extra={"eval_loss": torch.tensor(loss, dtype=torch.float64)},
    )


def _softmax(x: list[float]) -> np.ndarray:
    z = np.exp(np.asarray(x) - max(x))
    return z / z.sum()


def _result(domain: int, before: list[float], after: list[float]) -> DetourResult:
    return DetourResult(Detour(1, domain=domain), np.array(before), np.array(after), 0)


def test_weights_hand_computed() -> None:
    A = np.array([[1.0, 0.5], [0.0, 1.0]])
    p = skillit_weights(A, np.array([2.0, 1.0]), eta=0.2)
    # η·A·L = 0.2·[2 + 0.5, 1] = [0.5, 0.2]
    want = math.exp(0.5) / (math.exp(0.5) + math.exp(0.2))
    np.testing.assert_allclose(p, [want, 1 - want], rtol=1e-12)
    # a domain without probe examples (nan) contributes loss 0
    np.testing.assert_allclose(skillit_weights(A, np.array([np.nan, 1.0]), 1.0), _softmax([0.5, 1]))


def test_window_sums_the_last_w_evaluations_from_the_prior(tmp_path: Path) -> None:
    s = SkillIt(graph="identity", eta=0.5, window=2, save_graph=False)
    s.setup(_ctx(tmp_path))
    plan = s.plan_detours(None, np.full(3, 1 / 3))
    assert [(d.kind, d.steps, d.tag) for d in plan] == [("sandboxed", 0, "initial_eval")]  # L_0
    p0 = s.detours_done([_result(0, [3.0, 2.0, 1.0], [3.0, 2.0, 1.0])], np.full(3, 1 / 3))
    np.testing.assert_allclose(p0, _softmax([1.5, 1.0, 0.5]), rtol=1e-12)
    p1 = s.update(_stats([1.0, 2.0, 1.0]), p0)
    np.testing.assert_allclose(p1, _softmax([2.0, 2.0, 1.0]), rtol=1e-12)  # (L_0 + L_1)/2·...
    p2 = s.update(_stats([0.0, 0.0, 4.0], 1), p1)  # L_0 leaves the window
    np.testing.assert_allclose(p2, _softmax([0.5, 1.0, 2.5]), rtol=1e-12)
    assert s.plan_detours(_stats([1.0, 1.0, 1.0]), p2) == []  # no detours after the start
    assert not (tmp_path / "skills_graph.npy").exists()  # save_graph=false


def test_one_domain_and_absent_domain() -> None:
    s = SkillIt(graph="identity")
    s.setup(_ctx(names=["only"]))
    (initial_eval,) = s.plan_detours(None, np.ones(1))
    np.testing.assert_array_equal(initial_eval.weights(1), [1.0])  # a domain of this run
    np.testing.assert_allclose(s.detours_done([_result(0, [2.0], [2.0])], np.ones(1)), [1.0])
    np.testing.assert_allclose(s.update(_stats([float("nan")]), np.ones(1)), [1.0])


def test_infinite_loss_names_the_domain(tmp_path: Path) -> None:
    s = SkillIt(graph="identity", save_graph=False)
    s.setup(_ctx(tmp_path))
    s.detours_done([_result(0, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])], np.full(3, 1 / 3))
    with pytest.raises(ValueError, match=r"domain 'b' is inf at round 0.*model\.lr"):
        s.update(_stats([1.0, float("inf"), 1.0]), np.full(3, 1 / 3))
    with pytest.raises(KeyError, match=r"^.skillit needs RoundStats.extra\['eval_loss'\]"):
        s.update(RoundStats(0, 0, torch.ones(3), torch.ones(3)), np.full(3, 1 / 3))


def test_estimate_plans_one_sandboxed_run_per_domain_and_builds_A(tmp_path: Path) -> None:
    s = SkillIt(graph="estimate", graph_steps=7, graph_lr=0.01, eta=1.0)
    s.setup(_ctx(tmp_path))
    plan = s.plan_detours(None, np.full(3, 1 / 3))
    assert [(d.kind, d.domain, d.steps, d.lr) for d in plan] == [
        ("sandboxed", i, 7, 0.01) for i in range(3)
    ]
    assert [d.tag for d in plan] == ["graph/0", "graph/1", "graph/2"]  # named in the logs
    start = [2.0, 4.0, 1.0]
    results = [
        _result(0, start, [1.0, 3.0, 1.0]),
        _result(1, start, [2.0, 2.0, 1.0]),
        _result(2, start, [2.5, 4.0, 0.5]),
    ]
    p = s.detours_done(results, np.full(3, 1 / 3))
    A = np.array([[0.5, 0.25, 0.0], [0.0, 0.5, 0.0], [-0.25, 0.0, 0.5]])
    np.testing.assert_allclose(s.skills_graph, A, rtol=1e-12)
    np.testing.assert_allclose(p, _softmax(list(A @ np.array(start))), rtol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "skills_graph.npy"), A)
    assert (tmp_path / "skills_graph.png").stat().st_size > 1000
    # state survives a checkpoint (JSON-like types only)
    other = SkillIt(graph="estimate", eta=1.0)
    other.setup(_ctx(tmp_path))
    other.load_state_dict(s.state_dict())
    assert other.plan_detours(None, p) == []  # resumed: the graph is not estimated again
    np.testing.assert_allclose(other.update(_stats([1, 1, 1]), p), s.update(_stats([1, 1, 1]), p))


def test_estimate_graph_edges() -> None:
    res = [_result(0, [2.0, np.nan], [1.0, np.nan]), _result(1, [2.0, np.nan], [2.0, np.nan])]
    np.testing.assert_allclose(estimate_graph(res, 2), [[0.5, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="one single-domain detour per domain 0..2"):
        estimate_graph(res, 3)


def test_load_graph_validation(tmp_path: Path) -> None:
    np.testing.assert_array_equal(load_graph("identity", NAMES), np.eye(3))
    with pytest.raises(ValueError, match=r"strategy.graph='nope.npy': no such file.*estimate"):
        load_graph("nope.npy", NAMES)
    bad = tmp_path / "g.npy"
    np.save(bad, np.eye(2))
    with pytest.raises(ValueError, match=r"shape \(2, 2\), but this run has 3 domains"):
        load_graph(str(bad), NAMES)
    g = np.eye(3)
    g[1, 2] = np.nan
    np.save(bad, g)
    with pytest.raises(ValueError, match=r"entry \[1, 2\] \(b -> c\) is nan"):
        load_graph(str(bad), NAMES)
    text = tmp_path / "g.txt"
    text.write_text("not numpy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        load_graph(str(text), NAMES)


def test_missing_graph_file_fails_at_construction(tmp_path: Path) -> None:
    """strategy.graph=missing.npy used to fail only in setup, after data prep and the
    initial evaluation (a failed run dir with logs); the strategy now refuses it when built."""
    with pytest.raises(ValueError, match=r"strategy.graph='missing.npy': no such file.*identity"):
        SkillIt(graph="missing.npy")
    path = tmp_path / "g.npy"
    np.save(path, np.eye(3))
    assert SkillIt(graph=str(path)).graph == str(path)
    assert SkillIt(graph="identity").graph == "identity"


def test_binary_graph_off_diagonal_ones(tmp_path: Path) -> None:
    path = tmp_path / "binary.npy"
    np.save(path, np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]]))
    A = load_graph(str(path), NAMES, binary_off_diagonal=0.5)
    np.testing.assert_array_equal(A, [[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(load_graph(str(path), NAMES)[0], [1, 1, 0])  # null: as saved
    np.save(path, np.array([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="binary_off_diagonal=0.5 applies to 0/1 graphs"):
        load_graph(str(path), NAMES, binary_off_diagonal=0.5)
    s = SkillIt(graph=str(path))
    s.setup(_ctx(tmp_path))  # a loaded graph is saved too, for the run's record
    np.testing.assert_array_equal(np.load(tmp_path / "skills_graph.npy"), np.load(path))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"graph_steps": 0}, "strategy.graph_steps"),
        ({"eta": float("nan")}, "strategy.eta"),
        ({"window": 0}, "strategy.window"),
        ({"graph": ""}, "strategy.graph"),
        ({"binary_off_diagonal": 0.5}, "strategy.binary_off_diagonal"),
        ({"graph_lr": "slow"}, "lr must be"),
    ],
)
def test_bad_keys_name_themselves(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        SkillIt(**kwargs)


def test_describe_reports_the_skills_graph(tmp_path: Path) -> None:
    s = SkillIt(graph="estimate", graph_steps=3, eta=0.5, save_graph=False)
    s.setup(_ctx(tmp_path))
    d = s.describe()
    assert (d["name"], d["graph"], d["eta"], d["window"], d["skills_graph"]) == (
        "SkillIt",
        "estimate",
        0.5,
        3,
        None,  # not estimated yet
    )
    start = [2.0, 4.0, 1.0]
    s.detours_done([_result(i, start, start) for i in range(3)], np.full(3, 1 / 3))
    assert s.describe()["skills_graph"] == np.zeros((3, 3)).tolist()  # no drop: A = 0
    t = SkillIt(graph="identity")
    t.setup(_ctx())
    assert t.describe()["skills_graph"] == np.eye(3).tolist()
