"""DoReMi's update rule on hand-computed inputs (baselines.md, DoReMi; reference doremiv1).

``α ← softmax(log α + η s)`` then ``α ← (1 − ε) α + ε/m``, with ``s`` the per-token-clipped
(or domain-mean-clipped) excess loss the reference service hands over in
``RoundStats.extra["excess_loss"]``. Expected values are written out: for ``α = (.2, .3, .5)``
and ``s = (.5, .1, 0)``, ``α·e^s = (.329744, .331551, .5)`` sums to ``1.161295``.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.doremi import DoReMi

NAMES = ["a", "b", "c"]
NAN = float("nan")


def _strategy(names: list[str] = NAMES, **kw) -> DoReMi:
    s = DoReMi(**kw)
    m = len(names)
    s.setup(MixtureContext(names, np.arange(1, m + 1) * 10, np.full(m, 1.0 / m)))
    return s


def _stats(clipped, mean=None, tokens=None, vocab: int = 1000, step: int = 1) -> RoundStats:
    clipped = torch.tensor(clipped, dtype=torch.float64)
    m = clipped.numel()
    return RoundStats(
        step=step,
        round=step - 1,
        counts=torch.ones(m),
        loss_sum=torch.ones(m),
        extra={
            "lr": 1e-3,
            "excess_loss": {
                "clipped": clipped,
                "mean": torch.tensor(mean if mean is not None else clipped.tolist()).double(),
                "tokens": torch.tensor(tokens if tokens is not None else [5.0] * m).double(),
                "vocab_size": vocab,
            },
        },
    )


W = np.array([0.2, 0.3, 0.5])


def test_update_hand_computed() -> None:
    new = _strategy(smoothing=0.0).update(_stats([0.5, 0.1, 0.0]), W)
    np.testing.assert_allclose(new, [0.28394517, 0.28550121, 0.43055363], rtol=1e-7)
    smoothed = _strategy().update(_stats([0.5, 0.1, 0.0]), W)  # ε = 1e-3 (reference default)
    np.testing.assert_allclose(smoothed, 0.999 * new + 1e-3 / 3, rtol=1e-12)
    np.testing.assert_allclose(smoothed, [0.28399456, 0.28554904, 0.4304564], rtol=1e-7)


def test_eta_scales_the_score() -> None:
    half = _strategy(eta=0.5, smoothing=0.0).update(_stats([1.0, 0.2, 0.0]), W)
    full = _strategy(eta=1.0, smoothing=0.0).update(_stats([0.5, 0.1, 0.0]), W)
    np.testing.assert_allclose(half, full, rtol=1e-12)
    frozen = _strategy(eta=0.0, smoothing=0.0).update(_stats([3.0, 0.1, 0.0]), W)
    np.testing.assert_allclose(frozen, W, rtol=1e-12)


def test_clip_domain_mean_clips_after_the_mean() -> None:
    """``clip=domain_mean`` reads the unclipped mean and clips it; ``token`` reads ``clipped``."""
    stats = _stats([0.4, 0.35, 0.1], mean=[-0.2, 0.3, 0.0])
    by_mean = _strategy(clip="domain_mean", smoothing=0.0).update(stats, W)
    # α·e^(0, .3, 0) = (.2, .404958, .5), sum 1.104958
    np.testing.assert_allclose(by_mean, [0.18100241, 0.36649155, 0.45250603], rtol=1e-7)
    by_token = _strategy(clip="token", smoothing=0.0).update(stats, W)
    assert by_token[0] > by_mean[0]  # the clipped per-token mean of `a` is 0.4 > 0


def test_absent_domain_keeps_its_last_score() -> None:
    s = _strategy(smoothing=0.0)
    s.update(_stats([0.5, 0.1, 0.0]), W)
    # round 2: `a` has no tokens (nan mean), keeps 0.5; `b` and `c` get new scores
    new = s.update(_stats([NAN, 0.0, 0.1], tokens=[0, 4, 4]), W)
    a = W * np.exp([0.5, 0.0, 0.1])
    np.testing.assert_allclose(new, a / a.sum(), rtol=1e-12)
    np.testing.assert_allclose(s.scores, [0.5, 0.0, 0.1])


@pytest.mark.parametrize(
    ("initial", "expected_score"),
    [("mean", 0.3), ("log_vocab", math.log(1000)), (0.0, 0.0), (2.5, 2.5)],
)
def test_domain_absent_before_its_first_tokens(initial, expected_score: float) -> None:
    s = _strategy(smoothing=0.0, initial_score=initial)
    new = s.update(_stats([0.5, NAN, 0.1], tokens=[3, 0, 2]), W)
    a = W * np.exp([0.5, expected_score, 0.1])
    np.testing.assert_allclose(new, a / a.sum(), rtol=1e-12)
    assert math.isnan(s.scores[1])  # still unseen: the next round starts it again
    again = s.update(_stats([0.2, 0.4, NAN], tokens=[3, 2, 0]), W)
    a = W * np.exp([0.2, 0.4, 0.1])  # now seen: its own score; `c` keeps 0.1
    np.testing.assert_allclose(again, a / a.sum(), rtol=1e-12)


def test_zero_signal_only_smooths() -> None:
    np.testing.assert_allclose(
        _strategy(smoothing=0.0).update(_stats([0.0, 0.0, 0.0]), W), W, rtol=1e-12
    )
    np.testing.assert_allclose(
        _strategy(smoothing=0.1).update(_stats([0.0, 0.0, 0.0]), W), 0.9 * W + 0.1 / 3
    )


def test_one_domain_stays_one() -> None:
    s = _strategy(names=["only"])
    for step in range(1, 4):
        np.testing.assert_allclose(s.update(_stats([0.7], step=step), np.ones(1)), [1.0])


def test_no_domain_with_tokens_changes_nothing() -> None:
    new = _strategy(smoothing=0.0).update(_stats([NAN] * 3, tokens=[0, 0, 0]), W)
    np.testing.assert_allclose(new, W, rtol=1e-12)  # every score "mean" of nothing = 0


@pytest.mark.parametrize("bad", [NAN, float("inf")])
def test_non_finite_excess_loss_is_a_clear_error(bad: float) -> None:
    s = _strategy(smoothing=0.0, reference="/runs/ref")
    with pytest.raises(ValueError, match=r"domains \['b'\].*strategy.reference=/runs/ref") as e:
        s.update(_stats([0.1, bad, 0.2]), W)
    assert str(e.value).endswith(
        "lower model.lr / set trainer.gradient_clip_val, or check the reference run"
    )


def test_zero_weight_stays_finite() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log 0 = -inf on purpose, without a RuntimeWarning
        new = _strategy(smoothing=0.0).update(_stats([0.1, 0.2, 0.3]), np.array([0.0, 0.5, 0.5]))
    assert new[0] == 0.0 and np.isclose(new.sum(), 1.0)


def test_large_eta_stays_on_the_simplex() -> None:
    """``η s`` far above exp's range (~709) still gives the softmax (shifted by the max)."""
    new = _strategy(eta=1000.0, smoothing=0.0).update(_stats([1.0, 0.5, 0.0]), W)
    np.testing.assert_allclose(new, [1.0, 1.5 * np.exp(-500.0), 2.5 * np.exp(-1000.0)], rtol=1e-9)


