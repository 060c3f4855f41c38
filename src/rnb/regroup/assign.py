"""Assign evaluation examples to the nearest *training* centroid and flag outliers.

R&B (method.md, Stage 1 step 3) clusters only the training embeddings; every evaluation
example then joins the cluster whose training centroid is nearest. Clustering the eval
data instead could create clusters with no training data to sample from.

Out-of-distribution eval points still get the nearest cluster (the method requires a
domain for every eval point); they are merely *flagged*, so the report can say how
many eval points lie farther from their centroid than almost all training points do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Assignment",
    "all_finite",
    "assign_to_centroids",
    "distance_to_own_centroid",
    "nearest_centroid",
]

# Bytes of float64 scratch per chunk: a chunk holds rows x max(d, k) doubles. 64 MiB keeps
# peak memory flat for 1M x 384 inputs while leaving each BLAS call large enough to be fast.
_CHUNK_BYTES = 64 * 2**20


def _auto_chunk(d: int, k: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * max(d, k, 1)))


def nearest_centroid(
    X: np.ndarray, centroids: np.ndarray, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (euclidean) of every row of ``X``, computed in chunks.

    Uses ``|x|^2 - 2 x.c + |c|^2`` in float64 per chunk, so memory stays bounded
    (``chunk_size x k`` distances at a time) even for millions of rows. Ties go to the
    lower centroid id (``argmin`` picks the first minimum). Centroid rows that are NaN
    (e.g. empty clusters) are never chosen.

    Args:
        X: ``[n, d]`` points.
        centroids: ``[k, d]`` centroids, ``k >= 1``.
        chunk_size: rows per chunk; ``None`` sizes chunks to ~64 MiB of scratch.

    Returns:
        ``(labels, distances)``: ``labels`` int64 ``[n]`` in ``0..k-1``; ``distances``
        float64 ``[n]``, the euclidean distance to that centroid.
    """
    C = np.asarray(centroids, dtype=np.float64)
    n, d = X.shape
    k = C.shape[0]
    valid = np.all(np.isfinite(C), axis=1)
    if not valid.any():
        raise ValueError("centroids: need at least one finite centroid row")
    C_safe = np.where(valid[:, None], C, 0.0)
    c_sq = np.einsum("ij,ij->i", C_safe, C_safe)
    c_sq[~valid] = np.inf  # an empty cluster can never be the nearest
    step = chunk_size or _auto_chunk(d, k)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        xb = np.asarray(X[start : start + step], dtype=np.float64)
        # |x|^2 is constant per row, so the argmin only needs -2 x.c + |c|^2.
        partial = c_sq[None, :] - 2.0 * (xb @ C_safe.T)
        idx = np.argmin(partial, axis=1)
        labels[start : start + step] = idx
        sq = np.einsum("ij,ij->i", xb, xb) + partial[np.arange(len(idx)), idx]
        # Cancellation can make tiny squared distances slightly negative.
        dist[start : start + step] = np.sqrt(np.maximum(sq, 0.0))
    return labels, dist


def distance_to_own_centroid(
    X: np.ndarray, labels: np.ndarray, centroids: np.ndarray, chunk_size: int | None = None
) -> np.ndarray:
    """Euclidean distance of each row of ``X`` to ``centroids[labels[i]]`` (chunked).

    Arithmetic runs in float32 when ``X`` is float32 (relative error ~1e-7, about 4x faster
    than upcasting 1M x 384 rows) and in float64 otherwise; the result is float64.
    """
    n, d = X.shape
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    C = np.asarray(centroids, dtype=dtype)
    step = chunk_size or _auto_chunk(d, 1)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, step):
        diff = np.asarray(X[start : start + step], dtype=dtype) - C[labels[start : start + step]]
        out[start : start + step] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def all_finite(X: np.ndarray) -> bool:
    """True when ``X`` is numeric and holds no NaN/inf.

    A float64 sum is finite exactly when every element is (for float32/16 data the sum
    cannot overflow), and it avoids the n x d boolean temporary of ``np.isfinite(X).all()``
    (0.4 s instead of 1.8 s at 1M x 384). Only a non-finite sum triggers the exact check.
    """
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.number):
        return False
    if X.size == 0 or np.issubdtype(X.dtype, np.integer):
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        total = X.sum(dtype=np.float64)
    if np.isfinite(total):
        return True
    return bool(np.isfinite(X).all())  # float64 input may overflow the sum legitimately


