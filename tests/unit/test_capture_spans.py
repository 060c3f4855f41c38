"""The *spans* row layout of the capture (`rnb.balance.capture.rows.plan_rows(spans=True)`).

Checked against a brute-force reference: the spans cover exactly the selected rows, each
span is one domain's consecutive rows, spans are maximal, and per-domain products over them
equal the masked per-domain sums.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.balance.capture.rows import MAX_SPANS_PER_EXAMPLE, plan_rows


def right_padded(rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    lengths = rng.integers(0, T + 1, size=B)
    return np.arange(T)[None, :] < lengths[:, None]


@pytest.mark.parametrize("seed", range(6))
def test_spans_cover_exactly_the_selected_rows_one_domain_each(seed: int) -> None:
    rng = np.random.default_rng(seed)
    B, T, m = 9, 7, 3
    dom = rng.integers(0, m, size=B)
    keep = right_padded(rng, B, T)
    plan = plan_rows(dom, keep, T, m, spans=True)
    assert plan.idx is None and plan.row_weight is None  # no gather, no weights
    assert plan.rows == int(keep.sum())
    covered = np.zeros(B * T, dtype=int)
    row_dom = np.repeat(dom, T)
    for d, s, e in plan.segments:
        assert e > s
        covered[s:e] += 1
        assert set(row_dom[s:e].tolist()) == {d}
    np.testing.assert_array_equal(covered, keep.reshape(-1).astype(int))  # each once
    # maximal: two spans never touch with the same domain
    for (d1, _, e1), (d2, s2, _) in zip(plan.segments, plan.segments[1:], strict=False):
        assert not (e1 == s2 and d1 == d2)
    np.testing.assert_array_equal(plan.example_counts.numpy(), np.bincount(dom, minlength=m))


def test_spans_products_equal_masked_domain_sums() -> None:
    rng = np.random.default_rng(0)
    B, T, m, V, d = 8, 6, 4, 5, 3
    dom = rng.integers(0, m, size=B)
    keep = right_padded(rng, B, T)
    delta, a = (
        torch.randn(B * T, V, dtype=torch.float64),
        torch.randn(B * T, d, dtype=torch.float64),
    )
    plan = plan_rows(dom, keep, T, m, spans=True)
    got = torch.zeros(m, V, d, dtype=torch.float64)
    for dm, s, e in plan.segments:
        got[dm] += delta[s:e].T @ a[s:e]
    want = torch.zeros(m, V, d, dtype=torch.float64)
    flat = keep.reshape(-1)
    for r in range(B * T):
        if flat[r]:
            want[dom[r // T]] += torch.outer(delta[r], a[r])
    torch.testing.assert_close(got, want)


def test_whole_same_domain_examples_merge_into_one_span() -> None:
    dom = np.array([1, 1, 0])
    keep = np.ones((3, 4), dtype=bool)
    keep[2, 3] = False
    plan = plan_rows(dom, keep, 4, 2, spans=True)
    assert plan.segments == [(1, 0, 8), (0, 8, 11)]


def test_fragmented_mask_falls_back_to_gather() -> None:
    B, T = 4, 40
    keep = np.zeros((B, T), dtype=bool)
    keep[:, ::2] = True  # every other row: T/2 runs per example
    assert T // 2 > MAX_SPANS_PER_EXAMPLE
    plan = plan_rows(np.array([0, 1, 0, 1]), keep, T, 2, spans=True)
    assert plan.idx is not None  # the gather layout (at most half the rows selected)
    assert plan.rows == int(keep.sum())


def test_spans_off_keeps_the_gather_layout() -> None:
    keep = right_padded(np.random.default_rng(1), 6, 10)
    keep[:, 5:] = False  # at most half selected
    plan = plan_rows(np.arange(6) % 2, keep, 10, 2)
    assert plan.idx is not None
