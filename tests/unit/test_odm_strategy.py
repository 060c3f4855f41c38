"""ODM (EXP3 over domains) update rules on hand-computed inputs.

Each expected value is written out from the formulas of the reference code
(``Exp3WeightUpdater`` / ``SmoothedMeanWeightUpdater``): ``ε_t = min(1/m, sqrt(ln m/(m t)))``,
``π = (1 − m ε_t) softmax(ε_{t−1} R̂) + ε_t``.
"""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
import pytest
import torch

from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.odm import ODM, exp3_mixture, exploration


def _odm(m: int = 3, **kw) -> ODM:
    s = ODM(**{"warmup_steps": 0, **kw})
    s.setup(MixtureContext([f"d{i}" for i in range(m)], np.ones(m), np.full(m, 1.0 / m)))
    return s


def _stats(step: int, counts: list[float], loss_sum: list[float]) -> RoundStats:
    return RoundStats(
        step=step, round=step - 1, counts=torch.tensor(counts, dtype=torch.float64),
        loss_sum=torch.tensor(loss_sum, dtype=torch.float64),
    )  # fmt: skip


def _mix(r: list[float], eps_prev: float, eps: float) -> np.ndarray:
    """The reference's loop: exp(R̂·ε_prev)·(1 − mε)/Σ exp(R̂·ε_prev) + ε, normalised."""
    m = len(r)
    total = sum(math.exp(x * eps_prev) for x in r)
    w = [math.exp(x * eps_prev) * (1 - m * eps) / total + eps for x in r]
    return np.array(w) / sum(w)


def test_exploration_schedule() -> None:
    assert exploration(4, 1) == 0.25  # sqrt(ln 4 / 4) = 0.59 > 1/4
    assert exploration(4, 100) == pytest.approx(math.sqrt(math.log(4) / 400))
    assert exploration(1, 5) == 0.0  # one domain: nothing to explore
    with pytest.raises(ValueError, match="t >= 1"):
        exploration(3, 0)


def test_importance_form_absent_domain_and_second_update() -> None:
    s = _odm(reward="importance")
    w0 = np.array([0.5, 0.3, 0.2])
    # d0: 2 examples, mean loss 3; d1: 1 example, loss 1.5; d2 not drawn this round
    p1 = s.update(_stats(10, [2, 1, 0], [6.0, 1.5, 0.0]), w0)
    r = [3 / 10 / 0.5, 1.5 / 10 / 0.3, 0.0]
    eps1 = math.sqrt(math.log(3) / (3 * 10))
    np.testing.assert_allclose(p1, _mix(r, 1 / 3, eps1), rtol=1e-12)
    np.testing.assert_allclose(s.state_dict()["estimate"].numpy(), r, rtol=1e-12)
    # second update: importance weights are this round's π (= p1), ε_prev = ε of update 1
    p2 = s.update(_stats(11, [0, 0, 4], [0.0, 0.0, 8.0]), p1)
    r[2] += 2.0 / 10 / p1[2]
    eps2 = math.sqrt(math.log(3) / (3 * 11))
    np.testing.assert_allclose(p2, _mix(r, eps1, eps2), rtol=1e-12)
    assert p2[2] > p1[2]  # the only rewarded domain gains


def test_importance_by_inclusion_probability() -> None:
    s = _odm(reward="importance", importance="inclusion")
    w0 = np.array([0.6, 0.2, 0.2])
    p = s.update(_stats(40, [2, 1, 0], [4.0, 3.0, 0.0]), w0)
    n = 3  # draws in the round: P(d in round) = 1 - (1 - π)^3
    r = [2 / 10 / (1 - 0.4**n), 3 / 10 / (1 - 0.8**n), 0.0]
    np.testing.assert_allclose(p, _mix(r, 1 / 3, exploration(3, 40)), rtol=1e-12)


def test_importance_estimates_accumulate_over_updates() -> None:
    s = _odm(reward="importance", importance="inclusion")
    w0 = np.array([0.5, 0.25, 0.25])
    # one example in the round: the inclusion probability of d0 is π_0 itself
    p1 = s.update(_stats(5, [1, 0, 0], [2.0, 0.0, 0.0]), w0)
    r = [2.0 / 10 / 0.5, 0.0, 0.0]
    np.testing.assert_allclose(p1, _mix(r, 1 / 3, exploration(3, 5)), rtol=1e-12)
    # d0 drawn again (2 of 3 examples): its estimate adds the new reward to the old one
    p2 = s.update(_stats(6, [2, 1, 0], [3.0, 0.5, 0.0]), p1)
    r[0] += 1.5 / 10 / (1 - (1 - p1[0]) ** 3)
    r[1] += 0.5 / 10 / (1 - (1 - p1[1]) ** 3)
    np.testing.assert_allclose(s.state_dict()["estimate"].numpy(), r, rtol=1e-12)
    np.testing.assert_allclose(p2, _mix(r, exploration(3, 5), exploration(3, 6)), rtol=1e-12)


