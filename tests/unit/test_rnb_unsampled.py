"""R&B ``unsampled: zero | carry``: what happens to a domain not sampled in a round."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch

from rnb.balance.rnb_math import carry_gram
from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.rnb import RnB


def brute_force_carry(rounds: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Entry by entry: this round's ``G_ij`` if both were sampled, else the last such value."""
    m = rounds[0][0].shape[0]
    last = [[0.0] * m for _ in range(m)]
    out = []
    for G, n in rounds:
        used = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                if n[i] > 0 and n[j] > 0:
                    last[i][j] = G[i, j]
                used[i, j] = last[i][j]
        out.append(used)
    return out


def test_carry_gram_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    rounds = []
    for _ in range(6):
        a = rng.normal(size=(4, 5))
        n = rng.integers(0, 3, 4).astype(float)
        G = a @ a.T * ((n[:, None] > 0) & (n[None, :] > 0))  # unsampled rows are zero
        rounds.append((G, n))
    last = None
    for (G, n), expected in zip(rounds, brute_force_carry(rounds), strict=True):
        used, last = carry_gram(torch.as_tensor(G), torch.as_tensor(n), last)
        np.testing.assert_allclose(used.numpy(), expected, rtol=0, atol=0)


def test_carry_gram_rejects_a_memory_of_another_shape() -> None:
    with pytest.raises(ValueError, match="strategy.unsampled=carry"):
        carry_gram(torch.eye(3), torch.ones(3), torch.eye(2))


# Round 0: every domain sampled once; c is the domain best aligned with the objective.
G0 = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.5, 2.0]])
# Rounds 1, 2: c unsampled (zero row/column), a and b barely aligned.
G1 = np.array([[0.2, 0.1, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 0.0]])


def _strategy(unsampled: str) -> RnB:
    s = RnB(lambda_=50.0, objective="uniform", unsampled=unsampled)
    s.setup(MixtureContext(["a", "b", "c"], np.array([5, 5, 5]), np.full(3, 1 / 3)))
    return s


def _run(unsampled: str, s: RnB | None = None) -> tuple[RnB, list[np.ndarray]]:
    s = _strategy(unsampled) if s is None else s
    w = np.full(3, 1 / 3)
    traj = []
    for step, (G, n) in enumerate([(G0, [1, 1, 1]), (G1, [1, 1, 0]), (G1, [1, 1, 0])], 1):
        stats = RoundStats(
            step=step, round=step - 1, counts=torch.tensor(n, dtype=torch.float64),
            loss_sum=torch.zeros(3), gram=torch.as_tensor(G),
        )  # fmt: skip
        w = s.update(stats, w)
        traj.append(w)
    return s, traj


def test_zero_keeps_an_unsampled_domain_starved() -> None:
    _, traj = _run("zero")
    assert traj[0][2] > 0.99  # c leads after round 0 ...
    # ... then, unsampled, its Gram row is 0: Gq = [0.1, 0.1, 0]/‖.‖, λ = 50 -> e^{-35}
    for w in traj[1:]:
        assert w[2] < 1e-12
        np.testing.assert_allclose(w[:2], [0.5, 0.5], rtol=1e-12)


def test_carry_lets_an_unsampled_domain_come_back() -> None:
    s, traj = _run("carry")
    # carried row of c: Gq = [0.8, 0.8, 3.0]/3 -> c keeps the mass it earned in round 0
    gq = np.array([0.8, 0.8, 3.0]) / 3
    logits = 50 * gq / np.linalg.norm(gq)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for w in traj[1:]:
        np.testing.assert_allclose(w, expected, rtol=1e-10, atol=1e-15)
    assert traj[-1][2] > 0.99
    # the memory is checkpointed (weights_only) and restored
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = RnB(lambda_=50.0, objective="uniform", unsampled="carry")
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(t._last, s._last)
    expected_last = G0.copy()
    expected_last[:2, :2] = G1[:2, :2]
    np.testing.assert_array_equal(s._last.numpy(), expected_last)


def test_carry_resumes_from_a_checkpoint_before_the_first_round() -> None:
    # a checkpoint written before any update holds no memory yet; the resumed run must carry
    # exactly like the uninterrupted one
    buf = io.BytesIO()
    torch.save(_strategy("carry").state_dict(), buf)
    buf.seek(0)
    resumed = _strategy("carry")
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    _, expected = _run("carry")
    _, got = _run("carry", resumed)
    np.testing.assert_array_equal(np.array(got), np.array(expected))


def test_unsampled_option_is_checked() -> None:
    with pytest.raises(ValueError, match=r"strategy\.unsampled"):
        RnB(unsampled="keep")


@pytest.mark.parametrize(
    ("shape", "m"),
    [((3,), 3), ((2, 3), 2), ((2, 3), 3), ((3, 3), 2)],
)
def test_carry_gram_refuses_shapes_with_the_exact_text(shape: tuple[int, ...], m: int) -> None:
    want = f"gram: need G [m, m] and counts [m], got {shape} and ({m},)"
    with pytest.raises(ValueError, match="^" + re.escape(want) + "$"):
        carry_gram(torch.zeros(shape), torch.ones(m), None)


def test_carry_gram_returns_float64_on_g_s_device() -> None:
    """float32 inputs come back float64 (the documented dtype); counts and memory held on the
    host follow ``G``'s device (``meta`` stands in for a GPU here)."""
    used, last = carry_gram(torch.eye(2, dtype=torch.float32), torch.tensor([1, 0]), None)
    assert used.dtype == last.dtype == torch.float64
    G = torch.eye(2, dtype=torch.float32, device="meta")
    memory = torch.ones(2, 2, dtype=torch.float32)  # on the host
    used, last = carry_gram(G, torch.tensor([1, 0]), memory)
    assert used.device.type == last.device.type == "meta"
    assert used.dtype == last.dtype == torch.float64
