"""Aioli: un-mixing, normalisation, EMA, the update from detour results, sweep plans."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.balance.aioli_math import ema_graph, normalize_graph, perturbation_matrix, unmix
from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.strategies.aioli import Aioli
from rnb.balance.strategies.base import MixtureContext, RoundStats


def _ctx(m: int = 3, seed: int = 0) -> MixtureContext:
    return MixtureContext([f"d{i}" for i in range(m)], np.full(m, 10), np.full(m, 1 / m), seed=seed)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def test_perturbation_matrix() -> None:
    P = perturbation_matrix(4, 0.7)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(P), 0.7)
    np.testing.assert_allclose(P[0, 1:], 0.1)
    with pytest.raises(ValueError, match=r"strategy.one_hot_factor must be in \(1/m, 1\]"):
        perturbation_matrix(4, 0.25)  # = 1/m: every row uniform, singular


@pytest.mark.parametrize("f", [0.625, 0.75, 0.9])
def test_unmix_recovers_a_known_A(f: float) -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    D = A @ perturbation_matrix(5, f).T  # drops under Aioli's linear mixing law
    np.testing.assert_allclose(unmix(D, f, "solve"), A, atol=1e-12)
    np.testing.assert_allclose(unmix(D, 1.0, "solve"), D)  # one-hot sweeps: D is A
    np.testing.assert_allclose(unmix(D, f, "diagonal"), np.diag(np.diag(D) / f))


def test_normalize_and_ema_hand_computed() -> None:
    A = np.array([[1.0, -1.0], [0.0, 2.0]])
    np.testing.assert_allclose(normalize_graph(A), np.array([[2.0, 0.0], [1.0, 3.0]]) / 6.0)
    np.testing.assert_allclose(
        normalize_graph(np.array([[1.0, 1.0], [0.0, 2.0]])), [[0.25, 0.25], [0, 0.5]]
    )
    np.testing.assert_array_equal(normalize_graph(np.zeros((2, 2))), np.zeros((2, 2)))
    first = ema_graph(None, A, 0.1)
    np.testing.assert_array_equal(first, A)
    B = np.ones((2, 2))
    np.testing.assert_allclose(ema_graph(first, B, 0.1), 0.9 * B + 0.1 * A)


def _results(strategy: Aioli, A: np.ndarray, loss0: np.ndarray) -> list[DetourResult]:
    """Back-to-back detour results whose drops follow ``D = A Pᵀ`` exactly (``A [m, m]``, or
    ``[lp_rounds, m, m]``: one ``A`` per sweep)."""
    m = loss0.shape[0]
    P = perturbation_matrix(m, strategy.one_hot_factor)
    per_sweep = A if A.ndim == 3 else [A] * strategy.lp_rounds
    out, loss = [], loss0.copy()
    for k, j in enumerate(strategy._order):
        after = loss - per_sweep[k // m] @ P[j]
        out.append(
            DetourResult(Detour(strategy.lp_steps, "inline", mixture=list(P[j])), loss, after, 0)
        )
        loss = after
    return out


def test_update_from_detours_follows_the_rule() -> None:
    s = Aioli(lp_rounds=2, lp_steps=3, one_hot_factor=0.75, eta=0.5, ema=0.1)
    s.setup(_ctx(3))
    plan = s.plan_detours(None, np.full(3, 1 / 3))
    assert len(plan) == 6 and all(d.kind == "inline" and d.steps == 3 for d in plan)
    assert sorted(s._order[:3]) == sorted(s._order[3:]) == [0, 1, 2]  # two full sweeps
    P = perturbation_matrix(3, 0.75)
    for d, j in zip(plan, s._order, strict=True):
        np.testing.assert_allclose(d.mixture, P[j])
    A = np.array([[0.3, 0.1, 0.0], [0.05, 0.2, -0.02], [0.0, 0.0, 0.1]])
    p1 = s.detours_done(_results(s, A, np.array([3.0, 2.0, 1.0])), np.full(3, 1 / 3))
    An = normalize_graph(A)
    np.testing.assert_allclose(s._last_A, An, atol=1e-12)
    np.testing.assert_allclose(p1, _softmax(0.5 * An.sum(axis=0)), atol=1e-12)
    # second round: EMA over rounds, always from uniform
    s.plan_detours(RoundStats(10, 0, torch.ones(3), torch.ones(3)), p1)
    A2 = np.eye(3) * 0.2
    p2 = s.detours_done(_results(s, A2, np.array([2.0, 2.0, 2.0])), p1)
    smooth = 0.9 * normalize_graph(A2) + 0.1 * An
    np.testing.assert_allclose(p2, _softmax(0.5 * smooth.sum(axis=0)), atol=1e-12)


def test_cumulative_form_without_ema() -> None:
    s = Aioli(lp_rounds=1, lp_steps=1, one_hot_factor=1.0, eta=1.0, ema=None, normalize=False)
    s.setup(_ctx(2))
    s.plan_detours(None, np.full(2, 0.5))
    A = np.array([[0.2, 0.0], [0.1, 0.4]])
    p1 = s.detours_done(_results(s, A, np.array([2.0, 2.0])), np.array([0.9, 0.1]))
    np.testing.assert_allclose(p1, _softmax(A.sum(axis=0)), atol=1e-12)  # first: from uniform
    s.plan_detours(RoundStats(4, 0, torch.ones(2), torch.ones(2)), p1)
    p2 = s.detours_done(_results(s, A, np.array([2.0, 2.0])), p1)
    np.testing.assert_allclose(p2, _softmax(np.log(p1) + A.sum(axis=0)), atol=1e-12)


def test_plans_are_seeded_and_survive_state() -> None:
    a, b = Aioli(lp_rounds=3), Aioli(lp_rounds=3)
    a.setup(_ctx(4, seed=7))
    b.setup(_ctx(4, seed=7))
    a.plan_detours(None, np.full(4, 0.25))
    b.load_state_dict(a.state_dict())
    assert b._order == a._order
    nxt = a.plan_detours(None, np.full(4, 0.25))
    assert [d.mixture for d in b.plan_detours(None, np.full(4, 0.25))] == [d.mixture for d in nxt]
    one = Aioli()
    one.setup(_ctx(1))
    assert one.plan_detours(None, np.ones(1)) == []  # one domain: nothing to learn


def test_restricted_prior(tmp_path: Path) -> None:
    s = Aioli(prior={"weights": [3, 1]}, prior_steps=8, one_hot_factor=0.75)
    s.setup(_ctx(2))
    np.testing.assert_allclose(s.initial_weights(), [0.75, 0.25])
    assert s.plan_detours(None, np.array([0.75, 0.25])) == []
    assert s.plan_detours(RoundStats(4, 0, torch.ones(2), torch.ones(2)), np.ones(2) / 2) == []
    assert len(s.plan_detours(RoundStats(8, 1, torch.ones(2), torch.ones(2)), np.ones(2) / 2)) == 8
    np.testing.assert_allclose(
        s.update(RoundStats(8, 1, torch.ones(2), torch.ones(2)), np.array([0.6, 0.4])), [0.6, 0.4]
    )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"lp_rounds": 0}, "strategy.lp_rounds"),
        ({"lp_steps": 0}, "strategy.lp_steps"),
        ({"round_steps": 0}, "strategy.round_steps"),
        ({"one_hot_factor": 0.0}, "strategy.one_hot_factor"),
        ({"one_hot_factor": 1.5}, "strategy.one_hot_factor"),
        ({"eta": float("inf")}, "strategy.eta"),
        ({"ema": 1.0}, "strategy.ema"),
        ({"unmix": "lstsq"}, "strategy.unmix"),
        ({"prior_steps": 1}, "^strategy.prior_steps needs strategy.prior"),
        ({"prior_steps": -1, "prior": {"weights": [1]}}, "strategy.prior_steps"),
    ],
)
def test_bad_keys_name_themselves(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Aioli(**kwargs)


def test_edge_values_are_accepted() -> None:
    assert Aioli(ema=0.0).ema == 0.0  # γ = 0: this round's A only
    assert Aioli(one_hot_factor=1.0, unmix="diagonal").unmix == "diagonal"
    assert Aioli(round_steps=7).default_steps_per_round == 7  # K when steps_per_round is null


def test_one_hot_factor_checked_against_m() -> None:
    s = Aioli(one_hot_factor=0.2)  # <= 1/m for m = 4
    with pytest.raises(ValueError, match="strategy.one_hot_factor"):
        s.setup(_ctx(4))


def test_run_ending_inside_the_first_learnparams_is_refused() -> None:
    """A run of <= m·r·s (+ prior) steps would train only on perturbed mixtures and still
    complete like a result; it is refused with the keys to change (aioli_paper at 12 steps
    used to complete with uniform final weights and 0 rounds)."""
    ctx = MixtureContext(
        [f"d{i}" for i in range(6)], np.full(6, 10), np.full(6, 1 / 6), max_steps=120
    )
    with pytest.raises(ValueError, match=r"ends at step 120 .*trainer.max_steps=120") as err:
        Aioli(lp_rounds=2, lp_steps=10).setup(ctx)
    assert "strategy.lp_rounds" in str(err.value) and "strategy.lp_steps" in str(err.value)
    Aioli(lp_rounds=2, lp_steps=10).setup(replace(ctx, max_steps=121))  # one Aioli step: fine
    Aioli(lp_rounds=2, lp_steps=10).setup(replace(ctx, max_steps=None))  # no step limit
    with pytest.raises(ValueError, match=r"strategy.prior_steps=5"):
        Aioli(lp_rounds=2, lp_steps=10, prior={"weights": [1] * 6}, prior_steps=5).setup(
            replace(ctx, max_steps=121)
        )


@pytest.mark.parametrize("mode", ["solve", "diagonal"])
def test_sweeps_are_averaged_then_unmixed(mode: str) -> None:
    """``D`` is the mean of the sweeps' drops (not the last sweep's, not their sum); a domain
    without probe examples (nan losses) contributes drop 0; ``strategy.unmix`` is used."""
    s = Aioli(lp_rounds=2, lp_steps=1, one_hot_factor=0.75, eta=1.0, normalize=False, unmix=mode)
    s.setup(_ctx(3))
    s.plan_detours(None, np.full(3, 1 / 3))
    A1 = np.array([[0.3, 0.1, 0.0], [0.05, 0.2, -0.02], [0.1, 0.0, 0.1]])
    A2 = np.array([[0.1, 0.0, 0.2], [0.0, 0.4, 0.0], [0.3, 0.1, 0.1]])
    p = s.detours_done(_results(s, np.stack([A1, A2]), np.array([3.0, 2.0, np.nan])), np.ones(3))
    mean_A = (A1 + A2) / 2
    mean_A[2] = 0.0  # domain 2 has no probe loss: its drops count as 0
    if mode == "diagonal":  # A_ii = D_ii / f with D = Ā Pᵀ
        mean_A = np.diag(np.diag(mean_A @ perturbation_matrix(3, 0.75).T) / 0.75)
    np.testing.assert_allclose(s._last_A, mean_A, atol=1e-12)
    np.testing.assert_allclose(p, _softmax(mean_A.sum(axis=0)), atol=1e-12)


def test_a_missing_detour_result_is_refused() -> None:
    """Results are matched to the planned sweep order one by one: a short list would
    silently drop a sweep's drops from ``D``."""
    s = Aioli(lp_rounds=1, lp_steps=1)
    s.setup(_ctx(3))
    s.plan_detours(None, np.full(3, 1 / 3))
    results = _results(s, np.eye(3) * 0.1, np.full(3, 2.0))
    with pytest.raises(ValueError, match="zip"):
        s.detours_done(results[:-1], np.full(3, 1 / 3))