@pytest.mark.parametrize(("smoothed_of", "f"), [("exp_loss", math.exp), ("loss", lambda x: x)])
def test_smoothed_form(smoothed_of: str, f) -> None:
    s = _odm(reward="smoothed", smoothing=0.9, smoothed_of=smoothed_of)
    w = np.full(3, 1 / 3)
    p1 = s.update(_stats(30, [1, 1, 0], [2.0, 1.0, 0.0]), w)
    r = [0.1 * f(2.0), 0.1 * f(1.0), 0.0]  # the absent domain keeps its (zero) estimate
    e1 = exploration(3, 30)
    np.testing.assert_allclose(p1, _mix(r, 1 / 3, e1), rtol=1e-12)
    p2 = s.update(_stats(31, [2, 0, 0], [5.0, 0.0, 0.0]), p1)
    r[0] = 0.9 * r[0] + 0.1 * f(2.5)  # no importance weighting in this form
    np.testing.assert_allclose(p2, _mix(r, e1, exploration(3, 31)), rtol=1e-12)


def test_warmup_keeps_weights_and_discards_rewards() -> None:
    s = _odm(reward="importance", warmup_steps=5)
    w = np.full(3, 1 / 3)
    for step in range(1, 6):
        assert s.update(_stats(step, [1, 1, 1], [9.0, 1.0, 1.0]), w) is w
    assert s.state_dict()["estimate"].abs().sum() == 0 and s.updates == 0
    p = s.update(_stats(6, [1, 1, 1], [3.0, 1.0, 1.0]), w)  # first update: ε_prev = 1/m
    r = [3 / 10 * 3, 1 / 10 * 3, 1 / 10 * 3]
    np.testing.assert_allclose(p, _mix(r, 1 / 3, exploration(3, 6)), rtol=1e-12)


def test_floor_lifts_the_smallest_weight_exactly() -> None:
    s = _odm(reward="smoothed", smoothed_of="loss", smoothing=0.0, floor=0.15)
    p = s.update(_stats(1000, [1, 1, 1], [200.0, 0.0, 0.0]), np.full(3, 1 / 3))
    raw = _mix([200.0, 0.0, 0.0], 1 / 3, exploration(3, 1000))
    assert raw.min() < 0.15  # without the floor the losers would sit at ε_t
    assert p.min() == pytest.approx(0.15) and p.sum() == pytest.approx(1.0)
    # the floor mixes with uniform as little as needed: p = (1 - a) raw + a/3
    a = (0.15 - raw.min()) / (1 / 3 - raw.min())
    np.testing.assert_allclose(p, (1 - a) * raw + a / 3, rtol=1e-12)


def test_one_domain_and_nothing_drawn() -> None:
    one = _odm(m=1, reward="importance")
    assert one.update(_stats(7, [4], [8.0]), np.ones(1)).tolist() == [1.0]
    s = _odm(reward="importance")  # zero signal: no domain drawn -> the estimates stay 0
    p = s.update(_stats(50, [0, 0, 0], [0.0, 0.0, 0.0]), np.array([0.7, 0.2, 0.1]))
    np.testing.assert_allclose(p, np.full(3, 1 / 3), rtol=1e-12)


def test_nonfinite_reward_is_skipped_and_counted() -> None:
    s = _odm(reward="smoothed", smoothed_of="exp_loss")  # exp(1000) overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a documented, counted skip: no RuntimeWarning
        p = s.update(_stats(20, [1, 1, 1], [1000.0, 1.0, math.inf]), np.full(3, 1 / 3))
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    assert s.skipped_rewards == 2
    np.testing.assert_allclose(s.state_dict()["estimate"].numpy(), [0.0, 0.1 * math.e, 0.0])


def test_state_round_trip_continues_identically() -> None:
    a = _odm(reward="importance")
    w = np.full(3, 1 / 3)
    rng = np.random.default_rng(0)
    rounds = [(rng.integers(0, 3, 3).astype(float), rng.random(3) * 4) for _ in range(8)]
    for step, (c, ls) in enumerate(rounds[:4], start=1):
        w = a.update(_stats(step, list(c), list(ls * c)), w)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = _odm(reward="importance")
    b.load_state_dict(torch.load(buf, weights_only=True))
    wa = wb = w
    for step, (c, ls) in enumerate(rounds[4:], start=5):
        wa = a.update(_stats(step, list(c), list(ls * c)), wa)
        wb = b.update(_stats(step, list(c), list(ls * c)), wb)
    np.testing.assert_array_equal(wa, wb)


