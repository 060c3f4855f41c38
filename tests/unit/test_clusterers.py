"""Clusterer backends, noise policy, tiny-cluster merge and centroids."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import hdbscan
import numpy as np
import pytest
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import v_measure_score
from threadpoolctl import threadpool_limits

from rnb.regroup.clusterers import Clusterer, FaissKMeans, OriginalDomains
from rnb.regroup.postprocess import apply_noise_policy, centroids, merge_small_clusters


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # sklearn's OpenMP k-means is slower multi-threaded on tiny data (and on a busy box).
    with threadpool_limits(1):
        yield


def _blobs(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    # Centres along different axes and far from the origin: separated both in euclidean
    # distance and in angle, so spherical k-means must recover them too.
    centers = 10.0 * np.array([[1, 0, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0]])
    X, y = make_blobs(n_samples=n, centers=centers, cluster_std=0.5, random_state=seed)
    return X.astype(np.float32), y


BACKENDS = {
    "sk_kmeans": lambda: KMeans(n_clusters=4, n_init=3, random_state=0),
    "sk_minibatch": lambda: MiniBatchKMeans(n_clusters=4, n_init=3, random_state=0),
    "sk_hdbscan": lambda: HDBSCAN(min_cluster_size=15, copy=True),
    "hdbscan": lambda: hdbscan.HDBSCAN(min_cluster_size=15),
    "faiss": lambda: FaissKMeans(n_clusters=4, nredo=3, seed=0),
    "faiss_spherical": lambda: FaissKMeans(n_clusters=4, nredo=3, spherical=True, seed=0),
    "faiss_kmeanspp": lambda: FaissKMeans(n_clusters=4, init="kmeans++", seed=1),
}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_recovers_blobs(name: str) -> None:
    X, y = _blobs()
    clusterer = BACKENDS[name]()
    assert isinstance(clusterer, Clusterer)
    raw = clusterer.fit_predict(X)
    labels = apply_noise_policy(X, raw, "nearest")
    assert labels.min() >= 0
    assert v_measure_score(y, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["sk_hdbscan", "hdbscan"])
def test_hdbscan_noise_goes_to_nearest_centroid(name: str) -> None:
    X, y = _blobs()
    outliers = np.random.default_rng(0).uniform(-25, 25, size=(12, 4)).astype(np.float32)
    Xo = np.concatenate([X, outliers])
    raw = BACKENDS[name]().fit_predict(Xo)
    noise = raw == -1
    assert noise[len(X) :].sum() >= 6  # most outliers are noise
    labels = apply_noise_policy(Xo, raw)
    np.testing.assert_array_equal(labels[~noise], raw[~noise])
    C = np.stack([Xo[raw == c].mean(0) for c in range(raw.max() + 1)])
    brute = ((Xo[noise][:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(labels[noise], brute)
    assert v_measure_score(y, labels[: len(X)]) == pytest.approx(1.0)


def test_faiss_predict_centers_and_determinism() -> None:
    X, _ = _blobs()
    km = FaissKMeans(n_clusters=4, nredo=2, seed=3)
    labels = km.fit_predict(X)
    assert km.cluster_centers_.shape == (4, 4)
    np.testing.assert_array_equal(km.predict(X), labels)
    # Labels are the nearest centre (brute force).
    d = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_array_equal(FaissKMeans(n_clusters=4, nredo=2, seed=3).fit_predict(X), labels)


def test_faiss_spherical_centres_unit_norm_and_scale_invariant() -> None:
    X, _ = _blobs()
    km = FaissKMeans(n_clusters=4, spherical=True, nredo=3, seed=0)
    labels = km.fit_predict(X)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(km.predict(X * 7.0), labels)


def test_faiss_subsampling_still_labels_everything() -> None:
    X, y = _blobs(n=2000)
    km = FaissKMeans(n_clusters=4, max_points_per_centroid=20, nredo=3, seed=0)
    labels = km.fit_predict(X)  # trains on 80 points, assigns all 2000
    assert labels.shape == (2000,)
    assert v_measure_score(y, labels) == pytest.approx(1.0)


def test_faiss_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = _blobs(n=20)
    with pytest.raises(ValueError, match=r"clusterer\.n_clusters"):
        FaissKMeans(n_clusters=50).fit(X)
    with pytest.raises(ValueError, match=r"clusterer\.init"):
        FaissKMeans(n_clusters=2, init="bogus").fit(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FaissKMeans(n_clusters=2).fit(bad)
    with pytest.raises(NotFittedError):
        FaissKMeans().predict(X)
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        FaissKMeans(n_clusters=2).fit(X)


def test_original_domains() -> None:
    od = OriginalDomains()
    assert od.keeps_predefined_domains
    with pytest.raises(ValueError, match="labels_from"):
        od.fit_predict(np.zeros((3, 2)))
    labels = od.labels_from(["b", "a", "b", "c"])
    np.testing.assert_array_equal(labels, [1, 0, 1, 2])
    assert od.domain_names_ == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"data\.domain_field"):
        od.labels_from([])
    with pytest.raises(ValueError, match=r"data\.domain_field"):
        od.labels_from(["a", None])


# ---- post-processing ---------------------------------------------------------------------


def test_centroids_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    labels = rng.integers(-1, 4, size=50)
    labels[labels == 2] = 3  # cluster 2 empty
    C = centroids(X, labels, k=5)
    for c in range(5):
        members = X[labels == c]
        if len(members):
            np.testing.assert_allclose(C[c], members.astype(np.float64).mean(0), rtol=1e-12)
        else:
            assert np.isnan(C[c]).all()


def test_noise_policy_nearest_and_own_cluster() -> None:
    X = np.array([[0.0], [1.0], [10.0], [11.0], [2.0], [8.0], [5.4]])
    raw = np.array([0, 0, 1, 1, -1, -1, -1])  # centroids 0.5 and 10.5
    np.testing.assert_array_equal(apply_noise_policy(X, raw), [0, 0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(apply_noise_policy(X, raw, "own_cluster"), [0, 0, 1, 1, 2, 2, 2])
    assert raw[-1] == -1  # input untouched
    np.testing.assert_array_equal(apply_noise_policy(X, -np.ones(7, int), "own_cluster"), 0)


def test_noise_policy_errors() -> None:
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"regroup\.noise_policy.*not allowed"):
        apply_noise_policy(X, np.array([0, -1, 0]), "drop")
    with pytest.raises(ValueError, match=r"regroup\.noise_policy"):
        apply_noise_policy(X, np.array([0, -1, 0]), "bogus")
    with pytest.raises(ValueError, match=r"regroup\.noise_policy.*every point"):
        apply_noise_policy(X, np.array([-1, -1, -1]))
    with pytest.raises(ValueError, match="does not match"):
        apply_noise_policy(X, np.array([0, 1]))


def test_merge_small_clusters_hand_checked() -> None:
    # Cluster sizes: 0:4 (x~0), 1:1 (x=3), 2:2 (x=10,11), 3:1 (x=20); id 4 is empty.
    X = np.array([[0.0], [0.0], [1.0], [1.0], [3.0], [10.0], [11.0], [20.0]])
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 3])
    # min size 3. Smallest below: clusters 1 and 3 (size 1) -> tie -> id 1 first.
    #   centroid 3 is nearest to cluster 0 (0.5) -> 0 becomes {0,0,1,1,3}, centroid 1.0.
    # Next: cluster 3 (size 1, x=20): nearest is cluster 2 (10.5) -> 2 becomes {10,11,20}.
    # Now sizes 0:5, 2:3 -> done. Relabel by size: old 0 -> 0, old 2 -> 1.
    out = merge_small_clusters(X, labels, min_cluster_size=3)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 0, 1, 1, 1])
    # Threshold 1 only relabels by decreasing size (ties by old id).
    np.testing.assert_array_equal(
        merge_small_clusters(X, np.array([5, 5, 2, 2, 2, 7, 7, 0]), 1), [1, 1, 0, 0, 0, 2, 2, 3]
    )


def test_merge_uses_recomputed_centroid_and_stops_at_one_cluster() -> None:
    X = np.array([[0.0], [0.0], [0.0], [9.0], [4.9], [10.0], [10.0], [10.0]])
    labels = np.array([0, 0, 0, 1, 2, 3, 3, 3])
    # min size 3. Step 1: clusters 1 (x=9) and 2 (x=4.9) tie at size 1 -> id 1 first;
    #   nearest centroid is cluster 3 (10) -> 3 = {9, 10, 10, 10}, recomputed centroid 9.75.
    # Step 2: cluster 2 (x=4.9): cluster 0 at distance 4.9, cluster 3 at 4.85 (with the stale
    #   centroid 10 it would be 5.1 and go to cluster 0) -> joins 3.
    # Sizes 0:3, 3:5 -> relabel by size: old 3 -> 0, old 0 -> 1.
    out = merge_small_clusters(X, labels, min_cluster_size=3)
    np.testing.assert_array_equal(out, [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(merge_small_clusters(X, labels, 100), np.zeros(8, int))
    with pytest.raises(ValueError, match=r"regroup\.noise_policy"):
        merge_small_clusters(X, np.array([0, 0, 1, -1, 3, 3, 3, 3]), 2)
    with pytest.raises(ValueError, match=r"regroup\.min_cluster_size"):
        merge_small_clusters(X, labels, None)  # type: ignore[arg-type]


def test_merge_return_sums_match_centroids() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    raw = rng.integers(0, 8, size=60)
    labels, sums, counts = merge_small_clusters(X, raw, 9, return_sums=True)
    k = labels.max() + 1
    np.testing.assert_array_equal(counts, np.bincount(labels))
    assert (counts >= 9).all() and (np.diff(counts) <= 0).all()
    np.testing.assert_allclose(sums / counts[:, None], centroids(X, labels, k), rtol=1e-12)
