"""R&B update maths against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rnb.balance.rnb_math import (
    RnBUpdate,
    apply_min_weight,
    ema,
    gram_matrix,
    normalize_gram,
    raw_gram,
    rnb_weights,
)


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_gram_matrix_hand_computed_with_zero_count() -> None:
    acc = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    G = gram_matrix(acc, torch.tensor([1, 2, 0]))
    # <g0,g0>=5, <g0,g1>=11, <g1,g1>=25; divided by n_i n_j = 1, 2, 4; domain 2 unseen → zeros.
    expected = torch.tensor(
        [[5.0, 5.5, 0.0], [5.5, 6.25, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64
    )
    assert G.dtype == torch.float64 and torch.allclose(G, expected)


def test_normalize_gram_never_nan_and_validates() -> None:
    raw = torch.tensor([[float("inf"), 1.0], [1.0, 2.0]])
    G = normalize_gram(raw, torch.tensor([0.0, 2.0]))
    assert torch.isfinite(G).all() and G[0].abs().sum() == 0 and G[1, 1] == 0.5
    with pytest.raises(ValueError, match="counts"):
        normalize_gram(raw, torch.tensor([-1.0, 2.0]))
    with pytest.raises(ValueError):
        normalize_gram(raw, torch.tensor([1.0, 2.0, 3.0]))


def test_raw_gram_symmetric_float64() -> None:
    acc = torch.randn(4, 37)
    R = raw_gram(acc)
    assert R.dtype == torch.float64 and torch.equal(R, R.T)
    assert torch.allclose(R, acc.double() @ acc.double().T)


def test_two_domains_hand_computed() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    up = rnb_weights(G, torch.tensor([1.0, 0.0]), lam=3.0)
    assert isinstance(up, RnBUpdate) and not up.kept_previous
    assert up.gq.tolist() == [1.0, 0.0] and up.gq_norm == 1.0
    assert torch.allclose(up.p, torch.tensor(softmax([3.0, 0.0]), dtype=torch.float64))
    # Symmetric G and q → uniform.
    sym = rnb_weights(torch.tensor([[2.0, 1.0], [1.0, 2.0]]), torch.tensor([0.5, 0.5]), lam=5.0)
    assert torch.allclose(sym.p, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_three_domains_hand_computed_both_forms() -> None:
    G = torch.tensor([[4.0, 2.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)  # float64: exact decimals
    gq = [1.4, 1.8, 1.3]  # by hand: rows of G dotted with q
    norm = math.sqrt(sum(x * x for x in gq))
    up = rnb_weights(G, q, lam=3.0)
    assert torch.allclose(up.gq, torch.tensor(gq, dtype=torch.float64))
    assert math.isclose(up.gq_norm, norm, rel_tol=1e-12)
    assert torch.allclose(
        up.p, torch.tensor(softmax([3.0 * x / norm for x in gq]), dtype=torch.float64)
    )
    un = rnb_weights(G, q, lam=3.0, form="unnormalized")
    assert torch.allclose(un.p, torch.tensor(softmax([3.0 * x for x in gq]), dtype=torch.float64))
    assert int(up.p.argmax()) == 1 and float(un.p[1]) > float(up.p[1])  # 3·‖Gq‖ > 3: sharper


def test_simplex_and_limits_of_lambda() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        X = torch.randn(6, 10, generator=g, dtype=torch.float64)
        G, q = X @ X.T, torch.rand(6, generator=g, dtype=torch.float64)
        for form in ("normalized", "unnormalized"):
            p = rnb_weights(G, q, lam=2.0, form=form).p
            assert bool((p >= 0).all()) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-12)
        assert torch.allclose(
            rnb_weights(G, q, lam=0.0).p, torch.full((6,), 1 / 6, dtype=torch.float64)
        )
        assert torch.allclose(
            rnb_weights(G, q, lam=1e-9).p, torch.full((6,), 1 / 6, dtype=torch.float64)
        )
        big = rnb_weights(G, q, lam=1e4).p
        assert int(big.argmax()) == int((G @ q).argmax()) and float(big.max()) > 1 - 1e-9


def test_zero_and_nonfinite_gq_keep_previous() -> None:
    q = torch.tensor([0.5, 0.25, 0.25])
    up = rnb_weights(torch.zeros(3, 3), q, lam=3.0)
    assert up.kept_previous and torch.allclose(up.p, torch.full((3,), 1 / 3, dtype=torch.float64))
    prev = torch.tensor([0.2, 0.3, 0.5])
    up = rnb_weights(torch.zeros(3, 3), q, lam=3.0, prev=prev)
    assert up.kept_previous and torch.allclose(up.p, prev.double()) and up.gq_norm == 0.0
    bad = torch.eye(3)
    bad[0, 0] = float("nan")
    up = rnb_weights(bad, q, lam=3.0, prev=prev, form="unnormalized")
    assert up.kept_previous and torch.allclose(up.p, prev.double())
    # G from accumulators with nothing sampled: zero counts → zero G → previous kept.
    up = rnb_weights(gram_matrix(torch.randn(3, 5), torch.zeros(3)), q, lam=3.0, prev=prev)
    assert up.kept_previous


def test_min_weight_floor() -> None:
    p = torch.tensor([0.9, 0.09, 0.01], dtype=torch.float64)
    out = apply_min_weight(p, 0.05)
    # Smallest mixing with uniform: (1-a)·0.01 + a/3 = 0.05 → a = 0.04 / (1/3 - 0.01).
    a = 0.04 / (1 / 3 - 0.01)
    assert torch.allclose(out, (1 - a) * p + a / 3)
    assert math.isclose(float(out.min()), 0.05) and math.isclose(float(out.sum()), 1.0)
    assert torch.equal(apply_min_weight(p, 0.005), p)  # already satisfied: unchanged
    assert torch.allclose(apply_min_weight(p, 1 / 3), torch.full((3,), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"strategy\.min_weight"):
        apply_min_weight(p, 0.34)
    with pytest.raises(ValueError, match=r"strategy\.min_weight"):
        apply_min_weight(p, -0.1)
    G = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    up = rnb_weights(G, torch.tensor([1.0, 0.0, 0.0]), lam=50.0, min_weight=0.1)
    assert math.isclose(float(up.p.min()), 0.1) and math.isclose(float(up.p.sum()), 1.0)


def test_ema_and_validation() -> None:
    A, B = torch.eye(2), 3 * torch.ones(2, 2)
    assert torch.equal(ema(None, B, 0.9), B.double())
    assert torch.allclose(ema(A, B, 0.25), 0.25 * A.double() + 0.75 * B.double())
    with pytest.raises(ValueError, match=r"strategy\.gram_ema"):
        ema(A, B, 1.0)
    with pytest.raises(ValueError, match=r"strategy\.gram_ema"):
        ema(torch.eye(3), B, 0.5)


def test_bad_arguments_name_config_keys() -> None:
    G, q = torch.eye(2), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"strategy\.form"):
        rnb_weights(G, q, 1.0, form="greedy")
    with pytest.raises(ValueError, match=r"strategy\.lam"):
        rnb_weights(G, q, -1.0)
    with pytest.raises(ValueError, match=r"strategy\.objective"):
        rnb_weights(G, torch.tensor([1.0, 0.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match=r"strategy\.objective"):
        rnb_weights(G, torch.tensor([-1.0, 2.0]), 1.0)
    with pytest.raises(ValueError, match="prev"):
        rnb_weights(torch.zeros(2, 2), q, 1.0, prev=torch.tensor([1.0, 0.0, 0.0]))


def test_raw_gram_matches_float64_product() -> None:
    acc = torch.randn(5, 900_001)  # 110 fp32 chunks (the last one short) summed in float64
    acc[1] -= acc[0] * (acc[0] @ acc[1]) / (acc[0] @ acc[0])  # a near-orthogonal pair
    ref = acc.double() @ acc.double().T
    norms = ref.diagonal().sqrt()
    # round-off within 1e-6 of ‖g_i‖‖g_j‖ (the Cauchy–Schwarz scale), orders of magnitude
    # below the sketch's error; the near-zero entry stays near zero on that scale
    err = (raw_gram(acc) - ref).abs() / (norms[:, None] * norms[None, :])
    assert float(err.max()) <= 1e-6