def test_large_eta_stays_on_the_simplex() -> None:
    """``η · 1ᵀA`` of several hundred (exp overflows above ~709) still gives the softmax."""
    s = Aioli(lp_rounds=1, lp_steps=1, one_hot_factor=1.0, eta=2000.0)
    s.setup(_ctx(2))
    s.plan_detours(None, np.full(2, 0.5))
    A = np.array([[0.3, 0.0], [0.1, 0.2]])  # normalised: column sums 0.4/0.6 and 0.2/0.6
    p = s.detours_done(_results(s, A, np.full(2, 2.0)), np.full(2, 0.5))
    np.testing.assert_allclose(p, [1.0, np.exp(-2000 * 0.2 / 0.6)], rtol=1e-12, atol=0)


def test_cumulative_update_revives_a_zero_weight() -> None:
    """A weight that underflowed to 0 is floored at 1e-300 before the log (no ``log 0``):
    ``p_0 = 1e-300·e^{η s_0} / (1e-300·e^{η s_0} + e^{η s_1})``. The update counter counts."""
    s = Aioli(lp_rounds=1, lp_steps=1, one_hot_factor=1.0, eta=1.0, normalize=False)
    s.setup(_ctx(2))
    A = np.array([[10.0, 0.0], [0.0, 0.0]])  # column sums: s = (10, 0)
    for n in (1, 2, 3):
        s.plan_detours(None if n == 1 else RoundStats(n, 0, torch.ones(2), torch.ones(2)), None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # log(0) would warn
            p = s.detours_done(_results(s, A, np.full(2, 5.0)), np.array([0.0, 1.0]))
        assert s.state_dict()["updates"] == n and s.state_dict()["boundaries"] == n
        if n == 1:  # the first update starts from uniform, whatever the weights
            np.testing.assert_allclose(p, _softmax(np.array([10.0, 0.0])), rtol=1e-12)
        else:
            assert p[0] == pytest.approx(1e-300 * np.exp(10.0), rel=1e-9) and p[1] == 1.0


def test_initial_weights_and_describe() -> None:
    s = Aioli(eta=0.5, lp_rounds=1, lp_steps=1, one_hot_factor=1.0)
    s.setup(_ctx(3))
    np.testing.assert_array_equal(s.initial_weights(), np.full(3, 1 / 3))  # no prior: uniform
    d = s.describe()
    assert (d["name"], d["eta"], d["lp_rounds"], d["last_A"]) == ("Aioli", 0.5, 1, None)
    s.plan_detours(None, np.full(3, 1 / 3))
    A = np.array([[0.2, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.1, 0.1]])
    s.detours_done(_results(s, A, np.full(3, 2.0)), np.full(3, 1 / 3))
    np.testing.assert_allclose(s.describe()["last_A"], A / 0.5, atol=1e-12)  # normalised A


def test_sweep_orders_are_seeded_by_seed_and_boundary() -> None:
    """Boundary ``k`` draws its ``lp_rounds`` sweep orders from ``rng((seed, 5, k))`` (the
    same on every rank and after a resume); each detour favours its domain and says so."""
    s = Aioli(lp_rounds=2, lp_steps=3, one_hot_factor=0.75)
    s.setup(_ctx(4, seed=11))
    for k in range(3):
        plan = s.plan_detours(
            None if k == 0 else RoundStats(k, 0, torch.ones(4), torch.ones(4)), None
        )
        rng = np.random.default_rng([11, 5, k])
        order = [int(j) for _ in range(2) for j in rng.permutation(4)]
        assert [d.tag for d in plan] == [f"lp/{j}" for j in order]
        assert [int(np.argmax(d.mixture)) for d in plan] == order
        assert s.state_dict()["boundaries"] == k + 1


def test_prior_steps_count_from_step_0() -> None:
    """With ``prior_steps=1`` the boundary before step 1 is still inside the prior."""
    s = Aioli(prior={"weights": [1, 1]}, prior_steps=1, lp_rounds=1, lp_steps=1)
    s.setup(_ctx(2))
    assert s.plan_detours(None, np.full(2, 0.5)) == []
    assert len(s.plan_detours(RoundStats(1, 0, torch.ones(2), torch.ones(2)), np.ones(2) / 2)) == 2


def test_two_domain_run_ending_inside_the_first_learnparams_is_refused() -> None:
    ctx = MixtureContext(["a", "b"], np.full(2, 10), np.full(2, 0.5), max_steps=4)
    with pytest.raises(ValueError, match=r"or lower strategy\.lp_rounds / strategy\.lp_steps$"):
        Aioli(lp_rounds=2, lp_steps=1).setup(ctx)
    Aioli(lp_rounds=2, lp_steps=1).setup(replace(ctx, domain_names=["a"], max_steps=1))  # m = 1
