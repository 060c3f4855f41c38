"""k selection: sweep, scoring, choice rule, serialisation and bad input."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
    v_measure_score,
)
from threadpoolctl import threadpool_limits

from rnb.regroup.clusterers import FaissKMeans
from rnb.regroup.selection import SweepResult, SweepRow, expand_values, sweep

TRUE_K = 5


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(
        n_samples=300,
        centers=TRUE_K,
        n_features=8,
        cluster_std=1.0,
        center_box=(-20, 20),
        random_state=1,
    )
    return X.astype(np.float32), y


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # sklearn's OpenMP k-means is slower multi-threaded on tiny data (and on a busy box).
    with threadpool_limits(1):
        yield


def kmeans(v: int) -> KMeans:
    return KMeans(n_clusters=v, n_init=3, random_state=0)


@pytest.fixture(scope="module")
def km_labels(blobs: tuple[np.ndarray, np.ndarray]) -> dict[int, np.ndarray]:
    """sklearn k-means labels per k, computed once and shared by the metric tests."""
    return {v: kmeans(v).fit_predict(blobs[0]) for v in range(2, 9)}


class Fixed:
    """Fake clusterer: returns the same labels whatever the swept value."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        return self.labels.copy()


def test_expand_values() -> None:
    assert expand_values([3, 2, 8]) == [3, 2, 8]
    assert expand_values({"start": 2, "stop": 12, "step": 2}) == [2, 4, 6, 8, 10]
    assert expand_values({"start": 2, "stop": 5}) == [2, 3, 4]
    assert expand_values((4.0, 5)) == [4, 5]
    assert expand_values([0.01, 0.02, 0.5], n=1000) == [10, 20, 500]  # fractions of n
    assert expand_values([0.001, 0.002, 0.05], n=100) == [2, 5]  # at least 2, kept once
    with pytest.raises(ValueError, match=r"fractions in \(0, 1\)"):
        expand_values([0.5])  # a fraction needs n
    cfg = OmegaConf.create({"k": [3, 5], "r": {"start": 2, "stop": 10, "step": 4}})
    assert expand_values(cfg.k) == [3, 5] and expand_values(cfg.r) == [2, 6]  # Hydra nodes
    for bad in (
        [],
        [2, 2],
        [2.5],
        {"start": 2},
        {"start": 2, "stop": 9, "step": 0},
        {"start": 5, "stop": 2},
        {"start": 2, "stop": 5, "by": 1},
        "2,3",
        7,
        ["x"],
        [None],
    ):
        with pytest.raises(ValueError, match=r"regroup\.k_values"):
            expand_values(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["silhouette", "davies_bouldin", "calinski_harabasz"])
def test_sweep_picks_true_k(
    blobs: tuple[np.ndarray, np.ndarray], km_labels: dict[int, np.ndarray], metric: str
) -> None:
    X, y = blobs
    res = sweep(
        X, lambda v: Fixed(km_labels[v]), range(2, 9), metric=metric, silhouette_sample=200, seed=3
    )
    assert res.k == TRUE_K and res.chosen_row.value == TRUE_K
    assert v_measure_score(y, res.labels) == pytest.approx(1.0)
    np.testing.assert_allclose(
        res.centers, [X[res.labels == c].mean(0) for c in range(TRUE_K)], rtol=1e-5
    )
    # Each row's scores equal sklearn's on the same labels (brute-force reference).
    for row in res.rows:
        labels = km_labels[row.value]
        assert row.k_found == row.value and sum(row.sizes) == len(X)
        assert row.silhouette == pytest.approx(
            silhouette_score(X, labels, sample_size=200, random_state=3), rel=1e-5
        )
        assert row.davies_bouldin == pytest.approx(davies_bouldin_score(X, labels), rel=1e-5)
        assert row.calinski_harabasz == pytest.approx(calinski_harabasz_score(X, labels), rel=1e-5)
    ru = res.runner_up
    assert ru is not None and ru.value != TRUE_K


