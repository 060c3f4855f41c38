"""Eval assignment to the nearest training centroid, checked against brute force."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rnb.regroup import assign
from rnb.regroup.assign import (
    _auto_chunk,
    all_finite,
    assign_to_centroids,
    distance_to_own_centroid,
    nearest_centroid,
)


def _brute(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((X[:, None, :].astype(np.float64) - C[None, :, :]) ** 2).sum(-1))
    return d.argmin(1), d.min(1)


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_nearest_centroid_matches_brute_force(chunk: int | None) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 6)).astype(np.float32)
    C = rng.normal(size=(9, 6))
    labels, dist = nearest_centroid(X, C, chunk_size=chunk)
    ref_l, ref_d = _brute(X, C)
    np.testing.assert_array_equal(labels, ref_l)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-9, atol=1e-9)


def test_nearest_centroid_ties_and_nan_rows() -> None:
    C = np.array([[np.nan, np.nan], [1.0, 0.0], [-1.0, 0.0]])
    labels, dist = nearest_centroid(np.array([[0.0, 0.0], [0.9, 0.1]]), C)
    np.testing.assert_array_equal(labels, [1, 1])  # tie at the origin -> lower id; NaN skipped
    np.testing.assert_allclose(dist, [1.0, np.sqrt(0.02)])


def test_assign_with_ood_radius_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    C_true = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    y = rng.integers(0, 3, size=300)
    train = (C_true[y] + rng.normal(size=(300, 3))).astype(np.float32)
    C = np.stack([train[y == c].mean(0) for c in range(3)])
    X_eval = np.concatenate([C_true + 0.1, [[30.0, 30.0, 30.0], [5.0, 5.0, 0.0]]])
    a = assign_to_centroids(X_eval, C, train, y, ood_quantile=0.9, chunk_size=2)
    ref_l, ref_d = _brute(X_eval, C)
    np.testing.assert_array_equal(a.labels, ref_l)
    np.testing.assert_allclose(a.distances, ref_d, rtol=1e-9)
    own = np.linalg.norm(train.astype(np.float64) - C[y], axis=1)
    radius = np.array([np.quantile(own[y == c], 0.9) for c in range(3)])
    # float32 training data -> float32 arithmetic for the radius (documented, ~1e-7).
    np.testing.assert_allclose(a.radius, radius, rtol=1e-6)
    np.testing.assert_array_equal(a.ood_mask, ref_d > a.radius[ref_l])
    assert a.ood_mask.tolist() == [False, False, False, True, True] and a.n_ood == 2
    np.testing.assert_allclose(distance_to_own_centroid(train, y, C, chunk_size=5), own, rtol=1e-6)
    own64 = distance_to_own_centroid(train.astype(np.float64), y, C, chunk_size=5)
    np.testing.assert_allclose(own64, own, rtol=1e-12)


def test_assign_without_training_data_and_empty_cluster() -> None:
    C = np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    a = assign_to_centroids(np.array([[4.0, 4.0]]), C)
    assert a.labels.tolist() == [1] and a.radius is None and not a.ood_mask.any()
    train, lab = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0, 0])
    b = assign_to_centroids(np.array([[8.0, 8.0], [3.0, 3.0]]), C, train, lab, ood_quantile=1.0)
    assert np.isinf(b.radius[1:]).all()  # clusters 1, 2 have no training points: never OOD
    assert b.labels.tolist() == [2, 1] and b.n_ood == 0


def test_assign_errors() -> None:
    C = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"data\.eval_path / data\.eval_fraction"):
        assign_to_centroids(np.zeros((0, 3)), C)
    with pytest.raises(ValueError, match="same embedder"):
        assign_to_centroids(np.zeros((4, 2)), C)
    with pytest.raises(ValueError, match="NaN"):
        assign_to_centroids(np.full((2, 3), np.nan), C)
    with pytest.raises(ValueError, match=r"regroup\.ood_quantile"):
        assign_to_centroids(np.zeros((2, 3)), C, ood_quantile=0.0)
    with pytest.raises(ValueError, match="together"):
        assign_to_centroids(np.zeros((2, 3)), C, train_X=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"0\.\.k-1"):
        assign_to_centroids(np.zeros((2, 3)), C, np.zeros((2, 3)), np.array([0, 5]))


def test_all_finite() -> None:
    assert all_finite(np.zeros((3, 2), np.float32)) and all_finite(np.arange(4))
    assert all_finite(np.full((2, 2), 1e308))  # float64 sum overflows -> exact re-check
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((4, 3), np.float32)
        x[2, 1] = bad
        assert not all_finite(x)
    assert not all_finite(np.array([["a"]]))


# ---------------------------------------------------------------- pinned by mutation testing
class _Rows:
    """An ``[n, d]`` array that records which row slices are read (like a memmap would)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, []

    def __getitem__(self, key: slice) -> np.ndarray:
        self.reads.append((key.start, key.stop))
        return self.X[key]


