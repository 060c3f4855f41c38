"""k selection: sweep, scoring, choice rule, serialisation and bad input."""

from __future__ import annotations

import json
import logging
import math
import re
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


# ---------------------------------------------------------------- pinned by mutation testing
def _line(*xs: float) -> np.ndarray:
    """Points on the x axis, as an ``[n, 2]`` float64 array."""
    return np.array([[x, 0.0] for x in xs])


_PAIRS = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    "X",
    [
        _line(-1, 1, 9, 11),  # mean distance to the centroid exactly 1 in both clusters
        _line(-0.5, 0.5, 9.5, 10.5),  # within-cluster sum of squares exactly 1
        _line(0, 0, 5, 5),  # every cluster one repeated point: DB 0, CH 1 (sklearn's values)
    ],
)
def test_db_and_ch_match_sklearn_on_exact_edge_values(X: np.ndarray) -> None:
    row = sweep(X, lambda v: Fixed(_PAIRS), [2]).chosen_row
    assert row.excluded is None
    assert row.davies_bouldin == pytest.approx(davies_bouldin_score(X, _PAIRS), rel=1e-12)
    assert row.calinski_harabasz == pytest.approx(calinski_harabasz_score(X, _PAIRS), rel=1e-12)


def test_k_bounds_n_minus_one_is_scored_n_is_not() -> None:
    X = _line(0, 1, 5, 11)  # n = 4
    k3, k4 = np.array([0, 0, 1, 2]), np.arange(4)
    with pytest.warns(UserWarning, match=r"n_clusters=4 is excluded"):
        res = sweep(X, lambda v: Fixed(k3 if v == 3 else k4), [3, 4])
    assert res.chosen_row.value == 3 and res.rows[0].excluded is None
    assert res.rows[0].silhouette == pytest.approx(silhouette_score(X, k3))
    assert res.rows[1].excluded == "every point is its own cluster (k=4, n=4)"
    assert all(
        math.isnan(res.rows[1].score(m))
        for m in ("silhouette", "davies_bouldin", "calinski_harabasz")
    )
    assert res.rows[1].metric_seconds == {}


def test_unscorable_silhouette_sample_excludes_only_that_metric() -> None:
    X = np.concatenate([np.random.default_rng(0).normal(size=(8, 2)), _line(10, 11)])
    labels = np.array([0] * 8 + [1, 1])
    # seed 2 samples points 4, 1 and 5: all in cluster 0, so the silhouette is undefined
    with pytest.warns(UserWarning, match="silhouette is undefined"):
        res = sweep(X, lambda v: Fixed(labels), [2], silhouette_sample=3, seed=2)
    row = res.chosen_row
    assert (
        row.excluded
        == "silhouette is undefined (e.g. the silhouette sample holds a single cluster)"
    )
    assert math.isnan(row.silhouette) and row.davies_bouldin == pytest.approx(
        davies_bouldin_score(X, labels)
    )
    db = sweep(X, lambda v: Fixed(labels), [2], "n_clusters", "davies_bouldin", 3, seed=2)
    assert db.chosen_row.excluded is None and res.seed == 2


