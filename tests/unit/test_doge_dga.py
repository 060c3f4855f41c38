"""DoGE and DGA update rules on hand-computed inputs."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from rnb.balance.strategies.alignment import exponentiated_step
from rnb.balance.strategies.base import RoundStats
from rnb.balance.strategies.dga import DGA
from rnb.balance.strategies.doge import DoGE, doge_scores

# g1 = (3, 4) (norm 5), g2 = (6, 8) (norm 10, clipped to (3, 4)), g3 = (0, 1)
GRADS = [[3.0, 4.0], [6.0, 8.0], [0.0, 1.0]]
TARGET = [0.0, 2.0]


def _stats(
    grads: Any = GRADS, target: Any = TARGET, present: Any = None, lr: float = 0.1
) -> RoundStats:
    g = torch.tensor(grads, dtype=torch.float32)
    m = g.shape[0]
    extra: dict[str, Any] = {
        "domain_grads": g,
        "grad_present": torch.tensor([True] * m if present is None else present),
        "lr": lr,
    }
    if target is not None:
        extra["target_grad"] = torch.tensor(target, dtype=torch.float32)
    return RoundStats(step=4, round=0, counts=torch.ones(m), loss_sum=torch.ones(m), extra=extra)


def _softmax_update(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    e = w * np.exp(s)
    return e / e.sum()


def test_doge_train_target_drops_diagonal_clips_and_normalises() -> None:
    # clipped products: <g1,g2~> = 25, <g1,g3> = 4, <g2~,g3> = 4
    raw = np.array([25 + 4, 25 + 4, 4 + 4], dtype=float)
    mean_norm = (5 + 5 + 1) / 3
    s = np.clip(0.1 * raw / (mean_norm + 1e-6), 0.0, 0.1 * 5)
    assert s[0] == pytest.approx(0.5) and s[2] == pytest.approx(0.1 * 8 / (11 / 3), rel=1e-6)
    strat = DoGE(target="train", mu=1.0)
    w0 = np.full(3, 1 / 3)
    new = strat.update(_stats(target=None), w0)
    np.testing.assert_allclose(new, _softmax_update(w0, s / 1.0), rtol=1e-6)
    np.testing.assert_allclose(strat.last_scores, s, rtol=1e-6)
    assert new.sum() == pytest.approx(1.0)


def test_doge_target_set_and_mu() -> None:
    # <g_i~, t>: (3,4)·(0,2) = 8, (3,4)·(0,2) = 8, (0,1)·(0,2) = 2; |t| = 2 < 5: unclipped
    s = 0.1 * np.array([8.0, 8.0, 2.0]) / (11 / 3 + 1e-6)
    w0 = np.array([0.5, 0.3, 0.2])
    new = DoGE(target="eval", mu=0.01).update(_stats(), w0)
    np.testing.assert_allclose(new, _softmax_update(w0, s / 0.01), rtol=1e-6)
    # a target above clip_norm is clipped too: t = (0, 20) -> (0, 5)
    s_big = doge_scores(
        np.array([[25.0]]), np.array([True]), 1.0, 5.0, (0, 100), np.array([80.0]), 400.0
    )
    assert s_big[0] == pytest.approx(20.0 / (5 + 1e-6))


def test_doge_score_clip_floor_and_no_clipping() -> None:
    gram = np.array([[1.0, -3.0], [-3.0, 9.0]])  # anti-aligned: scores below the floor
    s = doge_scores(gram, np.array([True, True]), 0.5, None, (0.0, 5.0))
    np.testing.assert_array_equal(s, [0.0, 0.0])
    s = doge_scores(gram, np.array([True, True]), 0.5, None, (-10.0, 5.0))
    np.testing.assert_allclose(s, 0.5 * np.array([-3.0, -3.0]) / (2.0 + 1e-6))


def test_absent_domain_keeps_its_weight() -> None:
    w0 = np.array([0.2, 0.3, 0.5])
    for strat in (DoGE(target="eval", mu=0.01), DGA()):
        new = strat.update(_stats(present=[True, True, False]), w0)
        assert new[2] == pytest.approx(0.5)
        assert new.sum() == pytest.approx(1.0)
    # DoGE: mean norm over the present domains only (5 and 5)
    s = doge_scores(
        np.array([[25.0, 100.0], [100.0, 400.0]]), np.array([True, False]), 1.0, 5.0, (0, 100)
    )
    np.testing.assert_allclose(s, [0.0, 0.0])  # one present domain, diagonal removed
    s = doge_scores(
        np.diag([25.0, 1.0]), np.array([True, False]), 1.0, 5.0, (0, 100), np.array([5.0, 7.0]), 1.0
    )
    assert s[1] == 0.0 and s[0] == pytest.approx(5.0 / (5 + 1e-6))


@pytest.mark.parametrize("strat", [DoGE(target="eval"), DoGE(target="train"), DGA()])
def test_zero_gradients_keep_the_mixture(strat: Any) -> None:
    w0 = np.array([0.1, 0.6, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 5/0 while clipping zero-norm gradients
        new = strat.update(_stats(grads=np.zeros((3, 2)), target=[0.0, 0.0]), w0)
    np.testing.assert_allclose(new, w0, atol=1e-12)


@pytest.mark.parametrize("strat", [DoGE(target="eval"), DoGE(target="train"), DGA()])
def test_one_domain_stays_one(strat: Any) -> None:
    new = strat.update(_stats(grads=[[1.0, 2.0]], target=[3.0, 1.0]), np.array([1.0]))
    np.testing.assert_array_equal(new, [1.0])


@pytest.mark.parametrize("strat", [DoGE(target="eval"), DGA()])
def test_nonfinite_gradients_skip_the_round(strat: Any, caplog: pytest.LogCaptureFixture) -> None:
    w0 = np.array([0.2, 0.3, 0.5])
    grads = [[3.0, 4.0], [float("nan"), 8.0], [0.0, 1.0]]
    with caplog.at_level(logging.WARNING):
        new = strat.update(_stats(grads=grads), w0)
    np.testing.assert_array_equal(new, w0)
    assert strat.skipped_rounds == 1 and strat.state_dict()["skipped_rounds"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"{type(strat).__name__}: round 0's probe gradients are not finite (inf/nan); the "
        "mixture is kept. Lower model.lr or set trainer.gradient_clip_val if this repeats"
    ]
    new = strat.update(_stats(target=[float("inf"), 0.0]), w0)
    np.testing.assert_array_equal(new, w0)
    assert strat.skipped_rounds == 2


@pytest.mark.parametrize("missing", ["domain_grads", "target_grad", "lr"])
@pytest.mark.parametrize("strat", [DGA(), DoGE(target="eval")], ids=["DGA", "DoGE"])
def test_missing_signal_names_the_strategy_and_the_key(missing: str, strat: Any) -> None:
    stats = _stats()
    if missing == "lr":  # no optimizer: the callback passes None
        stats.extra["lr"] = None
    else:
        del stats.extra[missing]
    with pytest.raises(KeyError, match=f"^.{type(strat).__name__}: RoundStats.extra.*{missing}"):
        strat.update(stats, np.full(3, 1 / 3))


def test_doge_needs_and_apply_follow_target_and_mode() -> None:
    assert DoGE().needs == {"domain_grads", "loss_weights"}
    assert DoGE(target="file", mode="resample").needs == {"domain_grads", "target_grad"}
    w = np.array([0.7, 0.2, 0.1])
    p, loss_w = DoGE().apply(w)
    np.testing.assert_allclose(p, 1 / 3)
    np.testing.assert_array_equal(loss_w, w)
    p, loss_w = DoGE(mode="resample").apply(w)
    np.testing.assert_array_equal(p, w)
    assert loss_w is None
    assert DGA.needs == {"domain_grads", "target_grad"}
    assert DoGE().describe()["mu"] == 0.01


def test_dga_lr_scaled_step_and_ema() -> None:
    align = np.array([8.0, 16.0, 2.0])  # raw <g_i, t>, no clipping in DGA
    w0 = np.array([0.5, 0.3, 0.2])
    strat = DGA(eta=2.0, mu=1e-3)
    assert strat.step_size(0.1) == pytest.approx(2.0 * 0.1 / 1e-3)
    new = DGA(eta=1.0, mu=10.0).update(_stats(lr=0.5), w0)
    np.testing.assert_allclose(new, _softmax_update(w0, 0.05 * align), rtol=1e-6)
    new = DGA(eta=0.1, lr_scaled=False).update(_stats(lr=0.5), w0)
    np.testing.assert_allclose(new, _softmax_update(w0, 0.1 * align), rtol=1e-6)
    strat = DGA(eta=0.1, lr_scaled=False, ema=0.75)
    new = strat.update(_stats(lr=0.5), w0)
    np.testing.assert_allclose(new, 0.75 * w0 + 0.25 * _softmax_update(w0, 0.1 * align), rtol=1e-6)
    np.testing.assert_allclose(strat.last_alignment, align)
    # the strongest-aligned domain gains, on the simplex
    assert new[1] > w0[1] and new.sum() == pytest.approx(1.0) and (new >= 0).all()


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (DoGE, {"target": "mix"}, r"strategy\.target='mix'"),
        (DoGE, {"mode": "both"}, r"strategy\.mode='both'"),
        (DoGE, {"mu": 0.0}, r"strategy\.mu"),
        (DoGE, {"clip_norm": -1.0}, r"strategy\.clip_norm"),
        (DoGE, {"score_clip": (5.0, 0.0)}, r"strategy\.score_clip"),
        (DGA, {"mu": -1.0}, r"strategy\.mu"),
        (DGA, {"eta": float("nan")}, r"strategy\.eta"),
        (DGA, {"ema": 1.0}, r"strategy\.ema"),
        (DGA, {"target": "train"}, r"strategy\.target='train'"),
    ],
)
def test_bad_hyperparameters_name_the_key(cls: Any, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kw)


def test_doge_scores_unsaturated_hand_computed() -> None:
    """Default ``clip_norm`` 5: g1 = (3, 4), g2 = (6, 8) -> (3, 4) (scale 1/2), g3 = (0, .5).
    Clipped products: <g1,g2> = 50/2 = 25, <g1,g3> = 2, <g2,g3> = 4/2 = 2; mean clipped norm
    (5 + 5 + .5)/3 = 3.5; scores (train target, diagonal dropped) (27, 27, 4)/3.5."""
    g = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 0.5]])
    s = doge_scores(g @ g.T, np.array([True, True, True]), 1.0, score_clip=(0.0, 100.0))
    np.testing.assert_allclose(s, np.array([27.0, 27.0, 4.0]) / (3.5 + 1e-6), rtol=1e-12)
    # a target above clip_norm < 1: t = (0, .8) -> scale .5/.8; g = (0, .4) unclipped
    s = doge_scores(
        np.array([[0.16]]), np.array([True]), 1.0, 0.5, (0.0, 100.0), np.array([0.32]), 0.64
    )
    np.testing.assert_allclose(s, [0.32 * 0.625 / (0.4 + 1e-6)], rtol=1e-12)
    # a rounding-negative diagonal is a zero gradient, not a nan
    s = doge_scores(np.diag([4.0, -1e-20]), np.array([True, True]), 1.0, score_clip=(0.0, 9.0))
    np.testing.assert_array_equal(s, [0.0, 0.0])


def test_doge_scores_without_any_present_domain_are_zero_and_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty slice
        s = doge_scores(np.eye(2), np.array([False, False]), 1.0, score_clip=(-5.0, 5.0))
    np.testing.assert_array_equal(s, [0.0, 0.0])


def test_dga_ema_renormalises_weights_off_the_simplex_by_rounding() -> None:
    """The callback accepts mixtures whose sum is 1 up to ``np.isclose``; DGA's EMA output is
    divided back onto the simplex."""
    align = np.array([8.0, 16.0, 2.0])
    w0 = np.array([0.5, 0.3, 0.2]) * (1 + 1e-5)
    new = DGA(eta=0.1, lr_scaled=False, ema=0.75).update(_stats(), w0)
    mixed = 0.75 * w0 + 0.25 * _softmax_update(w0, 0.1 * align)
    np.testing.assert_allclose(new, mixed / mixed.sum(), rtol=1e-12)


def test_doge_update_clips_the_target_and_uses_eps() -> None:
    """t = (0, 20) is clipped to norm 5 (factor 1/4): <g_i~, t~> = (80, 160/2, 20)/4; the mean
    clipped norm is 11/3, plus ``eps`` = 0.5."""
    s = 0.1 * np.array([20.0, 20.0, 5.0]) / (11 / 3 + 0.5)
    strat = DoGE(target="eval", mu=1.0, eps=0.5, score_clip=(0.0, 100.0))
    w0 = np.array([0.5, 0.3, 0.2])
    new = strat.update(_stats(target=[0.0, 20.0]), w0)
    np.testing.assert_allclose(strat.last_scores, s, rtol=1e-6)
    np.testing.assert_allclose(new, _softmax_update(w0, s), rtol=1e-6)


def test_exponentiated_step_edges() -> None:
    """Present domains without mass keep the mixture (no 0·e^s / 0); a zero weight stays 0
    without a log(0) warning; weights summing to 1 ± 1e-5 (accepted by the callback) come
    back on the simplex."""
    present = np.array([False, True, True])
    w = np.array([1.0, 0.0, 0.0])
    np.testing.assert_array_equal(exponentiated_step(w, np.array([0.0, 1.0, 2.0]), present), w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = exponentiated_step(np.array([0.5, 0.0, 0.5]), np.ones(3), np.ones(3, dtype=bool))
    np.testing.assert_array_equal(new, [0.5, 0.0, 0.5])
    w = np.array([0.2, 0.3, 0.5]) * (1 + 1e-5)
    new = exponentiated_step(w, np.array([0.0, 1.0, 0.0]), present)
    e = w[1:] * np.exp([1.0, 0.0])
    expected = np.concatenate([w[:1], w[1:].sum() * e / e.sum()]) / w.sum()
    np.testing.assert_allclose(new, expected, rtol=1e-13)


def test_doge_hyperparameter_boundaries() -> None:
    """The edges of each documented range: accepted values stay as given, the first refused
    one names its key with the exact text."""
    s = DoGE(clip_norm=0.5, score_clip=(1.0, 1.0), eps=0.0)  # all at or inside the bounds
    assert (s.clip_norm, s.score_clip, s.eps) == (0.5, [1.0, 1.0], 0.0)
    assert DoGE(clip_norm=None).clip_norm is None  # null: no clipping
    with pytest.raises(ValueError, match=r"^strategy\.clip_norm must be > 0 or null, got 0\.0$"):
        DoGE(clip_norm=0.0)
    with pytest.raises(ValueError, match=r"^strategy\.eps must be >= 0, got -1e-09$"):
        DoGE(eps=-1e-9)


def test_dga_hyperparameter_boundaries() -> None:
    """The edges of each documented range: ``eta = 0`` (a frozen mixture), ``ema = 0`` (no
    smoothing: the plain step) and ``target: file`` are accepted; an infinite or negative
    ``eta`` and ``mu = 0`` are refused with the exact text."""
    w0 = np.array([0.5, 0.3, 0.2])
    strat = DGA(eta=0.0)
    assert strat.eta == 0.0
    np.testing.assert_allclose(strat.update(_stats(), w0), w0, rtol=1e-15)  # a zero step
    strat = DGA(eta=0.1, lr_scaled=False, ema=0.0)
    assert strat.ema == 0.0
    align = np.array([8.0, 16.0, 2.0])
    new = strat.update(_stats(), w0)
    np.testing.assert_allclose(new, _softmax_update(w0, 0.1 * align), rtol=1e-12)
    assert DGA(target="file").target == "file"
    for eta in (float("inf"), -1.0):
        want = rf"^strategy\.eta must be a finite number >= 0, got {eta}$"
        with pytest.raises(ValueError, match=want):
            DGA(eta=eta)
    with pytest.raises(ValueError, match=r"^strategy\.mu must be a finite number > 0, got 0\.0$"):
        DGA(mu=0.0)
