"""The label-free scores of one clustering (silhouette, Davies-Bouldin, Calinski-Harabasz).

Scored the way sklearn defines them, at the cost a 1M-point sweep can afford: a seeded
silhouette sample, and DB/CH from the per-cluster sums in one pass over the points.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.metrics import silhouette_score

from rnb.regroup.assign import distance_to_own_centroid
from rnb.regroup.sweep_result import METRICS

__all__ = ["score_row"]


def _silhouette(
    X: np.ndarray, labels: np.ndarray, sample: int | None, metric: str, seed: int
) -> float:
    n = X.shape[0]
    if sample and sample < n:
        # The very sample sklearn's ``sample_size``/``random_state`` path draws; drawing it
        # here skips sklearn's finiteness check over all of X (~2 s per k at 1M x 384).
        idx = np.random.RandomState(seed).permutation(n)[:sample]
        X, labels = X[idx], labels[idx]
    return float(silhouette_score(X, labels, metric=metric))


def _db_ch(
    X: np.ndarray, labels: np.ndarray, sums: np.ndarray, counts: np.ndarray
) -> tuple[float, float]:
    """Davies-Bouldin and Calinski-Harabasz, as sklearn defines them, in one pass over X.

    sklearn's versions gather every cluster and take ~15-25 s per k at 1M x 384 on 2 cores;
    here the per-cluster sums from the merge step give the centroids and a single chunked
    pass gives each point's distance to its centroid, which both scores need.
    """
    n, k = X.shape[0], len(counts)
    C = sums / counts[:, None]
    dist = distance_to_own_centroid(X, labels, C)
    intra = np.bincount(labels, weights=dist, minlength=k) / counts
    between = cdist(C, C)
    if np.allclose(intra, 0) or np.allclose(between, 0):
        db = 0.0
    else:
        between[between == 0] = np.inf
        db = float(np.mean(np.max((intra[:, None] + intra[None, :]) / between, axis=1)))
    within = float(np.dot(dist, dist))
    mean = sums.sum(axis=0) / n
    extra = float(np.sum(counts * ((C - mean) ** 2).sum(axis=1)))
    ch = 1.0 if within == 0.0 else extra * (n - k) / (within * (k - 1.0))
    return db, ch


def score_row(
    X: np.ndarray,
    labels: np.ndarray,
    sums: np.ndarray,
    counts: np.ndarray,
    silhouette_sample: int | None,
    silhouette_metric: str,
    seed: int,
    degenerate: bool,
) -> tuple[dict[str, float], dict[str, float]]:
    """All three scores (NaN where undefined) and the seconds they took.

    The shared O(n d) pass of DB and CH is counted under ``davies_bouldin``.
    """
    scores = dict.fromkeys(METRICS, float("nan"))
    seconds: dict[str, float] = {}
    # Every metric needs 2 <= k <= n - 1. Identical points: sklearn would report 0, but no
    # score is meaningful, so they stay NaN.
    if degenerate or not 2 <= len(counts) <= X.shape[0] - 1:
        return scores, seconds
    t0 = time.perf_counter()
    with contextlib.suppress(ValueError):  # the silhouette sample may hold a single cluster
        scores["silhouette"] = _silhouette(X, labels, silhouette_sample, silhouette_metric, seed)
    t1 = time.perf_counter()
    scores["davies_bouldin"], scores["calinski_harabasz"] = _db_ch(X, labels, sums, counts)
    t2 = time.perf_counter()
    seconds.update(silhouette=t1 - t0, davies_bouldin=t2 - t1, calinski_harabasz=0.0)
    return scores, seconds