def test_row_timings_and_log_lines(
    blobs: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    X, y = blobs
    one = np.zeros(len(X), dtype=int)
    with caplog.at_level(logging.INFO, logger="rnb.regroup.selection"), pytest.warns(UserWarning):
        res = sweep(X, lambda v: Fixed(y if v == 5 else one), [5, 2])
    row = res.rows[0]
    assert 0.0 <= row.fit_seconds < 60.0
    assert set(row.metric_seconds) == {"silhouette", "davies_bouldin", "calinski_harabasz"}
    assert all(0.0 <= s < 60.0 for s in row.metric_seconds.values())
    assert row.metric_seconds["calinski_harabasz"] == 0.0  # counted under davies_bouldin
    assert res.rows[1].n_noise == 0 and res.rows[1].metric_seconds == {}
    lines = [r.getMessage() for r in caplog.records if r.message.startswith("sweep n_clusters")]
    assert len(lines) == 2
    assert re.fullmatch(r"sweep n_clusters=5: k=5 silhouette=0\.\d+ \(fit \d+\.\d\ds\)", lines[0])
    assert re.fullmatch(
        r"sweep n_clusters=2: k=1 silhouette=nan \(fit \d+\.\d\ds\) excluded: 1 cluster after "
        r"the noise policy and the tiny-cluster merge \(regroup\.noise_policy, "
        r"regroup\.min_cluster_size\); need >= 2",
        lines[1],
    )


def test_sweep_defaults(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    labels = y.copy()
    labels[0] = TRUE_K  # a singleton cluster: kept, since min_cluster_size defaults to 1
    res = sweep(X, lambda v: Fixed(labels), [6])
    assert res.k == 6 and sorted(res.chosen_row.sizes)[0] == 1
    assert res.silhouette_sample == 10000 and res.seed == 0


def test_value_error_row_records_no_noise(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = blobs

    class Refuses:
        def fit_predict(self, X: np.ndarray) -> np.ndarray:
            raise ValueError("no")

    with pytest.warns(UserWarning):
        res = sweep(X, lambda v: Refuses() if v == 9 else kmeans(v), [9, 5])
    assert res.rows[0].n_noise == 0 and res.rows[0].k_found == 0 and res.rows[0].sizes == []


def test_identical_and_near_constant_embeddings() -> None:
    # Every row the same, columns different: still no variation between examples.
    X = np.tile([0.0, 1.0, 2.0, 3.0], (40, 1))
    with pytest.raises(ValueError) as err:
        sweep(X, kmeans, [2, 3])
    assert str(err.value) == (
        "embedder: all 40 embeddings are identical, so no clustering can be scored; "
        "check data.text_field / the embedder, or give a single value in regroup.k_values"
    )
    with pytest.warns(UserWarning):
        res = sweep(X, lambda v: Fixed(np.repeat([0, 1], 20)), [2])
    assert res.chosen_row.excluded == "all embeddings are identical, so every score is undefined"
    small = _line(0, 0.01, 0.3, 0.31)  # a range far below 1 is still variation
    assert sweep(small, lambda v: Fixed(_PAIRS), [2, 3]).chosen_row.value == 2


def test_validation_messages() -> None:
    X = _line(0, 1, 5, 6)
    cases = [
        (np.zeros(5), [2], "embedder: need a non-empty 2-D [n, d] embedding array, got (5,)"),
        (np.zeros(()), [2], "embedder: need a non-empty 2-D [n, d] embedding array, got ()"),
        (np.zeros((0, 3)), [2], "embedder: need a non-empty 2-D [n, d] embedding array, got (0, 3)"),
        (np.zeros((1, 3)), [2], "regroup.k_values: value 2 exceeds the number of training examples n=1"),
        (np.array([[np.inf, 0.0], [0.0, 1.0]]), [2], "embedder: embeddings contain NaN/inf; check the embedder (or the precomputed file)"),
    ]  # fmt: skip
    for data, values, message in cases:
        with pytest.raises(ValueError) as err:
            sweep(data, kmeans, values)
        assert str(err.value) == message
    # a sample of 2 can never be scored: refused up front, 3 is the smallest accepted
    with pytest.raises(ValueError) as err:
        sweep(X, kmeans, [2], silhouette_sample=2)
    assert str(err.value) == "regroup.silhouette_sample: need >= 3 or null, got 2"
    assert sweep(X, kmeans, [2], silhouette_sample=3).silhouette_sample == 3


def test_sweep_messages_warnings_and_recorded_settings(
    blobs: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    X, y = blobs
    with pytest.raises(ValueError) as err:
        expand_values({"start": "a", "stop": 5})
    assert str(err.value) == "regroup.k_values: non-integer range spec {'start': 'a', 'stop': 5}"
    one = Fixed(np.zeros(len(X), dtype=int))
    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        sweep(X, lambda v: one, [2, 3])
    assert str(err.value) == (
        "regroup.k_values: no value in [2, 3] gives a clustering that regroup.metric=silhouette "
        "can score (n_clusters=2: 1 cluster after the noise policy and the tiny-cluster merge "
        "(regroup.noise_policy, regroup.min_cluster_size); need >= 2; n_clusters=3: 1 cluster "
        "after the noise policy and the tiny-cluster merge (regroup.noise_policy, "
        "regroup.min_cluster_size); need >= 2); change regroup.k_values (or the clusterer's "
        "other parameters, e.g. min_samples)"
    )
    with caplog.at_level(logging.WARNING, logger="rnb.regroup.selection"):
        middle = sweep(X, lambda v: Fixed(y) if v == TRUE_K else kmeans(v), [4, 5, 6])
        assert middle.chosen_row.value == TRUE_K and not caplog.messages  # not at an edge
        sweep(X, lambda v: Fixed(y), [6, 3, 4], silhouette_metric="cosine")
    assert caplog.messages == [  # rnb.regroup.advice: edge (and flat: identical clusterings)
        "sweep: The chosen n_clusters=3 is at the edge of regroup.k_values [3, 4, 6] (its "
        "smallest value): the silhouette may keep rising beyond it; the silhouette scores are "
        "nearly flat (spread 0 < 0.02), so the metric barely distinguishes the values. Try "
        "regroup.k_values=[2,3] (or train a few values and compare their eval loss: a k sweep)."
    ]
    cos = sweep(X, lambda v: Fixed(y), [5], silhouette_metric="cosine", silhouette_sample=None)
    assert cos.silhouette_metric == "cosine" and cos.silhouette_sample is None
    assert cos.to_dict()["silhouette_metric"] == "cosine"


def test_expand_values_rejects_bools_and_keeps_zero_an_integer() -> None:
    with pytest.raises(ValueError, match=r"regroup\.k_values: values must be integers"):
        expand_values([True, 3])  # YAML `true` is no cluster count
    assert expand_values([0, 3], n=100) == [0, 3]  # 0 is not a fraction (sweep rejects it)