def test_sweep_faiss_cosine_and_range_spec(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    res = sweep(
        X,
        lambda v: FaissKMeans(n_clusters=v, nredo=5, seed=0),
        {"start": 2, "stop": 9},
        silhouette_sample=None,
        silhouette_metric="cosine",
    )
    assert [r.value for r in res.rows] == list(range(2, 9))
    row = res.chosen_row
    assert row.silhouette == pytest.approx(silhouette_score(X, res.labels, metric="cosine"))


def test_sweep_hdbscan_min_cluster_size(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    res = sweep(
        X,
        lambda v: HDBSCAN(min_cluster_size=v, copy=True),
        [5, 15, 30],
        param="min_cluster_size",
    )
    assert res.param == "min_cluster_size" and res.k == TRUE_K
    assert v_measure_score(y, res.labels) == pytest.approx(1.0)


def test_sweep_min_cluster_size_as_fraction_of_n(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs  # n = 300
    res = sweep(
        X, lambda v: HDBSCAN(min_cluster_size=v, copy=True), [0.05, 0.1], "min_cluster_size"
    )
    assert [r.value for r in res.rows] == [15, 30] and res.k == TRUE_K
    assert v_measure_score(y, res.labels) == pytest.approx(1.0)


def test_sweep_merges_small_clusters(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    res = sweep(X, kmeans, [12], min_cluster_size=40)
    assert res.k <= 12 and min(res.chosen_row.sizes) >= 40
    assert res.chosen_row.sizes == sorted(res.chosen_row.sizes, reverse=True)


def test_ties_go_to_smaller_value(
    blobs: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    X, y = blobs
    with caplog.at_level(logging.WARNING, logger="rnb.regroup.selection"):
        res = sweep(X, lambda v: Fixed(y), [6, 3, 4])  # identical clusterings for every value
    assert res.chosen_row.value == 3
    assert "edge of regroup.k_values" in caplog.text


def test_ranking_ties_smaller_k_then_value() -> None:
    def row(v: int, k: int, s: float) -> SweepRow:
        return SweepRow(v, k, s, -s, s, [1] * k, 0, 0.0)

    rows = [
        row(10, 6, 0.5),
        row(8, 4, 0.5),
        row(9, 4, 0.5),
        row(2, 2, float("nan")),
        row(3, 3, 0.1),
    ]
    res = SweepResult("min_cluster_size", "silhouette", rows, chosen=1)
    assert res.ranking() == [1, 2, 0, 4]
    assert res.runner_up is rows[2]
    res_db = SweepResult("min_cluster_size", "davies_bouldin", rows, chosen=1)
    assert res_db.ranking() == [1, 2, 0, 4]  # DB = -s here: lower is better


def test_undefined_row_is_skipped_with_warning(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs

    def factory(v: int) -> object:
        return Fixed(np.zeros(len(X), dtype=int)) if v == 7 else kmeans(v)

    with pytest.warns(UserWarning, match=r"n_clusters=7 is excluded from the choice: 1 cluster"):
        res = sweep(X, factory, [7, 5, 3])
    assert math.isnan(res.rows[0].silhouette) and res.k == TRUE_K
    assert "need >= 2" in res.rows[0].excluded and res.rows[1].excluded is None
    assert 0 not in res.ranking()


def test_all_undefined_raises_or_single_value(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    one = Fixed(np.zeros(len(X), dtype=int))
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            ValueError,
            match=r"regroup\.k_values: no value .*n_clusters=2: 1 cluster.*n_clusters=3: 1",
        ),
    ):
        sweep(X, lambda v: one, [2, 3])
    with pytest.warns(UserWarning):
        res = sweep(X, lambda v: one, [2])
    assert res.chosen == 0 and res.k == 1 and res.to_dict()["chosen"]["score"] is None


def test_identical_embeddings(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X = np.ones((40, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"identical.*regroup\.k_values"):
        sweep(X, kmeans, [2, 3])
    halves = Fixed(np.repeat([0, 1], 20))
    with pytest.warns(UserWarning, match="undefined"):
        res = sweep(X, lambda v: halves, [2])  # sklearn would say 0; we say undefined
    assert math.isnan(res.chosen_row.silhouette) and res.k == 2


def test_bad_input(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs
    with pytest.raises(ValueError, match=r"regroup\.k_values.*exceeds"):
        sweep(X[:10], kmeans, [5, 11])
    with pytest.raises(ValueError, match=r"regroup\.k_values: need values >= 2"):
        sweep(X, kmeans, [1, 3])
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sweep(bad, kmeans, [2, 3])
    with pytest.raises(ValueError, match=r"regroup\.metric"):
        sweep(X, kmeans, [2, 3], metric="inertia")
    with pytest.raises(ValueError, match=r"regroup\.silhouette_metric"):
        sweep(X, kmeans, [2, 3], silhouette_metric="manhattan")
    with pytest.raises(ValueError, match=r"regroup\.silhouette_sample"):
        sweep(X, kmeans, [2, 3], silhouette_sample=1)
    with pytest.raises(ValueError, match=r"regroup\.noise_policy"):
        sweep(X, kmeans, [2, 3], noise_policy="drop")


def test_json_roundtrip_and_plot(blobs: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    X, _ = blobs

    def factory(v: int) -> object:
        return Fixed(np.zeros(len(X), dtype=int)) if v == 2 else kmeans(v)

    with pytest.warns(UserWarning):
        res = sweep(X, factory, [2, 4, 5, 6])
    p = res.to_json(tmp_path / "sweep.json")
    d = json.loads(p.read_text())  # strict JSON: the undefined row has nulls, not NaN
    assert d["rows"][0]["silhouette"] is None and d["chosen"]["value"] == TRUE_K
    assert "1 cluster" in d["rows"][0]["excluded"] and d["rows"][1]["excluded"] is None
    back = SweepResult.from_json(p)
    assert back.chosen == res.chosen and back.k == res.k and back.labels is None
    assert [r.value for r in back.rows] == [2, 4, 5, 6]
    assert back.rows[2].silhouette == pytest.approx(res.rows[2].silhouette)
    assert back.rows[0].excluded == res.rows[0].excluded
    png = res.plot(tmp_path / "plots" / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_all_noise_value_is_excluded(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    """Issue 8 kind 7: HDBSCAN at a too-large min_cluster_size labels everything noise."""
    X, _ = blobs  # 300 points, 5 blobs of 60
    hdb = lambda v: HDBSCAN(min_cluster_size=v, copy=True)  # noqa: E731
    with pytest.warns(UserWarning, match=r"min_cluster_size=290 is excluded.*every point .*noise"):
        res = sweep(X, hdb, [10, 290], param="min_cluster_size")
    assert res.chosen_row.value == 10 and res.k == TRUE_K
    assert res.rows[1].excluded.startswith("every point labelled noise")
    assert res.rows[1].n_noise == len(X) and res.rows[1].k_found == 0
    assert res.ranking() == [0] and res.runner_up is None
    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        sweep(X, hdb, [290, 295], param="min_cluster_size")
    msg = str(err.value)
    assert "regroup.k_values" in msg
    assert "min_cluster_size=290: every point" in msg and "min_cluster_size=295: every" in msg


def test_clusterer_value_error_is_excluded(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    """A ValueError from fit_predict means "no clustering at this value"; others propagate."""
    X, _ = blobs

    class Refuses:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def fit_predict(self, X: np.ndarray) -> np.ndarray:
            raise self.exc

    bad = Refuses(ValueError("min_samples must be at most n"))
    with pytest.warns(UserWarning, match=r"n_clusters=9 is excluded.*Refuses\(n_clusters=9\)"):
        res = sweep(X, lambda v: bad if v == 9 else kmeans(v), [9, 5])
    assert res.k == TRUE_K and "min_samples must be at most n" in res.rows[0].excluded
    with pytest.raises(RuntimeError, match="boom"):
        sweep(X, lambda v: Refuses(RuntimeError("boom")), [3, 5])
