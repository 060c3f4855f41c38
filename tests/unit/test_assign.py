"""Eval assignment to the nearest training centroid, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from rnb.regroup.assign import (
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