@dataclass
class Assignment:
    """Result of :func:`assign_to_centroids`.

    Attributes:
        labels: int64 ``[n_eval]`` cluster id of each eval point (nearest training centroid).
        distances: float64 ``[n_eval]`` euclidean distance to that centroid.
        ood_mask: bool ``[n_eval]``; True where the distance exceeds the cluster's radius.
            All False when no training data was given (no radius to compare against).
        radius: float64 ``[k]`` per-cluster radius (the ``ood_quantile`` quantile of the
            training points' distances to their own centroid; ``inf`` for a cluster with
            no training points), or ``None`` when no training data was given.
        ood_quantile: the quantile used for ``radius``.
    """

    labels: np.ndarray
    distances: np.ndarray
    ood_mask: np.ndarray
    radius: np.ndarray | None
    ood_quantile: float = 0.99

    @property
    def n_ood(self) -> int:
        """Number of eval points flagged out-of-distribution."""
        return int(self.ood_mask.sum())


def _check_matrix(X: np.ndarray, name: str, key: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{key}: {name} must be a 2-D [n, d] array, got shape {X.shape}")
    if not all_finite(X):
        raise ValueError(f"{key}: {name} contains NaN/inf or non-numeric values")
    return X


def assign_to_centroids(
    X_eval: np.ndarray,
    centroids: np.ndarray,
    train_X: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    ood_quantile: float = 0.99,
    chunk_size: int | None = None,
) -> Assignment:
    """Assign each eval embedding to its nearest training centroid; flag far-away points.

    Args:
        X_eval: ``[n_eval, d]`` eval embeddings (same embedder as training).
        centroids: ``[k, d]`` training centroids (see ``postprocess.centroids``).
        train_X: optional ``[n_train, d]`` training embeddings, used for the OOD radius.
        train_labels: optional ``[n_train]`` training labels in ``0..k-1`` (with ``train_X``).
        ood_quantile: quantile in ``(0, 1]`` of training distances that defines a cluster's
            radius; eval points farther than their cluster's radius are flagged OOD.
        chunk_size: rows per chunk for the distance computations (``None`` = automatic).

    Returns:
        An :class:`Assignment`.

    Raises:
        ValueError: empty eval set, mismatched dimensions, NaN inputs, bad quantile, or
            training labels out of range.
    """
    X_eval = np.asarray(X_eval)
    if X_eval.size == 0 or X_eval.shape[0] == 0:
        raise ValueError(
            "data.eval_path / data.eval_fraction: the evaluation set is empty; "
            "provide an eval file or a positive eval fraction"
        )
    X_eval = _check_matrix(X_eval, "X_eval", "embedder")
    C = _check_matrix(np.asarray(centroids), "centroids", "regroup")
    if C.shape[0] == 0:
        raise ValueError("regroup: need at least one centroid, got 0")
    if C.shape[1] != X_eval.shape[1]:
        raise ValueError(
            f"embedder: eval embeddings have d={X_eval.shape[1]} but centroids have "
            f"d={C.shape[1]}; embed train and eval with the same embedder"
        )
    if not (0.0 < float(ood_quantile) <= 1.0):
        raise ValueError(f"regroup.ood_quantile: need 0 < q <= 1, got {ood_quantile}")
    labels, dist = nearest_centroid(X_eval, C, chunk_size)

    if (train_X is None) != (train_labels is None):
        raise ValueError("regroup: pass train_X and train_labels together (or neither)")
    if train_X is None:
        return Assignment(labels, dist, np.zeros(len(labels), bool), None, float(ood_quantile))

    train_X = _check_matrix(train_X, "train_X", "embedder")
    train_labels = np.asarray(train_labels)
    if train_X.shape[1] != C.shape[1] or train_labels.shape != (train_X.shape[0],):
        raise ValueError(
            f"regroup: train_X {train_X.shape} / train_labels {train_labels.shape} do not "
            f"match centroids {C.shape}"
        )
    k = C.shape[0]
    if train_labels.size and (train_labels.min() < 0 or train_labels.max() >= k):
        raise ValueError(
            "regroup.noise_policy: training labels must lie in 0..k-1 (apply the noise "
            "policy before assigning eval data)"
        )
    own = distance_to_own_centroid(train_X, train_labels, C, chunk_size)
    radius = np.full(k, np.inf)
    order = np.argsort(train_labels, kind="stable")
    bounds = np.searchsorted(train_labels[order], np.arange(k + 1))
    for c in range(k):
        members = own[order[bounds[c] : bounds[c + 1]]]
        if members.size:
            radius[c] = np.quantile(members, ood_quantile)
    ood = dist > radius[labels]
    return Assignment(labels, dist, ood, radius, float(ood_quantile))
