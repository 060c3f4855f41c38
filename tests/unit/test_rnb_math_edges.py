"""Edge cases of the R&B maths that the formula tests do not reach (mutation-testing gaps).

Boundaries (``min_weight * m == 1``, ``beta == 0``, ``p_min == floor``), the previous
mixture's validation and normalisation, validation messages that name the shapes, and
dtype handling of every entry point.
"""

from __future__ import annotations

import pytest
import torch

from rnb.balance.rnb_math import apply_min_weight, ema, normalize_gram, raw_gram, rnb_weights

G3 = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 3.0]], dtype=torch.float64)
Q3 = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)


def test_degenerate_round_keeps_normalised_previous_mixture() -> None:
    zero = torch.zeros(3, 3)
    out = rnb_weights(zero, Q3, 3.0, prev=torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(out.p, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert out.kept_previous is True and out.gq is not None and out.gq.shape == (3,)
    # no prev: uniform, float64
    out = rnb_weights(zero, Q3, 3.0)
    assert out.p.dtype == torch.float64
    torch.testing.assert_close(out.p, torch.full((3,), 1 / 3, dtype=torch.float64))
    # a zero entry in prev is a valid mixture (a domain switched off)
    out = rnb_weights(zero, Q3, 3.0, prev=torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(out.p, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("prev", [[0.5, 0.5], [0.5, -0.1, 0.6], [float("nan"), 0.5, 0.5]])
def test_bad_previous_mixture(prev: list[float]) -> None:
    with pytest.raises(ValueError, match=r"prev: need a finite non-negative \[3\] mixture"):
        rnb_weights(G3, Q3, 3.0, prev=torch.tensor(prev))


def test_fresh_update_is_flagged_and_float64() -> None:
    out = rnb_weights(G3.float(), Q3.float(), 3.0)
    assert out.kept_previous is False
    assert out.p.dtype == torch.float64 and out.gq.dtype == torch.float64
    torch.testing.assert_close(out.gq, G3 @ Q3)


def test_square_and_objective_validation_messages() -> None:
    with pytest.raises(
        ValueError, match=r"gram: need a square \[m, m\] matrix, got shape \(2, 3\)"
    ):
        rnb_weights(torch.ones(2, 3), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        rnb_weights(torch.ones(3), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"need 3 weights"):
        rnb_weights(G3, torch.ones(2), 1.0)
    with pytest.raises(ValueError, match=r"positive sum"):
        rnb_weights(G3, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"strategy\.lambda_"):
        rnb_weights(G3, Q3, float("inf"))
    with pytest.raises(ValueError, match=r"strategy\.lambda_"):
        rnb_weights(G3, Q3, -0.1)
    assert rnb_weights(G3, Q3, 0.0).p.tolist() == pytest.approx([1 / 3] * 3)


def test_normalize_gram_validation_and_dtype() -> None:
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(2,\)"):
        normalize_gram(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"got \(3, 3\) and \(2,\)"):
        normalize_gram(torch.ones(3, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"got \(3,\) and \(3,\)"):
        normalize_gram(torch.ones(3), torch.ones(3))
    # float32 raw and integer counts: the division happens in float64 (bit-exact)
    out = normalize_gram(torch.ones(2, 2, dtype=torch.float32) * 3, torch.tensor([3, 7]))
    assert out.dtype == torch.float64
    third, seventh = 1.0 / 3.0, 1.0 / 7.0
    expected = torch.tensor(
        [
            [3.0 * third * third, 3.0 * third * seventh],
            [3.0 * seventh * third, 3.0 * seventh * seventh],
        ],
        dtype=torch.float64,
    )
    assert torch.equal(out, expected)
    # an unseen domain zeroes its row AND column, also against a seen one
    out = normalize_gram(torch.ones(2, 2), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.0, 0.25]], dtype=torch.float64))
    # ... even where the raw entry is not finite (0 * inf would be NaN)
    raw = torch.tensor([[1.0, float("inf")], [float("inf"), 4.0]], dtype=torch.float64)
    out = normalize_gram(raw, torch.tensor([0.0, 2.0]))
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64))


def test_raw_gram_validation_and_float64_passthrough() -> None:
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4\)"):
        raw_gram(torch.ones(2, 3, 4))
    # float64 accumulators keep float64 precision (no float32 round trip)
    x = torch.tensor([[1.0 + 1e-12, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = raw_gram(x)
    assert out[0, 0].item() == (1.0 + 1e-12) ** 2
    # float16 accumulators are multiplied in float32 (a float16 product would round 1000² to inf)
    h = torch.tensor([[300.0, 0.0]], dtype=torch.float16)
    assert raw_gram(h).item() == 90000.0


def test_min_weight_boundaries() -> None:
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    # floor * m == 1 is feasible (exactly uniform), just above is not
    torch.testing.assert_close(
        apply_min_weight(p, 1 / 3), torch.full((3,), 1 / 3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=r"got 0\.4 \* 3 = 1\.2"):
        apply_min_weight(p, 0.4)
    # p_min == floor: unchanged
    assert apply_min_weight(p, 0.1) is p or torch.equal(apply_min_weight(p, 0.1), p)
    torch.testing.assert_close(apply_min_weight(p, 0.1), p)
    # a floor of exactly 1/m on a uniform p: unchanged, alpha is not overshot
    u = torch.full((4,), 0.25, dtype=torch.float64)
    torch.testing.assert_close(apply_min_weight(u, 0.25), u)
    # float32 input: float64 output with the exact mixing coefficient
    out = apply_min_weight(torch.tensor([0.9, 0.1, 0.0]), 0.05)
    assert out.dtype == torch.float64
    alpha = 0.05 / (1 / 3)
    expected = (1 - alpha) * torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64) + alpha / 3
    torch.testing.assert_close(out, expected.to(torch.float64), rtol=1e-7, atol=1e-8)
    assert out.min().item() == pytest.approx(0.05)
    # floor == 1/m on a far-from-uniform p: alpha = 1 exactly (uniform), never beyond
    torch.testing.assert_close(
        apply_min_weight(torch.tensor([1.0, 0.0], dtype=torch.float64), 0.5),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )


def test_ema_boundaries_and_dtype() -> None:
    a = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float32)
    torch.testing.assert_close(ema(a, b, 0.0), b.to(torch.float64))  # beta = 0 is allowed
    out = ema(a.float(), b, 0.5)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([[2.0, 1.0], [1.0, 2.5]], dtype=torch.float64))
    assert ema(None, b, 0.3).dtype == torch.float64
    # G_prev with float32-unrepresentable value keeps float64 precision
    fine = torch.tensor([[1.0 + 1e-12]], dtype=torch.float64)
    assert ema(fine, torch.zeros(1, 1, dtype=torch.float64), 0.5).item() == 0.5 * (1.0 + 1e-12)
    with pytest.raises(ValueError, match=r"shapes differ, \(2, 2\) vs \(1, 1\)"):
        ema(a, torch.zeros(1, 1), 0.5)


def test_infinite_gq_norm_keeps_previous_mixture() -> None:
    G = torch.tensor([[float("inf"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    prev = torch.tensor([0.3, 0.7], dtype=torch.float64)
    out = rnb_weights(G, torch.tensor([0.5, 0.5]), 3.0, prev=prev)
    assert out.kept_previous is True and out.gq_norm == float("inf")
    torch.testing.assert_close(out.p, prev)
