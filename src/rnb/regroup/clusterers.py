"""Clusterers for the Regroup stage.

Protocol (design.md, Plug-in contracts): anything with ``fit_predict(X) -> labels``
(int array, noise = ``-1``). sklearn ``KMeans``, ``MiniBatchKMeans``, ``HDBSCAN`` and
``hdbscan.HDBSCAN`` satisfy it unchanged via Hydra ``_target_``. This module adds

* :class:`FaissKMeans`: faiss k-means, the fast backend for millions of points
  (trains on a ``k * max_points_per_centroid`` subsample, then assigns everything);
* :class:`OriginalDomains`: the "Regroup off" marker that keeps the predefined domains.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.exceptions import NotFittedError

from rnb.regroup.assign import all_finite

__all__ = ["Clusterer", "FaissKMeans", "OriginalDomains"]


@runtime_checkable
class Clusterer(Protocol):
    """Anything that maps ``[n, d]`` embeddings to ``[n]`` integer labels (noise = -1)."""

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        """Cluster ``X`` and return one label per row."""
        ...


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - exercised via monkeypatch in tests
        raise ImportError(
            "FaissKMeans needs faiss: `pip install faiss-cpu` (or faiss-gpu), or pick another "
            "clusterer, e.g. clusterer=kmeans (sklearn)"
        ) from err
    return faiss


# Below this many point-centroid pairs faiss's OpenMP start-up and barriers cost more than
# the work itself (measured: 300 points, k=5 took ~1 s with 2 threads on a busy 2-core box,
# <1 ms with one), so small problems run single-threaded.
_SMALL_WORK = 2_000_000


@contextmanager
def _threads_for(faiss: Any, work: int) -> Iterator[None]:
    """Temporarily run faiss single-threaded when ``work`` (n * k) is small."""
    if work >= _SMALL_WORK:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_INIT_METHODS = {
    "random": "ClusteringInitMethod_RANDOM",
    "kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
    "afkmc2": "ClusteringInitMethod_AFK_MC2",
}


class FaissKMeans:
    """k-means via ``faiss.Kmeans`` with an sklearn-like interface.

    Training uses at most ``n_clusters * max_points_per_centroid`` points (faiss samples
    them with ``seed``); all points are then assigned to the nearest centroid. That
    subsampling is what makes a 1M-point sweep take seconds per ``k``.

    Args:
        n_clusters: number of clusters ``k`` (the sweep sets this).
        niter: Lloyd iterations.
        nredo: restarts; the run with the lowest objective is kept.
        spherical: spherical k-means. Inputs are L2-normalised (a copy) for training,
            centroids are unit-norm and assignment maximises cosine similarity.
        seed: faiss random seed (subsample and initialisation).
        max_points_per_centroid: training subsample cap per centroid.
        init: ``"random"`` (faiss default), ``"kmeans++"`` or ``"afkmc2"`` (the last two
            need a faiss build that offers them).

    Attributes:
        cluster_centers_: float32 ``[k, d]`` centroids after :meth:`fit`.
        labels_: int64 ``[n]`` labels of the fitted data.
        inertia_: final k-means objective reported by faiss.
        assigns_nearest_centroid: True: :meth:`predict` is the nearest of
            ``cluster_centers_``, so ``regroup.fit_sample`` labels unseen points by a faiss
            search over them (:mod:`rnb.regroup.sampled`).
    """

    assigns_nearest_centroid = True

    def __init__(
        self,
        n_clusters: int = 8,
        niter: int = 25,
        nredo: int = 1,
        spherical: bool = False,
        seed: int = 0,
        max_points_per_centroid: int = 256,
        init: str = "random",
    ) -> None:
        self.n_clusters = n_clusters
        self.niter = niter
        self.nredo = nredo
        self.spherical = spherical
        self.seed = seed
        self.max_points_per_centroid = max_points_per_centroid
        self.init = init

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"embedder: embeddings must be 2-D [n, d], got shape {X.shape}")
        if not all_finite(X):
            raise ValueError("embedder: embeddings contain NaN/inf; check the embedder output")
        return X

    def _unit(self, X: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.maximum(norms, np.finfo(np.float32).tiny)

    def fit(self, X: np.ndarray) -> FaissKMeans:
        """Train the centroids on ``X`` (``[n, d]``, cast to float32) and label it."""
        faiss = _import_faiss()
        X = self._prepare(X)
        k = int(self.n_clusters)
        if k < 1:
            raise ValueError(f"clusterer.n_clusters: need k >= 1, got {self.n_clusters}")
        if X.shape[0] < k:
            raise ValueError(
                f"clusterer.n_clusters: k={k} exceeds the number of points n={X.shape[0]}"
            )
        if self.init not in _INIT_METHODS or not hasattr(faiss, _INIT_METHODS[self.init]):
            known = [m for m, attr in _INIT_METHODS.items() if hasattr(faiss, attr)]
            raise ValueError(f"clusterer.init: {self.init!r} not available; use one of {known}")
        Xt = self._unit(X) if self.spherical else X
        km = faiss.Kmeans(
            X.shape[1],
            k,
            niter=int(self.niter),
            nredo=int(self.nredo),
            spherical=bool(self.spherical),
            seed=int(self.seed),
            max_points_per_centroid=int(self.max_points_per_centroid),
            # Small inputs are legitimate here (tests, tiny corpora); silence faiss's warning.
            min_points_per_centroid=1,
            verbose=False,
        )
        if self.init != "random":
            km.cp.init_method = getattr(faiss, _INIT_METHODS[self.init])
        with _threads_for(faiss, X.shape[0] * k):
            km.train(Xt)
            _, idx = km.index.search(Xt, 1)
        self._km = km
        self.cluster_centers_ = np.asarray(km.centroids, dtype=np.float32).copy()
        self.inertia_ = float(km.obj[-1]) if km.obj is not None and len(km.obj) else float("nan")
        self.labels_ = idx[:, 0].astype(np.int64)
        return self

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        """Fit on ``X`` and return its labels (int64 ``[n]``, never -1)."""
        return self.fit(X).labels_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Label new points by nearest centroid (max inner product when ``spherical``).

        For spherical k-means the query norm does not change the arg-max, so ``X`` is
        not normalised here.
        """
        if not hasattr(self, "_km"):
            raise NotFittedError("FaissKMeans.predict called before fit")
        X = self._prepare(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(
                f"embedder: X has d={X.shape[1]}, centroids d={self.cluster_centers_.shape[1]}"
            )
        with _threads_for(_import_faiss(), X.shape[0] * len(self.cluster_centers_)):
            _, idx = self._km.index.search(X, 1)
        return idx[:, 0].astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"FaissKMeans(n_clusters={self.n_clusters}, niter={self.niter}, nredo={self.nredo}, "
            f"spherical={self.spherical}, seed={self.seed}, "
            f"max_points_per_centroid={self.max_points_per_centroid}, init={self.init!r})"
        )


