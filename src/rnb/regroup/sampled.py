"""Fit on a seeded sample, then label every point in streaming chunks (``regroup.fit_sample``).

At 10⁶–10⁸ training examples the k sweep cannot hold (or afford) every point per fit.
With ``regroup.fit_sample = m`` the sweep (clusterer fit, noise policy, tiny-cluster merge
and every score) runs on a seeded uniform sample of ``m`` rows, and then **every** row is
labelled by the chosen fitted clusterer, chunk by chunk, so the full matrix may be a
memory-mapped file larger than RAM:

* centroid clusterers (sklearn ``KMeans`` / ``MiniBatchKMeans``, :class:`FaissKMeans`):
  nearest centroid by an exact faiss ``IndexFlatL2`` search per chunk (for spherical
  faiss k-means the centroids are unit-norm, so L2 order equals cosine order);
* other clusterers with ``predict`` (``BisectingKMeans``, ``Birch``,
  ``GaussianMixture``, ``MeanShift``, ``AffinityPropagation``): their own ``predict``
  per chunk (the sklearn fallback);
* clusterers without a predict path (sklearn ``HDBSCAN``, ``DBSCAN``, ``OPTICS``,
  agglomerative / spectral clustering, ``hdbscan.HDBSCAN``) are refused up front
  (:func:`check_streamable`), since labelling unseen points would mean inventing a rule
  the clusterer does not have.

A raw cluster id maps to the post-processed domain that the majority of the sample's
points with that raw id received (exact for k-means: the merge only joins whole raw
clusters); a raw id the sample never produced, or noise under ``noise_policy=nearest``,
goes to the nearest post-processed centroid, as noise does in the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnb.regroup import selection
from rnb.regroup.assign import nearest_centroid
from rnb.regroup.selection import SweepResult

log = logging.getLogger(__name__)

__all__ = [
    "assign_streaming",
    "check_fit_sample",
    "check_streamable",
    "reduce_streaming",
    "sample_indices",
    "sample_record",
    "sweep_sampled",
]

#: Rows read from the (memory-mapped) matrix per streaming step: 65536 x 384 float32 is
#: 96 MiB of scratch, large enough that faiss / BLAS calls dominate the Python loop.
DEFAULT_CHUNK_ROWS = 1 << 16


def check_fit_sample(fit_sample: Any) -> int | None:
    """Validate ``regroup.fit_sample`` (an int >= 2, or None for 'fit on every point');
    an integral float (``1e6``) is taken as its int.

    Raises:
        ValueError: not an integer, or smaller than 2.
    """
    if fit_sample is None:
        return None
    if isinstance(fit_sample, float) and fit_sample.is_integer():
        fit_sample = int(fit_sample)  # a command line's 1e6 arrives as a float
    if isinstance(fit_sample, bool) or not isinstance(fit_sample, (int, np.integer)):
        raise ValueError(f"regroup.fit_sample: need an integer or null, got {fit_sample!r}")
    if int(fit_sample) < 2:
        raise ValueError(f"regroup.fit_sample: need >= 2 points or null, got {fit_sample}")
    return int(fit_sample)


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``size`` distinct row ids out of ``n``, sorted.

    Sorted so that reading the rows of a memory-mapped matrix walks the file forwards.
    The same ``(n, size, seed)`` always gives the same sample.

    Returns:
        int64 ``[min(size, n)]``; all of ``0..n-1`` when ``size >= n``.
    """
    if size >= n:
        return np.arange(n, dtype=np.int64)
    idx = np.random.default_rng(seed).choice(n, size=size, replace=False)
    return np.sort(idx).astype(np.int64)


