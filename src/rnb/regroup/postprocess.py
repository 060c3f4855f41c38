"""Post-processing of raw cluster labels: noise policy, tiny-cluster merge, centroids.

Every training example needs a domain (the sampler draws a domain, then an example from
it), so density-based clusterers' noise label ``-1`` must be resolved, and clusters too
small to sample from sensibly can be folded into their nearest neighbour.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from rnb.regroup.assign import nearest_centroid

__all__ = ["NOISE_POLICIES", "apply_noise_policy", "centroids", "merge_small_clusters"]

NOISE_POLICIES = ("nearest", "own_cluster")

# Rows per chunk when summing points into centroids (float64 copy of one chunk: ~64 MiB at d=384).
_CHUNK_ROWS = 1 << 15


def _check_labels(X: np.ndarray, labels: np.ndarray, allow_noise: bool) -> np.ndarray:
    labels = np.asarray(labels)
    if X.ndim != 2:
        raise ValueError(f"embedder: embeddings must be a 2-D [n, d] array, got shape {X.shape}")
    if labels.shape != (X.shape[0],):
        raise ValueError(
            f"clusterer: labels shape {labels.shape} does not match {X.shape[0]} embeddings"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"clusterer: labels must be integers, got dtype {labels.dtype}")
    lowest = -1 if allow_noise else 0
    if labels.size and labels.min() < lowest:
        what = "noise (-1) is allowed" if allow_noise else "apply regroup.noise_policy first"
        raise ValueError(f"clusterer: labels below {lowest} found; {what}")
    return labels.astype(np.int64, copy=False)


def _sums_counts(X: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster float64 sums and counts, ignoring labels < 0; one chunked pass over X."""
    d = X.shape[1]
    sums = np.zeros((k, d), dtype=np.float64)
    keep = labels >= 0
    counts = np.bincount(labels[keep], minlength=k).astype(np.int64)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        lab = labels[start : start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        if rows.size == 0:
            continue
        # A sparse one-hot [k, chunk] times the chunk sums every cluster in one BLAS-like pass,
        # instead of k boolean-mask gathers over the whole matrix.
        onehot = sp.csr_matrix(
            (np.ones(rows.size), (lab[rows], rows)), shape=(k, lab.size), dtype=np.float64
        )
        sums += onehot @ np.asarray(X[start : start + _CHUNK_ROWS], dtype=np.float64)
    return sums, counts


def centroids(X: np.ndarray, labels: np.ndarray, k: int | None = None) -> np.ndarray:
    """Mean embedding of each cluster.

    Args:
        X: ``[n, d]`` embeddings.
        labels: ``[n]`` integer labels; ``-1`` (noise) rows are ignored.
        k: number of clusters; default ``labels.max() + 1``.

    Returns:
        float64 ``[k, d]``; the row of a cluster with no members is NaN.
    """
    X = np.asarray(X)
    labels = _check_labels(X, labels, allow_noise=True)
    if k is None:
        k = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= k:
        raise ValueError(f"clusterer: label {int(labels.max())} out of range for k={k}")
    sums, counts = _sums_counts(X, labels, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def apply_noise_policy(X: np.ndarray, labels: np.ndarray, policy: str = "nearest") -> np.ndarray:
    """Give every noise point (label ``-1``) a real cluster.

    Policies:
        * ``"nearest"`` (default): each noise point joins the cluster whose centroid
          (mean of that cluster's non-noise members) is nearest in euclidean distance.
        * ``"own_cluster"``: all noise points together form one extra cluster, with id
          ``max_label + 1``.
        * ``"drop"`` is rejected: every training example needs a domain.

    Args:
        X: ``[n, d]`` embeddings.
        labels: ``[n]`` integer labels, ``-1`` = noise.
        policy: one of :data:`NOISE_POLICIES`.

    Returns:
        New int64 label array without ``-1`` (the input is not modified).

    Raises:
        ValueError: unknown policy, ``"drop"``, or ``"nearest"`` when every point is noise.
    """
    X = np.asarray(X)
    labels = _check_labels(X, labels, allow_noise=True).copy()
    if policy == "drop":
        raise ValueError(
            "regroup.noise_policy: 'drop' is not allowed for training data (every example "
            "needs a domain); use 'nearest' or 'own_cluster'"
        )
    if policy not in NOISE_POLICIES:
        raise ValueError(f"regroup.noise_policy: unknown policy {policy!r}; use {NOISE_POLICIES}")
    noise = labels < 0
    if not noise.any():
        return labels
    if policy == "own_cluster":
        labels[noise] = int(labels.max()) + 1 if (~noise).any() else 0
        return labels
    if noise.all():
        raise ValueError(
            "regroup.noise_policy: the clusterer labelled every point as noise, so there is "
            "no cluster to join; lower the clusterer's min_cluster_size or use 'own_cluster'"
        )
    C = centroids(X, labels)  # noise rows ignored; empty ids get NaN and are never chosen
    labels[noise], _ = nearest_centroid(X[noise], C)
    return labels


def merge_small_clusters(
    X: np.ndarray, labels: np.ndarray, min_cluster_size: int, return_sums: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge clusters smaller than ``min_cluster_size`` into their nearest neighbour.

    Rule (deterministic):

    1. Empty cluster ids vanish.
    2. While more than one cluster is left and some cluster has fewer than
       ``min_cluster_size`` members: take the smallest such cluster (ties: lower id),
       merge it into the other cluster whose centroid is nearest (euclidean) to its
       centroid (ties: lower id); the merged cluster keeps the target's id and its
       centroid is recomputed as the mean of all its members.
    3. Relabel to contiguous ``0..k-1`` by decreasing size (ties: lower old id), so
       cluster 0 is always the largest.

    Args:
        X: ``[n, d]`` embeddings.
        labels: ``[n]`` labels ``>= 0`` (apply the noise policy first).
        min_cluster_size: threshold; ``<= 1`` only relabels.
        return_sums: also return the per-cluster float64 sums ``[k, d]`` and counts
            ``[k]`` of the new labels (a by-product, so callers need no extra pass over X).

    Returns:
        New int64 label array in ``0..k-1`` (and ``sums, counts`` if ``return_sums``).
    """
    X = np.asarray(X)
    labels = _check_labels(X, labels, allow_noise=False)
    if isinstance(min_cluster_size, bool) or not isinstance(min_cluster_size, (int, np.integer)):
        raise ValueError(f"regroup.min_cluster_size: need an integer, got {min_cluster_size!r}")
    if labels.size == 0:
        empty = (labels.copy(), np.zeros((0, X.shape[1])), np.zeros(0, np.int64))
        return empty if return_sums else empty[0]
    k = int(labels.max()) + 1
    sums, counts = _sums_counts(X, labels, k)
    target = np.arange(k)  # target[c] = id that old cluster c ended up in
    alive = counts > 0
    while alive.sum() > 1:
        small = np.flatnonzero(alive & (counts < min_cluster_size))
        if small.size == 0:
            break
        src = int(small[np.argmin(counts[small])])  # argmin: first (lower id) on ties
        others = np.flatnonzero(alive)
        others = others[others != src]
        c_src = sums[src] / counts[src]
        c_oth = sums[others] / counts[others, None]
        dst = int(others[np.argmin(((c_oth - c_src) ** 2).sum(axis=1))])
        # Summing sums/counts is exactly the recomputed mean of the merged members.
        sums[dst] += sums[src]
        counts[dst] += counts[src]
        sums[src], counts[src], alive[src] = 0.0, 0, False
        target[target == src] = dst
    survivors = np.flatnonzero(alive)
    order = survivors[np.lexsort((survivors, -counts[survivors]))]
    new_id = np.full(k, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    out = new_id[target[labels]]
    return (out, sums[order], counts[order]) if return_sums else out
