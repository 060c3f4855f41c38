"""Row planning of the gradient capture (`rnb.balance.capture.rows`).

`plan_rows` is checked field by field against a brute-force reference built row by row
(which rows, which layout, which weights, which segments), `_subsample` against its
contract (exactly ``min(k, valid)`` valid rows per example, uniformly), and `parse_batch`
against its exact error texts and its no-copy promise for host arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.balance.capture.rows import MAX_SPANS_PER_EXAMPLE, _subsample, parse_batch, plan_rows


# ----------------------------------------------------------------------------- references
def example_runs(dom: np.ndarray, T: int) -> list[tuple[int, int, int]]:
    """(domain, first row, end row) of each maximal run of same-domain examples, by a loop."""
    runs: list[tuple[int, int, int]] = []
    for b, d in enumerate(dom.tolist()):
        if runs and runs[-1][0] == d:
            runs[-1] = (d, runs[-1][1], (b + 1) * T)
        else:
            runs.append((d, b * T, (b + 1) * T))
    return runs


def row_spans(dom: np.ndarray, keep: np.ndarray) -> list[tuple[int, int, int]]:
    """(domain, first row, end row) of each maximal run of selected same-domain rows."""
    T = keep.shape[1]
    spans: list[tuple[int, int, int]] = []
    for r, selected in enumerate(keep.reshape(-1).tolist()):
        if not selected:
            continue
        d = int(dom[r // T])
        if spans and spans[-1][0] == d and spans[-1][2] == r:
            spans[-1] = (d, spans[-1][1], r + 1)
        else:
            spans.append((d, r, r + 1))
    return spans


def gathered(
    dom: np.ndarray, keep: np.ndarray, m: int
) -> tuple[list[int], list[tuple[int, int, int]], list[int]]:
    """Gather layout by hand: per domain (ascending) its selected rows in flat order."""
    T = keep.shape[1]
    idx: list[int] = []
    segments: list[tuple[int, int, int]] = []
    for d in range(m):
        rows = [r for r in range(keep.size) if keep.reshape(-1)[r] and dom[r // T] == d]
        if rows:
            segments.append((d, len(idx), len(idx) + len(rows)))
        idx += rows
    row_domains = [int(dom[r // T]) for r in idx]
    return idx, segments, row_domains


def counts_of(dom: np.ndarray, m: int) -> list[float]:
    return [float((dom == d).sum()) for d in range(m)]


# ----------------------------------------------------------------------------- layouts
def test_no_mask_is_in_place_over_example_runs() -> None:
    dom = np.array([2, 2, 0, 1, 1, 1, 2])
    plan = plan_rows(dom, None, 3, 4)
    assert plan.idx is None and plan.row_weight is None and plan.row_domains is None
    assert plan.segments == example_runs(dom, 3) == [(2, 0, 6), (0, 6, 9), (1, 9, 18), (2, 18, 21)]
    assert plan.rows == 21 and isinstance(plan.rows, int)
    assert plan.example_counts.dtype == torch.float64
    assert plan.example_counts.tolist() == [1.0, 3.0, 3.0, 0.0]


def test_full_mask_is_in_place_without_weights() -> None:
    dom = np.array([1, 0, 0, 1])
    plan = plan_rows(dom, np.ones((4, 5), dtype=bool), 5, 3)
    assert plan.idx is None and plan.row_weight is None and plan.row_domains is None
    assert plan.segments == [(1, 0, 5), (0, 5, 15), (1, 15, 20)]
    assert plan.rows == 20
    assert plan.example_counts.tolist() == [2.0, 2.0, 0.0]


def test_mostly_selected_mask_is_in_place_with_zero_one_weights() -> None:
    dom = np.array([0, 0, 1])
    keep = np.ones((3, 4), dtype=bool)
    keep[0, 3] = keep[2, 0] = False  # 10 of 12 rows: more than half, not all
    plan = plan_rows(dom, keep, 4, 2)
    assert plan.idx is None and plan.row_domains is None
    assert plan.segments == [(0, 0, 8), (1, 8, 12)]
    assert plan.row_weight is not None and plan.row_weight.dtype == torch.float32
    assert plan.row_weight.tolist() == keep.reshape(-1).astype(float).tolist()
    assert plan.rows == 10


def test_half_selected_mask_is_gathered_by_domain_in_row_order() -> None:
    dom = np.array([1, 0, 1, 2])
    keep = np.zeros((4, 4), dtype=bool)
    keep[0, :2] = keep[1, 1:3] = keep[2, 3] = keep[3, :3] = True  # 8 of 16: exactly half
    plan = plan_rows(dom, keep, 4, 4)
    assert plan.idx is not None and plan.idx.dtype == torch.int64
    assert plan.idx.tolist() == [5, 6, 0, 1, 11, 12, 13, 14]
    assert plan.segments == [(0, 0, 2), (1, 2, 5), (2, 5, 8)]  # domain 3 absent: no segment
    assert plan.row_domains.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert plan.row_weight is None and plan.rows == 8
    assert plan.example_counts.tolist() == [1.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("seed", range(8))
def test_plan_matches_row_by_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    B, T, m = int(rng.integers(1, 40)), int(rng.integers(1, 7)), 4
    dom = rng.integers(0, m - 1, size=B)  # domain m-1 never present
    if seed % 2:
        dom = np.sort(dom)  # long same-domain runs
    keep = rng.random((B, T)) < rng.choice([0.2, 0.5, 0.8])
    plan = plan_rows(dom, keep, T, m)
    n = int(keep.sum())
    assert plan.rows == n
    assert plan.example_counts.tolist() == counts_of(dom, m)
    if 2 * n > B * T:
        assert plan.idx is None and plan.segments == example_runs(dom, T)
        assert plan.row_weight.tolist() == keep.reshape(-1).astype(float).tolist()
    else:
        idx, segments, row_domains = gathered(dom, keep, m)
        assert plan.idx.tolist() == idx
        assert plan.segments == segments
        assert plan.row_domains.tolist() == row_domains
        assert plan.row_weight is None


def test_gather_keeps_row_order_within_a_domain() -> None:
    # Enough examples that an unstable sort by domain would reorder equal keys.
    rng = np.random.default_rng(3)
    B, T, m = 48, 2, 3
    dom = rng.integers(0, m, size=B)
    keep = np.zeros((B, T), dtype=bool)
    keep[:, 0] = True
    plan = plan_rows(dom, keep, T, m)
    idx, segments, _ = gathered(dom, keep, m)
    assert plan.idx.tolist() == idx
    assert plan.segments == segments


def test_empty_batch_with_mask_plans_nothing() -> None:
    plan = plan_rows(np.zeros(0, dtype=np.int64), np.zeros((0, 5), dtype=bool), 5, 3)
    assert plan.idx.tolist() == [] and plan.segments == [] and plan.rows == 0
    assert plan.row_domains.tolist() == []
    assert plan.example_counts.tolist() == [0.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- spans
def test_spans_layout_segments_are_the_selected_row_runs() -> None:
    dom = np.array([0, 0, 1, 0])
    keep = np.array(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 0, 1]], dtype=bool
    )
    plan = plan_rows(dom, keep, 5, 2, spans=True)
    assert plan.segments == row_spans(dom, keep) == [
        (0, 0, 7), (1, 10, 13), (0, 16, 18), (0, 19, 20)
    ]  # fmt: skip
    assert plan.idx is None and plan.row_weight is None and plan.rows == 13


@pytest.mark.parametrize("B", [1, 2])
def test_spans_limit_is_per_example_also_for_one_example(B: int) -> None:
    T = 4 * MAX_SPANS_PER_EXAMPLE + 4
    limit = MAX_SPANS_PER_EXAMPLE * B
    for runs in (limit, limit + 1):
        keep = np.zeros((B, T), dtype=bool)
        keep.reshape(-1)[: 2 * runs : 2] = True  # `runs` isolated selected rows
        dom = np.zeros(B, dtype=np.int64)
        plan = plan_rows(dom, keep, T, 1, spans=True)
        if runs <= limit:
            assert plan.idx is None and plan.segments == row_spans(dom, keep)
        else:
            assert plan.idx is not None  # too fragmented: gathered (at most half selected)
            assert plan.segments == [(0, 0, runs)]


def test_spans_are_not_used_with_a_subsample() -> None:
    keep = np.zeros((2, 6), dtype=bool)
    keep[:, :3] = True
    gen = torch.Generator().manual_seed(0)
    plan = plan_rows(np.array([0, 1]), keep, 6, 2, rows_per_example=2, gen=gen, spans=True)
    assert plan.idx is not None and plan.rows == 4


# ----------------------------------------------------------------------------- subsampling
def test_subsample_of_all_rows_is_no_subsample() -> None:
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    dom = np.array([0, 1, 1])
    plan = plan_rows(dom, None, 4, 2, rows_per_example=4, gen=gen)
    assert plan.row_weight is None and plan.idx is None and plan.rows == 12
    assert plan.segments == [(0, 0, 4), (1, 4, 12)]
    assert torch.equal(gen.get_state(), before)  # no keys drawn


def test_subsample_in_place_weights_valid_over_kept() -> None:
    gen = torch.Generator().manual_seed(1)
    dom = np.array([0, 1, 0])
    T, k = 4, 3
    plan = plan_rows(dom, None, T, 2, rows_per_example=k, gen=gen)
    assert plan.idx is None and plan.rows == 9  # 9 of 12 rows: in place
    assert plan.segments == [(0, 0, 4), (1, 4, 8), (0, 8, 12)]
    w = plan.row_weight.numpy().reshape(3, T)
    assert ((w == 0) | np.isclose(w, T / k)).all()
    assert ((w > 0).sum(1) == k).all()


def test_subsample_gather_weights_and_rows() -> None:
    rng = np.random.default_rng(4)
    B, T, m, k = 7, 9, 3, 2
    dom = rng.integers(0, m, size=B)
    mask = rng.random((B, T)) < 0.6
    mask[0] = False
    mask[1, :] = False
    mask[1, 4] = True  # one valid row: kept with weight 1
    plan = plan_rows(dom, mask, T, m, rows_per_example=k, gen=torch.Generator().manual_seed(2))
    valid = mask.sum(1)
    kept = np.minimum(valid, k)
    assert plan.rows == int(kept.sum())
    rows = plan.idx.numpy()
    ex = rows // T
    assert mask.reshape(-1)[rows].all()
    assert np.bincount(ex, minlength=B).tolist() == kept.tolist()
    np.testing.assert_allclose(plan.row_weight.numpy(), valid[ex] / kept[ex], rtol=1e-6)
    assert plan.row_weight[rows.tolist().index(1 * T + 4)] == 1.0
    assert plan.row_domains.tolist() == dom[ex].tolist()
    assert (np.diff(plan.row_domains) >= 0).all()  # grouped by domain


def test_subsample_of_one_row_weights_by_valid_count() -> None:
    mask = np.zeros((3, 6), dtype=bool)
    mask[0, :5] = mask[1, :2] = mask[2, 3] = True
    gen = torch.Generator().manual_seed(0)
    plan = plan_rows(np.array([0, 0, 1]), mask, 6, 2, rows_per_example=1, gen=gen)
    assert (plan.idx.numpy() // 6).tolist() == [0, 1, 2]
    assert plan.row_weight.tolist() == [5.0, 2.0, 1.0]


def test_subsample_draws_exactly_k_valid_rows_uniformly() -> None:
    B, T, k = 3, 5, 2
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=bool)
    gen = torch.Generator().manual_seed(0)
    freq = np.zeros((B, T))
    draws = 2000
    for _ in range(draws):
        picked = _subsample(mask, B, T, k, gen)
        assert not (picked & ~mask).any()
        assert picked.sum(1).tolist() == [2, 2, 1]
        freq += picked
    want = mask * np.minimum(k / np.maximum(mask.sum(1), 1), 1)[:, None]
    np.testing.assert_allclose(freq / draws, want, atol=0.05)
    # Same generator state, same draw (the state is checkpointed with the capture).
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert np.array_equal(_subsample(None, B, T, k, g1), _subsample(None, B, T, k, g2))


# ----------------------------------------------------------------------------- parse_batch
def test_parse_batch_flattens_ids_and_widens_a_one_column_mask() -> None:
    dom, mask = parse_batch(torch.tensor([[2], [0], [1]]), None, 3)
    assert dom.dtype == np.int64 and dom.tolist() == [2, 0, 1]
    assert mask is None
    dom, mask = parse_batch(np.array([1, 1]), np.array([True, False]), 2)
    assert mask.dtype == bool and mask.shape == (2, 1) and mask[:, 0].tolist() == [True, False]
    dom, mask = parse_batch(np.array([0, 1]), np.array([[1, 0, 2], [0, 0, 1]]), 2)
    assert mask.dtype == bool and mask.tolist() == [[True, False, True], [False, False, True]]


def test_parse_batch_does_not_copy_host_arrays() -> None:
    ids, keep = np.array([0, 2, 1], dtype=np.int64), np.ones((3, 4), dtype=bool)
    dom, mask = parse_batch(ids, keep, 3)
    assert np.shares_memory(dom, ids) and np.shares_memory(mask, keep)
    ids_t, keep_t = torch.tensor([1, 0]), torch.zeros(2, 3, dtype=torch.bool)
    dom, mask = parse_batch(ids_t, keep_t, 2)
    assert np.shares_memory(dom, ids_t.numpy()) and np.shares_memory(mask, keep_t.numpy())


def test_parse_batch_errors_name_the_field() -> None:
    with pytest.raises(ValueError) as err:
        parse_batch(np.array([0, 3, 1]), None, 3)
    assert str(err.value) == "domain_ids: must lie in [0, 3) (num_domains), got min 0, max 3"
    with pytest.raises(ValueError) as err:
        parse_batch(torch.tensor([-1, 1]), None, 3)
    assert str(err.value) == "domain_ids: must lie in [0, 3) (num_domains), got min -1, max 1"
    with pytest.raises(ValueError) as err:
        parse_batch(np.array([0, 1, 1]), np.ones((2, 4), dtype=bool), 2)
    assert str(err.value) == "row_mask: need [3, T], got (2, 4)"
    dom, mask = parse_batch(np.zeros(0, dtype=np.int64), None, 1)  # empty: no range check
    assert dom.size == 0 and mask is None