def reduce_streaming(
    reducer: Any, X: np.ndarray, sample: np.ndarray, path: Path, chunk_size: int
) -> np.ndarray:
    """Fit ``reducer`` on ``X[sample]`` and reduce every row of ``X`` chunk by chunk.

    Args:
        reducer: ``fit_transform`` / ``transform`` (``regroup/reducer=...``).
        X: ``[n, d]`` embeddings (memory-mapped).
        sample: sorted row ids to fit on.
        path: ``.npy`` file that receives the reduced float32 ``[n, r]`` rows.
        chunk_size: rows transformed per step.

    Returns:
        ``X`` itself for an identity reducer (no copy, any dtype), else the memory map of
        ``path``; the sample's rows hold the fit's own output (UMAP's ``transform`` of a
        training point differs from its fitted coordinates).
    """
    Xs = np.asarray(reducer.fit_transform(np.asarray(X[sample], dtype=np.float32)), np.float32)
    if getattr(reducer, "is_identity", False):
        return X
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(X.shape[0], Xs.shape[1]))  # fmt: skip
    for lo in range(0, X.shape[0], chunk_size):
        out[lo : lo + chunk_size] = reducer.transform(np.asarray(X[lo : lo + chunk_size], np.float32))  # fmt: skip
    out[sample] = Xs
    out.flush()
    return out


def sample_record(
    sample: np.ndarray | None, requested: int | None, n: int, seed: int, streaming: str | None
) -> dict[str, Any] | None:
    """The ``fit_sample`` entry of ``regroup.json``.

    ``None`` without ``regroup.fit_sample``; a request of ``m >= n`` points fits every point
    and is recorded as such (``size == n_train``, ``assignment: "every point fitted"``), so
    the report shows that the requested sample did not apply.
    """
    if requested is None:
        return None
    if sample is None:
        log.info("regroup.fit_sample=%d >= %d training points: fitting on every point", requested, n)  # fmt: skip
        return {"requested": requested, "size": n, "n_train": n, "seed": seed, "assignment": "every point fitted"}  # fmt: skip
    how = "nearest centroid (faiss)" if streaming == "centroids" else "predict"
    return {"requested": requested, "size": len(sample), "n_train": n, "seed": seed, "assignment": how}  # fmt: skip


def _uses_centroids(clusterer: Any) -> bool:
    """True when ``predict`` is 'nearest of ``cluster_centers_``' (a flat k-means)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if getattr(clusterer, "assigns_nearest_centroid", False):  # FaissKMeans
        return True
    return isinstance(clusterer, (KMeans, MiniBatchKMeans))


def check_streamable(clusterer_factory: Callable[..., Any]) -> str:
    """How the clusterer labels unseen points: ``"centroids"`` or ``"predict"``.

    Args:
        clusterer_factory: the configured clusterer (a class or ``functools.partial``).

    Raises:
        ValueError: the clusterer has no predict path; the message names
            ``regroup.fit_sample`` and the clusterers that do.
    """
    cls = getattr(clusterer_factory, "func", clusterer_factory)
    if getattr(cls, "assigns_nearest_centroid", False):
        return "centroids"
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if isinstance(cls, type) and issubclass(cls, (KMeans, MiniBatchKMeans)):
        return "centroids"
    if callable(getattr(cls, "predict", None)):
        return "predict"
    name = getattr(cls, "__qualname__", repr(cls))
    raise ValueError(
        f"regroup.fit_sample: {getattr(cls, '__module__', '')}.{name} cannot label points "
        "outside the sample it was fitted on (it has no predict); set regroup.fit_sample=null "
        "to cluster every point, or pick a clusterer that can: regroup/clusterer=faiss|kmeans|"
        "minibatch (nearest centroid), or any clusterer with predict (e.g. sklearn Birch, "
        "GaussianMixture, BisectingKMeans)"
    )


def _raw_labeller(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``float32 [b, d] -> int64 [b]`` raw labels of the fitted ``model``."""
    if _uses_centroids(model):
        import faiss

        C = np.ascontiguousarray(model.cluster_centers_, dtype=np.float32)
        index = faiss.IndexFlatL2(C.shape[1])  # exact search: same labels as predict
        index.add(C)
        return lambda xb: index.search(xb, 1)[1][:, 0].astype(np.int64)
    return lambda xb: np.asarray(model.predict(xb)).astype(np.int64)


def _majority_map(raw: np.ndarray, final: np.ndarray, noise_policy: str) -> dict[int, int]:
    """Raw cluster id -> the final domain most of its sample points got (ties: lower id).

    Noise (-1) is mapped only under ``own_cluster`` (it then forms one domain); under
    ``nearest`` each noise point goes to its own nearest centroid instead.
    """
    pairs, counts = np.unique(np.stack([raw, final]), axis=1, return_counts=True)
    out: dict[int, int] = {}
    best: dict[int, int] = {}
    for (r, f), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if r < 0 and noise_policy != "own_cluster":
            continue
        if c > best.get(r, 0):  # pairs are sorted by (raw, final): ties keep the lower id
            out[r], best[r] = f, c
    return out