def _reloaded(state: dict) -> ODM:
    """A fresh ODM that loaded ``state`` after a trip through ``torch.save`` (a checkpoint)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    b = _odm(reward="smoothed")
    b.load_state_dict(torch.load(buf, weights_only=True))
    return b


def test_resume_restores_the_counters_summary_json_reports() -> None:
    a = _odm(reward="smoothed")  # exp(1000) and exp(inf) overflow: two skipped rewards
    w = a.update(_stats(1, [1, 1, 1], [1000.0, 1.0, 2.0]), np.full(3, 1 / 3))
    w = a.update(_stats(2, [1, 0, 1], [1.0, 0.0, math.inf]), w)
    assert (a.skipped_rewards, a.updates) == (2, 2)
    b = _reloaded(a.state_dict())
    assert (b.skipped_rewards, b.updates) == (2, 2)
    assert b.describe() == a.describe()  # the strategy record of summary.json
    nxt = _stats(3, [1, 1, 0], [0.5, 1.5, 0.0])
    np.testing.assert_array_equal(b.update(nxt, w), a.update(nxt, w))
    assert (b.skipped_rewards, b.updates) == (2, 3)


def test_state_without_counters_loads_them_as_zero() -> None:
    a = _odm(reward="smoothed")
    w = a.update(_stats(1, [1, 1, 1], [1000.0, 1.0, 2.0]), np.full(3, 1 / 3))
    state = {k: v for k, v in a.state_dict().items() if k not in ("skipped_rewards", "updates")}
    b = _reloaded(state)  # a checkpoint that did not record the counters
    assert (b.skipped_rewards, b.updates) == (0, 0)
    nxt = _stats(2, [1, 1, 1], [0.5, 1.5, 1.0])
    np.testing.assert_array_equal(b.update(nxt, w), a.update(nxt, w))  # same mixture
    assert (b.skipped_rewards, b.updates) == (0, 1)


def test_starts_uniform_and_accepts_the_largest_floor() -> None:
    s = _odm(m=4, floor=0.25)  # floor = 1/m: every domain at 1/4, allowed
    np.testing.assert_array_equal(s.initial_weights(), np.full(4, 0.25))
    p = s.update(_stats(3, [1, 1, 1, 1], [9.0, 1.0, 1.0, 1.0]), s.initial_weights())
    np.testing.assert_allclose(p, np.full(4, 0.25), rtol=1e-12)


def test_first_update_at_step_one_explores_fully() -> None:
    # two domains: ε_1 = min(1/2, sqrt(ln 2 / 2)) = 1/2, so π is uniform whatever R̂ says;
    # the next update (t = 2) uses ε_prev = 1/2 and ε_2 = sqrt(ln 2 / 4) < 1/2
    s = _odm(m=2, reward="importance")
    p1 = s.update(_stats(1, [1, 1], [5.0, 1.0]), np.full(2, 0.5))
    np.testing.assert_allclose(p1, [0.5, 0.5], rtol=1e-12)
    p2 = s.update(_stats(2, [0, 0], [0.0, 0.0]), p1)
    eps2 = math.sqrt(math.log(2) / 4)
    np.testing.assert_allclose(p2, _mix([1.0, 0.2], 0.5, eps2), rtol=1e-12)


def test_scale_below_one_is_a_valid_divisor() -> None:
    s = _odm(reward="importance", scale=0.5)
    s.update(_stats(9, [1, 0, 0], [2.0, 0.0, 0.0]), np.full(3, 1 / 3))
    np.testing.assert_allclose(s.state_dict()["estimate"].numpy(), [2.0 / 0.5 * 3, 0.0, 0.0])


@pytest.mark.parametrize("floor", [-0.1, 1.0, 1.5])
def test_floor_outside_the_unit_interval_fails_at_construction(floor: float) -> None:
    msg = f"strategy.floor must be in [0, 1), got {floor}"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        ODM(floor=floor)


def test_exp3_mixture_does_not_overflow() -> None:
    p = exp3_mixture(np.array([1e6, 0.0]), 0.5, 0.1)
    np.testing.assert_allclose(p, [0.9, 0.1])


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"reward": "ucb"}, "strategy.reward"),
        ({"smoothed_of": "log"}, "strategy.smoothed_of"),
        ({"importance": "none"}, "strategy.importance"),
        ({"scale": 0}, "strategy.scale"),
        ({"smoothing": 1.0}, "strategy.smoothing"),
        ({"warmup_steps": -1}, "strategy.warmup_steps"),
        ({"floor": 0.5}, "strategy.floor"),  # 0.5 x 3 domains > 1
    ],
)
def test_bad_settings_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _odm(**kw)