def test_auto_chunk_bounds_the_scratch_to_64_mib() -> None:
    mib64 = 64 * 2**20
    assert _auto_chunk(384, 16) == mib64 // (8 * 384)  # d dominates
    assert _auto_chunk(4, 1000) == mib64 // (8 * 1000)  # k dominates
    assert _auto_chunk(1, 1) == _auto_chunk(0, 0) == mib64 // 8  # no division by zero
    assert _auto_chunk(2**24, 1) == 1  # a row larger than the budget: one row at a time


def test_rows_are_read_once_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    X, C = rng.normal(size=(7, 2)), rng.normal(size=(16, 2))
    rows = _Rows(X)
    labels, dist = nearest_centroid(rows, C, chunk_size=3)
    np.testing.assert_allclose(dist, _brute(X, C)[1], rtol=1e-9)
    assert rows.reads == [(0, 3), (3, 6), (6, 9)]
    np.testing.assert_array_equal(labels, _brute(X, C)[0])
    # Automatic chunks: 8 * max(d, k) bytes per row; k = 16 centroids dominate d = 2.
    monkeypatch.setattr(assign, "_CHUNK_BYTES", 8 * 16 * 3)
    rows = _Rows(X)
    nearest_centroid(rows, C)
    assert rows.reads == [(0, 3), (3, 6), (6, 9)]
    X1 = X[:, :1]  # d = 1: the own-centroid pass sizes its chunks by d alone
    monkeypatch.setattr(assign, "_CHUNK_BYTES", 8 * 1 * 4)
    rows = _Rows(X1)
    own = distance_to_own_centroid(rows, labels, C[:, :1])
    assert rows.reads == [(0, 4), (4, 8)]
    np.testing.assert_allclose(own, np.abs(X1[:, 0] - C[labels, 0]))
    rows = _Rows(X1)
    distance_to_own_centroid(rows, labels, C[:, :1], chunk_size=5)
    assert rows.reads == [(0, 5), (5, 10)]


def test_assign_passes_chunk_size_to_both_distance_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, int | None]] = []
    for name in ("nearest_centroid", "distance_to_own_centroid"):
        real = getattr(assign, name)

        def spy(*args: object, _real=real, _name=name) -> object:
            seen.append((_name, args[-1]))
            return _real(*args)

        monkeypatch.setattr(assign, name, spy)
    C = np.array([[0.0, 0.0], [5.0, 5.0]])
    assign_to_centroids(np.ones((3, 2)), C, C, np.array([0, 1]), chunk_size=2)
    assert seen == [("nearest_centroid", 2), ("distance_to_own_centroid", 2)]


def test_own_distance_of_float32_rows_uses_float32_arithmetic() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 5)).astype(np.float32)
    C, y = rng.normal(size=(3, 5)), rng.integers(0, 3, size=50)
    diff = X - C.astype(np.float32)[y]
    expected = np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float64)
    got = distance_to_own_centroid(X, y, C)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)  # bitwise: the documented float32 path