def assign_streaming(
    X: np.ndarray,
    model: Any,
    X_sample: np.ndarray,
    labels_sample: np.ndarray,
    centers: np.ndarray,
    noise_policy: str = "nearest",
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Label every row of ``X`` with the domains found on the sample, chunk by chunk.

    Args:
        X: ``[n, d]`` rows (a read-only ``np.memmap`` is fine; float16 rows are cast to
            float32 per chunk).
        model: the fitted clusterer of the chosen sweep value.
        X_sample: float32 ``[m, d]`` the rows ``model`` was fitted on.
        labels_sample: int64 ``[m]`` their post-processed domains (``SweepResult.labels``).
        centers: ``[k, d]`` post-processed domain centroids (fallback for unmapped ids).
        noise_policy: ``regroup.noise_policy`` of the sweep.
        chunk_size: rows per step; the result does not depend on it.

    Returns:
        int64 ``[n]`` domain of every row, in ``0..k-1``.

    Raises:
        ValueError: ``chunk_size < 1`` (``regroup.embed_chunk_size``).
    """
    if chunk_size < 1:
        raise ValueError(f"regroup.embed_chunk_size: need >= 1, got {chunk_size}")
    raw_of = _raw_labeller(model)
    mapping = _majority_map(raw_of(np.ascontiguousarray(X_sample, np.float32)), labels_sample, noise_policy)  # fmt: skip
    lo_id = min([*mapping, 0])
    lut = np.full(max([*mapping, 0]) - lo_id + 1, -1, dtype=np.int64)
    for r, f in mapping.items():
        lut[r - lo_id] = f
    n = X.shape[0]
    out = np.empty(n, dtype=np.int64)
    for lo in range(0, n, chunk_size):
        xb = np.ascontiguousarray(X[lo : lo + chunk_size], dtype=np.float32)
        raw = raw_of(xb) - lo_id
        known = (raw >= 0) & (raw < lut.size)
        lab = np.full(len(xb), -1, dtype=np.int64)
        lab[known] = lut[raw[known]]
        miss = lab < 0
        if miss.any():  # noise, or a raw id no sample point produced
            lab[miss] = nearest_centroid(xb[miss], centers)[0]
        out[lo : lo + len(xb)] = lab
    return out


def sweep_sampled(
    X: np.ndarray,
    sample: np.ndarray,
    clusterer_factory: Callable[[int], Any],
    values: Sequence[int] | Mapping[str, int],
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    **sweep_kwargs: Any,
) -> tuple[SweepResult, np.ndarray]:
    """:func:`~rnb.regroup.selection.sweep` on ``X[sample]``, then label all of ``X``.

    Args:
        X: ``[n, d]`` rows, may be memory-mapped (float32 or float16).
        sample: sorted row ids to fit on (:func:`sample_indices`).
        clusterer_factory: ``value -> clusterer`` as for ``sweep``; must pass
            :func:`check_streamable`.
        values: the sweep values (fractions are fractions of the sample size).
        chunk_size: rows per streaming step.
        **sweep_kwargs: forwarded to ``sweep`` (metric, silhouette_sample, seed, ...).

    Returns:
        ``(result, labels)``: the sweep over the sample (its ``labels`` / ``centers``
        describe the sample) and int64 ``[n]`` domains of every row.
    """
    Xs = np.ascontiguousarray(X[sample], dtype=np.float32)
    fitted: dict[int, Any] = {}

    def factory(value: int) -> Any:
        fitted[int(value)] = clusterer = clusterer_factory(value)
        return clusterer

    result = selection.sweep(Xs, factory, values, **sweep_kwargs)
    model = fitted[int(result.chosen_row.value)]
    labels = assign_streaming(
        X, model, Xs, np.asarray(result.labels), np.asarray(result.centers),
        sweep_kwargs.get("noise_policy", "nearest"), chunk_size,
    )  # fmt: skip
    return result, labels