def test_apply_per_mode() -> None:
    alpha = np.array([0.6, 0.3, 0.1])
    p, loss_w = _strategy().apply(alpha)  # reweight (default): uniform proxy, α on the loss
    np.testing.assert_allclose(p, [1 / 3] * 3)
    np.testing.assert_allclose(loss_w, alpha)
    p, loss_w = _strategy(proxy_mixture="natural").apply(alpha)
    np.testing.assert_allclose(p, [10 / 60, 20 / 60, 30 / 60])
    p, loss_w = _strategy(proxy_mixture=[1, 1, 2]).apply(alpha)
    np.testing.assert_allclose(p, [0.25, 0.25, 0.5])
    p, loss_w = _strategy(mode="resample").apply(alpha)
    np.testing.assert_allclose(p, alpha)
    assert loss_w is None


def test_needs_and_defaults() -> None:
    assert DoReMi.default_steps_per_round == 1  # updates every step, as in the paper
    assert DoReMi().needs == {"reference_loss", "loss_weights"}
    assert DoReMi(mode="resample").needs == {"reference_loss"}
    d = DoReMi(reference="r").describe()
    assert (d["eta"], d["smoothing"], d["clip"], d["mode"]) == (1.0, 1e-3, "token", "reweight")
    assert d["needs"] == ["loss_weights", "reference_loss"]


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"eta": -1.0}, "strategy.eta"),
        ({"eta": float("inf")}, "strategy.eta"),
        ({"smoothing": 1.5}, "strategy.smoothing"),
        ({"clip": "example"}, "strategy.clip"),
        ({"mode": "online"}, "strategy.mode"),
        ({"proxy_mixture": "skewed"}, "strategy.proxy_mixture"),
        ({"initial_score": "max"}, "strategy.initial_score"),
    ],
)
def test_bad_options_name_their_key(kw: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        DoReMi(**kw)


@pytest.mark.parametrize("bad", [[1, 1], [1, -1, 1], [math.nan, 1, 1], [math.inf, 1, 1], [0, 0, 0]])
def test_proxy_mixture_list_must_match_domains(bad: list[float]) -> None:
    with pytest.raises(ValueError, match=r"strategy.proxy_mixture: need 3 finite weights >= 0"):
        _strategy(proxy_mixture=bad)


@pytest.mark.parametrize(
    ("given", "p"), [([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), ([0, 1, 3], [0.0, 0.25, 0.75])]
)
def test_proxy_mixture_list_is_normalised(given: list[float], p: list[float]) -> None:
    np.testing.assert_allclose(_strategy(proxy_mixture=given).apply(W)[0], p, rtol=1e-12)


def test_state_round_trip() -> None:
    s = _strategy(smoothing=0.0)
    s.update(_stats([0.5, NAN, 0.1], tokens=[3, 0, 2]), W)
    t = _strategy(smoothing=0.0)
    t.load_state_dict(s.state_dict())
    nxt = _stats([NAN, 0.2, NAN], tokens=[0, 1, 0])
    np.testing.assert_array_equal(s.update(nxt, W), t.update(nxt, W))


def test_one_token_makes_a_domain_present() -> None:
    new = _strategy(smoothing=0.0).update(_stats([0.5, 0.1, 0.0], tokens=[1, 0, 1]), W)
    a = W * np.exp([0.5, 0.25, 0.0])  # `b` unseen: the mean of the present (.5 + 0)/2
    np.testing.assert_allclose(new, a / a.sum(), rtol=1e-12)


def test_round_without_tokens_after_some_were_seen() -> None:
    """Seen domains keep their last score; never-seen ones score 0 (no present domain to
    average)."""
    s = _strategy(smoothing=0.0)
    s.update(_stats([0.5, NAN, NAN], tokens=[2, 0, 0]), W)
    new = s.update(_stats([NAN] * 3, tokens=[0, 0, 0]), W)
    a = W * np.exp([0.5, 0.0, 0.0])
    np.testing.assert_allclose(new, a / a.sum(), rtol=1e-12)


def test_host_arrays_and_float32_give_the_float64_scores() -> None:
    """A service may send lists, NumPy arrays or float32 tensors: all are widened to float64
    before any arithmetic (the unseen-domain mean below differs in float32)."""
    clipped, tokens = [0.1, 0.7, 0.3], [5, 0, 2]  # integer token counts; b absent
    f32 = np.asarray(clipped, dtype=np.float32).astype(np.float64)  # the values float32 keeps
    expected = {
        "list": [0.1, (0.1 + 0.3) / 2, 0.3],
        "float32": [f32[0], (f32[0] + f32[2]) / 2, f32[2]],  # b: mean over a and c, in float64
    }
    assert np.float32(clipped[0]) + np.float32(clipped[2]) != f32[0] + f32[2]  # float32 rounds
    inputs = {
        "list": (list, "list"),
        "numpy": (np.asarray, "list"),
        "numpy float32": (lambda v: np.asarray(v, dtype=np.float32), "float32"),
        "torch float32": (lambda v: torch.tensor(v, dtype=torch.float32), "float32"),
    }
    for name, (convert, want) in inputs.items():
        stats = _stats(clipped, tokens=tokens)
        stats.extra["excess_loss"] = {
            "clipped": convert(clipped),
            "mean": convert(clipped),
            "tokens": convert(tokens),
            "vocab_size": 1000,
        }
        got = _strategy(initial_score="mean").domain_scores(stats)
        assert got.dtype == np.float64, name
        np.testing.assert_array_equal(got, expected[want], err_msg=name)


def test_smoothing_one_is_allowed_and_gives_the_uniform_mixture() -> None:
    """``ε = 1`` is the closed end of ``[0, 1]``: every update returns the uniform mixture."""
    s = _strategy(smoothing=1.0)
    assert s.smoothing == 1.0
    np.testing.assert_allclose(s.update(_stats([0.5, 0.1, 0.0]), W), [1 / 3] * 3, rtol=1e-12)


def test_unknown_proxy_mixture_error_text() -> None:
    want = "strategy.proxy_mixture must be uniform, natural or a list of weights, got 'skewed'"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        DoReMi(proxy_mixture="skewed")
