"""The `RnB` strategy class itself, against a brute-force NumPy R&B update.

The strategy gets what the callback hands it — raw inner products of per-domain gradient
*sums* plus the per-domain counts — and must divide by ``n_i n_j``, weight by the objective
``q`` and apply the documented softmax (method.md §Stage 2). Counts and ``q`` are unequal on
purpose: skipping the division or ignoring ``q`` changes the answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.rnb import RnB

NAMES = ["a", "b", "c", "d"]
Q_EVAL = np.array([0.1, 0.2, 0.3, 0.4])
COUNTS = np.array([2.0, 5.0, 11.0, 1.0])


def brute_force(
    raw: np.ndarray, counts: np.ndarray, q: np.ndarray, lam: float, form: str
) -> np.ndarray:
    """``softmax(λ Gq/‖Gq‖)`` (or ``softmax(λ Gq)``) with ``G_ij = raw_ij / (n_i n_j)``."""
    m = len(counts)
    G = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if counts[i] > 0 and counts[j] > 0:
                G[i, j] = raw[i, j] / (counts[i] * counts[j])
    q = q / q.sum()
    gq = np.array([sum(G[i, j] * q[j] for j in range(m)) for i in range(m)])
    norm = np.sqrt(sum(x * x for x in gq))
    logits = lam * gq / norm if form == "normalized" else lam * gq
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _raw(seed: int = 0, m: int = 4, dim: int = 7) -> np.ndarray:
    sums = np.random.default_rng(seed).normal(size=(m, dim)) * COUNTS[:m, None]
    return sums @ sums.T


def _strategy(**kw) -> RnB:
    s = RnB(**kw)
    s.setup(MixtureContext(NAMES, np.array([10, 20, 30, 40]), Q_EVAL))
    return s


def _stats(
    raw: np.ndarray, counts: np.ndarray, *, gram_counts: np.ndarray | None = None
) -> RoundStats:
    extra = {} if gram_counts is None else {"gram_counts": torch.as_tensor(gram_counts)}
    return RoundStats(
        step=4, round=0, counts=torch.as_tensor(counts), loss_sum=torch.zeros(len(counts)),
        gram=torch.as_tensor(raw), extra=extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "q"),
    [
        ({}, Q_EVAL),
        ({"lambda_": 0.7}, Q_EVAL),
        ({"objective": "uniform"}, np.full(4, 0.25)),
        ({"objective": [5.0, 0.0, 1.0, 2.0]}, np.array([5.0, 0.0, 1.0, 2.0])),
        ({"form": "unnormalized", "lambda_": 2.0}, Q_EVAL),
    ],
)
def test_update_equals_brute_force(kw: dict, q: np.ndarray) -> None:
    raw = _raw()
    s = _strategy(**kw)
    p = s.update(_stats(raw, COUNTS), np.full(4, 0.25))
    expected = brute_force(raw, COUNTS, q, kw.get("lambda_", 3.0), kw.get("form", "normalized"))
    np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-12)
    # the logged ‖Gq‖ is the norm of the normalised G times the normalised q
    G = raw / np.outer(COUNTS, COUNTS)
    assert s.last_gq_norm == pytest.approx(np.linalg.norm(G @ (q / q.sum())), rel=1e-10)


def test_counts_and_q_matter() -> None:
    """The fixture discriminates: dropping the division or q gives other weights."""
    raw = _raw()
    p = _strategy().update(_stats(raw, COUNTS), np.full(4, 0.25))
    no_div = brute_force(raw, np.ones(4), Q_EVAL, 3.0, "normalized")
    no_q = brute_force(raw, COUNTS, np.ones(4), 3.0, "normalized")
    assert np.abs(p - no_div).max() > 0.05
    assert np.abs(p - no_q).max() > 0.01


def test_gram_counts_take_precedence_over_loss_counts() -> None:
    """``n_i`` for ``G`` are the examples whose gradients were accumulated."""
    raw = _raw(1)
    loss_counts = COUNTS + np.array([3.0, 0.0, 1.0, 6.0])  # e.g. non-finite gradient batches
    p = _strategy().update(_stats(raw, loss_counts, gram_counts=COUNTS), np.full(4, 0.25))
    np.testing.assert_allclose(p, brute_force(raw, COUNTS, Q_EVAL, 3.0, "normalized"), rtol=1e-10)


def test_unseen_domain_and_degenerate_round() -> None:
    raw = _raw(2)
    counts = COUNTS.copy()
    counts[1] = 0
    p = _strategy().update(_stats(raw, counts), np.full(4, 0.25))
    np.testing.assert_allclose(p, brute_force(raw, counts, Q_EVAL, 3.0, "normalized"), rtol=1e-10)
    s = _strategy()
    prev = np.array([0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(s.update(_stats(np.zeros((4, 4)), COUNTS), prev), prev)
    assert s.kept_previous == 1


def test_gram_ema_averages_normalised_matrices() -> None:
    raw0, raw1 = _raw(3), _raw(4)
    c1 = np.array([4.0, 1.0, 2.0, 9.0])
    s = _strategy(gram_ema=0.25)
    s.update(_stats(raw0, COUNTS), np.full(4, 0.25))
    p = s.update(_stats(raw1, c1), np.full(4, 0.25))
    G = 0.25 * raw0 / np.outer(COUNTS, COUNTS) + 0.75 * raw1 / np.outer(c1, c1)
    # G is already normalised: feed it with unit counts to the brute force
    np.testing.assert_allclose(p, brute_force(G, np.ones(4), Q_EVAL, 3.0, "normalized"), rtol=1e-10)
    state = s.state_dict()
    np.testing.assert_allclose(state["G"].numpy(), G, rtol=1e-12)
    fresh = _strategy(gram_ema=0.25)
    fresh.load_state_dict(state)
    raw2 = _raw(5)
    np.testing.assert_allclose(
        fresh.update(_stats(raw2, COUNTS), np.full(4, 0.25)),
        s.update(_stats(raw2, COUNTS), np.full(4, 0.25)),
    )


def test_min_weight_floor() -> None:
    raw = _raw()
    p = _strategy(lambda_=50.0, min_weight=0.05).update(_stats(raw, COUNTS), np.full(4, 0.25))
    assert p.min() == pytest.approx(0.05, abs=1e-12)
    assert p.sum() == pytest.approx(1.0)
    free = brute_force(raw, COUNTS, Q_EVAL, 50.0, "normalized")
    # the floor mixes with uniform: p = (1 - α) free + α / m for one α in (0, 1)
    alpha = (p[0] - free[0]) / (0.25 - free[0])
    np.testing.assert_allclose(p, (1 - alpha) * free + alpha / 4, rtol=1e-9)


def test_objective_q_is_normalised_eval_proportions() -> None:
    s = _strategy()
    np.testing.assert_allclose(s.q.numpy(), Q_EVAL)
    s = _strategy(objective=[2, 2, 4, 0])
    np.testing.assert_allclose(s.q.numpy(), [0.25, 0.25, 0.5, 0.0])


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"lambda_": -1.0}, "strategy.lambda_"),
        ({"lambda_": float("inf")}, "strategy.lambda_"),
        ({"form": "other"}, "strategy.form"),
        ({"objective": "other"}, "strategy.objective"),
        ({"gram_ema": 1.0}, "strategy.gram_ema"),
        ({"min_weight": 1.0}, "strategy.min_weight"),
    ],
)
def test_bad_hyperparameters(kw: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        RnB(**kw)


@pytest.mark.parametrize("objective", [[1.0, 2.0], [1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
def test_bad_objective_vector(objective: list[float]) -> None:
    with pytest.raises(ValueError, match="strategy.objective"):
        _strategy(objective=objective)


def test_min_weight_infeasible_for_domain_count() -> None:
    with pytest.raises(ValueError, match="strategy.min_weight"):
        _strategy(min_weight=0.3)


def test_update_without_gram_is_an_error() -> None:
    stats = RoundStats(step=1, round=0, counts=torch.ones(4), loss_sum=torch.zeros(4))
    with pytest.raises(RuntimeError) as err:
        _strategy().update(stats, np.full(4, 0.25))
    assert str(err.value) == "rnb strategy needs the Gram matrix; the callback did not capture it"


def test_state_round_trip_without_ema_and_old_checkpoints() -> None:
    s = _strategy()
    s.update(_stats(np.zeros((4, 4)), COUNTS), np.full(4, 0.25))  # a kept-previous round
    state = s.state_dict()
    assert state["G"].numel() == 0 and state["kept_previous"] == 1
    fresh = _strategy(gram_ema=0.5)
    fresh._G = torch.ones(4, 4, dtype=torch.float64)
    fresh.load_state_dict(state)  # an empty G means "no average yet"
    assert fresh._G is None and fresh.kept_previous == 1
    fresh.load_state_dict({"G": torch.eye(4, dtype=torch.float32)})  # checkpoint without counter
    assert fresh.kept_previous == 0 and fresh._G.dtype == torch.float64
    torch.testing.assert_close(fresh._G, torch.eye(4, dtype=torch.float64))


def test_describe_lists_hyperparameters_only() -> None:
    d = _strategy(lambda_=2.5, objective="uniform").describe()
    assert d["name"] == "RnB" and d["lambda_"] == 2.5 and d["objective"] == "uniform"
    assert d["form"] == "normalized" and d["gram_ema"] is None and d["min_weight"] == 0.0
    assert "ctx" not in d and not any(k.startswith("_") for k in d)
    np.testing.assert_allclose(d["q"], [0.25] * 4)  # the resolved objective


def test_objective_summing_to_one_floor_at_uniform_and_kept_previous_counter() -> None:
    q = np.array([0.5, 0.5, 0.0, 0.0])  # already normalised: a valid objective
    s = _strategy(objective=q.tolist(), min_weight=0.25)  # floor 1/m: forces uniform
    torch.testing.assert_close(s.q, torch.as_tensor(q, dtype=torch.float64))
    raw = _raw(1)
    np.testing.assert_allclose(s.update(_stats(raw, COUNTS), np.full(4, 0.25)), [0.25] * 4)
    kept = _strategy()
    for _ in range(2):  # a degenerate round keeps the previous mixture, each time counted
        kept.update(_stats(np.zeros((4, 4)), COUNTS), np.full(4, 0.25))
    assert kept.kept_previous == 2


def test_boundary_hyperparameters_and_initial_state() -> None:
    flat = _strategy(lambda_=0.0, gram_ema=0.0)  # both ends are allowed
    np.testing.assert_allclose(flat.update(_stats(_raw(2), COUNTS), np.full(4, 0.25)), [0.25] * 4)
    fresh = _strategy(objective=(5, 0, 1, 2))
    assert fresh.last_gq_norm is None and fresh.kept_previous == 0
    assert fresh.objective == [5.0, 0.0, 1.0, 2.0] and type(fresh.objective[0]) is float
    with pytest.raises(ValueError) as err:
        RnB(objective="eval")
    assert str(err.value) == (
        "strategy.objective must be 'eval_proportions', 'uniform' or a list of weights, got 'eval'"
    )