class OriginalDomains:
    """ "Regroup off": keep the predefined domains instead of clustering.

    A marker for ``conf/clusterer/none.yaml``-style configs. The pipeline recognises it
    (``isinstance(c, OriginalDomains)`` or ``c.keeps_predefined_domains``) and calls
    :meth:`labels_from` with the dataset's domain column; embeddings are not needed.

    Attributes:
        keeps_predefined_domains: always True (duck-typed marker).
        domain_names_: sorted unique domain names after :meth:`labels_from`; label ``i``
            means ``domain_names_[i]``.
    """

    keeps_predefined_domains = True

    def fit_predict(self, X: np.ndarray, labels: Sequence[Any] | None = None) -> np.ndarray:
        """Return codes for ``labels``; without them there is nothing to keep.

        Raises:
            ValueError: always when ``labels`` is None, since this clusterer cannot
                invent domains from embeddings.
        """
        if labels is None:
            raise ValueError(
                "clusterer: OriginalDomains means 'Regroup off' (keep the predefined domains) "
                "and cannot cluster embeddings; the pipeline must call "
                "labels_from(domains), or pick a real clusterer (e.g. clusterer=kmeans)"
            )
        out = self.labels_from(labels)
        if X is not None and len(out) != len(X):
            raise ValueError(f"data.domain_field: {len(out)} domain labels for {len(X)} examples")
        return out

    def labels_from(self, domains: Sequence[Any]) -> np.ndarray:
        """Map predefined domain names to contiguous int64 ids (sorted by name).

        Args:
            domains: one domain name (or id) per training example.

        Returns:
            int64 ``[n]``; the names are in ``self.domain_names_``.

        Raises:
            ValueError: empty input or missing (None) domain values.
        """
        values = list(domains)
        if not values:
            raise ValueError("data.domain_field: no domain labels given (Regroup off needs them)")
        if any(v is None for v in values):
            raise ValueError("data.domain_field: some examples have no domain (None)")
        names, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
        self.domain_names_ = [str(n) for n in names]
        return codes.astype(np.int64).reshape(-1)

    def __repr__(self) -> str:
        return "OriginalDomains()"