def test_assignment_fields_without_and_with_training_data() -> None:
    C = np.array([[0.0, 0.0], [2.0, 0.0]])
    X_eval = np.array([[1.0, 1.0], [3.0, 0.0]])
    a = assign_to_centroids(X_eval, C, ood_quantile=0.5)
    np.testing.assert_allclose(a.distances, [np.sqrt(2.0), 1.0])
    assert a.ood_mask.dtype == bool and a.ood_mask.tolist() == [False, False]
    assert a.ood_quantile == 0.5 and a.radius is None
    # One training point at distance exactly 1 from each centroid: radius 1 (q = 1).
    train, lab = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([0, 1])
    b = assign_to_centroids(np.array([[1.0, 0.0], [2.0, 1.5]]), C, train, lab, ood_quantile=1.0)
    assert b.labels.tolist() == [0, 1] and b.radius.tolist() == [1.0, 1.0]
    assert b.distances.tolist() == [1.0, 1.5]
    assert b.ood_mask.tolist() == [False, True]  # exactly at the radius is not beyond it
    assert b.ood_quantile == 1.0
    one = assign_to_centroids(np.array([[7.0]]), np.array([[1.0]]))  # one point, one centroid
    assert one.labels.tolist() == [0] and one.distances.tolist() == [6.0]


def test_assign_error_messages_name_the_key() -> None:
    C = np.zeros((2, 3))
    cases = [
        (
            (np.zeros((0, 3)), C),
            {},
            "data.eval_path / data.eval_fraction: the evaluation set is empty; "
            "provide an eval file or a positive eval fraction",
        ),
        ((np.zeros(3), C), {}, "embedder: X_eval must be a 2-D [n, d] array, got shape (3,)"),
        ((np.full((2, 3), np.nan), C), {}, "embedder: X_eval contains NaN/inf or non-numeric values"),
        ((np.zeros((2, 3)), np.zeros(3)), {}, "regroup: centroids must be a 2-D [n, d] array, got shape (3,)"),
        ((np.zeros((2, 3)), np.full((2, 3), np.inf)), {}, "regroup: centroids contains NaN/inf or non-numeric values"),
        ((np.zeros((2, 3)), np.zeros((0, 3))), {}, "regroup: need at least one centroid, got 0"),
        ((np.zeros((2, 3)), C), {"ood_quantile": 1.5}, "regroup.ood_quantile: need 0 < q <= 1, got 1.5"),
        ((np.zeros((2, 3)), C), {"train_labels": np.zeros(2, int)}, "regroup: pass train_X and train_labels together (or neither)"),
        ((np.zeros((2, 3)), C, np.zeros(3), np.zeros(3, int)), {}, "embedder: train_X must be a 2-D [n, d] array, got shape (3,)"),
        ((np.zeros((2, 3)), C, np.full((1, 3), np.nan), np.zeros(1, int)), {}, "embedder: train_X contains NaN/inf or non-numeric values"),
        ((np.zeros((2, 3)), C, np.zeros((2, 2)), np.zeros(2, int)), {}, "regroup: train_X (2, 2) / train_labels (2,) do not match centroids (2, 3)"),
        ((np.zeros((2, 3)), C, np.zeros((2, 3)), np.zeros(3, int)), {}, "regroup: train_X (2, 3) / train_labels (3,) do not match centroids (2, 3)"),
        ((np.zeros((2, 3)), C, np.zeros((2, 3)), np.array([0, 2])), {}, "regroup.noise_policy: training labels must lie in 0..k-1 (apply the noise policy before assigning eval data)"),
        ((np.zeros((2, 3)), C, np.zeros((2, 3)), np.array([-1, 0])), {}, "regroup.noise_policy: training labels must lie in 0..k-1 (apply the noise policy before assigning eval data)"),
    ]  # fmt: skip
    for args, kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            assign_to_centroids(*args, **kwargs)
        assert str(err.value) == message
    with pytest.raises(ValueError, match="evaluation set is empty"):  # zero-width embeddings
        assign_to_centroids(np.zeros((3, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError) as err:
        nearest_centroid(np.zeros((2, 2)), np.full((2, 2), np.nan))
    assert str(err.value) == "centroids: need at least one finite centroid row"


def test_all_finite_edge_cases_are_exact_and_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float64 sum may overflow: no RuntimeWarning
        assert not all_finite(np.array([np.nan]))  # a single element is checked too
        assert not all_finite(np.array([np.inf, -np.inf]))  # inf - inf in the sum
        assert all_finite(np.full((2, 2), 1e308))
        assert all_finite(np.zeros((0, 3)))
