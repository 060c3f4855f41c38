"""Regroup end to end as one configured, cached stage: embed → reduce → sweep k → pick →
assign eval → report.

:class:`Regroup` is a configured object (``_target_`` in ``conf/regroup/*.yaml``; its
``__init__`` parameters are the YAML keys). Its one method :meth:`Regroup.run` takes the
texts of the train and eval splits (plus optional predefined / reference labels) and
returns a :class:`~rnb.regroup.result.RegroupResult`. It knows nothing about records or
data files: the DataModule builds the texts and hands them over.

This module holds the settings and the cached run (lock, compute once, publish, load).
The result of a configuration is cached under ``<cache_dir>/regroup/<fingerprint>/``;
what the fingerprint covers is :mod:`rnb.regroup.pipeline_key`, and the computation
itself is :mod:`rnb.regroup.pipeline_compute`. A rerun (or another DDP rank, or another
job of a multirun) only loads it. Reports stay in that folder until
:meth:`RegroupResult.write_reports` copies them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnb.caching import cache_lock, publish_dir, temp_dir
from rnb.regroup.pipeline_compute import compute_result, embed, predefined_labels
from rnb.regroup.pipeline_key import FORMAT_VERSION, regroup_key
from rnb.regroup.result import RegroupResult
from rnb.regroup.sampled import check_fit_sample, check_streamable

__all__ = ["FORMAT_VERSION", "Regroup", "RegroupResult"]

log = logging.getLogger(__name__)

_DEFAULT_K = (8, 12, 16, 20, 24, 28, 32)
_EMBED_DTYPES = ("float32", "float16")


class Regroup:
    """The Regroup stage of R&B (method.md, Stage 1) as one configured object.

    Args:
        embedder: anything with ``encode(texts) -> [n, d]`` and ``fingerprint()``
            (``regroup/embedder=minilm|tfidf|precomputed``). An embedder with
            ``encode_eval`` (precomputed) brings its own eval rows and is not cached.
        reducer: ``fit_transform``/``transform``/``fingerprint``
            (``regroup/reducer=none|pca|umap``).
        clusterer: a factory (Hydra ``_partial_: true``) called as
            ``clusterer(**{param: value})`` once per sweep value; a clusterer class with
            ``keeps_predefined_domains`` (``clusterer=original``) keeps the predefined
            domains instead.
        param: the clusterer keyword the sweep sets (``n_clusters``, ``min_cluster_size``).
        k_values: sweep values: a list, or ``{start, stop, step}`` (``range`` semantics).
        metric: ``silhouette`` | ``davies_bouldin`` | ``calinski_harabasz``.
        silhouette_sample: seeded sample size of the silhouette (None = all points).
        silhouette_metric: ``euclidean`` | ``cosine``.
        min_cluster_size: smaller clusters merge into their nearest neighbour (1 = off).
        noise_policy: ``nearest`` | ``own_cluster`` (noise of density-based clusterers).
        ood_quantile: eval points beyond this quantile of their cluster's training
            distances are flagged out-of-distribution.
        embed_chunk_size: rows embedded (and cached) per chunk, and rows labelled per
            streaming step under ``fit_sample``; does not change results.
        embed_dtype: ``float32`` | ``float16``: dtype of the cached embedding file
            (memory-mapped on read; float16 halves disk and page cache at ~1e-3 relative
            precision). Part of the cache key.
        fit_sample: fit the reducer and run the k sweep (clusterer, merge, every score)
            on a seeded uniform sample of this many training points, then label every
            training point in streaming chunks (:mod:`rnb.regroup.sampled`); None (or
            >= n_train) fits on all points. Only clusterers that can label unseen points
            support it (k-means family, or any with ``predict``); ``min_cluster_size``
            then counts sample points.
        cache_dir: root of the embedding and result caches.
        seed: silhouette sample and example order (clusterers get their own seed keys).
    """

    def __init__(
        self,
        embedder: Any,
        reducer: Any,
        clusterer: Callable[..., Any],
        param: str = "n_clusters",
        k_values: Sequence[int] | Mapping[str, int] = _DEFAULT_K,
        metric: str = "silhouette",
        silhouette_sample: int | None = 10000,
        silhouette_metric: str = "cosine",
        min_cluster_size: int = 10,
        noise_policy: str = "nearest",
        ood_quantile: float = 0.99,
        embed_chunk_size: int = 8192,
        cache_dir: str | Path = ".rnb_cache",
        seed: int = 0,
        embed_dtype: str = "float32",
        fit_sample: int | None = None,
    ) -> None:
        self.embedder = embedder
        self.reducer = reducer
        self.clusterer = clusterer
        self.param = param
        self.k_values = k_values if isinstance(k_values, Mapping) else list(k_values)
        self.metric = metric
        self.silhouette_sample = silhouette_sample
        self.silhouette_metric = silhouette_metric
        self.min_cluster_size = min_cluster_size
        self.noise_policy = noise_policy
        self.ood_quantile = ood_quantile
        self.embed_chunk_size = embed_chunk_size
        self.cache_dir = Path(cache_dir).expanduser()
        self.seed = seed
        if embed_dtype not in _EMBED_DTYPES:
            raise ValueError(f"regroup.embed_dtype: {embed_dtype!r} not in {_EMBED_DTYPES}")
        self.embed_dtype = embed_dtype
        self.fit_sample = check_fit_sample(fit_sample)
        self.streaming: str | None = None  # how unseen points are labelled (fit_sample)
        if self.fit_sample is not None:
            if self.keeps_predefined_domains:
                raise ValueError(
                    "regroup.fit_sample: regroup=original keeps the predefined domains and "
                    "fits nothing; set regroup.fit_sample=null"
                )
            self.streaming = check_streamable(self.clusterer)  # refuse before embedding

    @property
    def keeps_predefined_domains(self) -> bool:
        """True for ``regroup=original`` (the clusterer keeps ``data.domain_field``)."""
        func = getattr(self.clusterer, "func", self.clusterer)
        return bool(getattr(func, "keeps_predefined_domains", False))

    @property
    def input_column(self) -> str | None:
        """The record field holding precomputed vectors (``embedder.column``), if any;
        the caller then passes them as ``vectors``."""
        return getattr(self.embedder, "column", None)

    #: The cache key of :meth:`run` with the same arguments (20 hex characters); see
    #: :func:`rnb.regroup.pipeline_key.regroup_key`.
    fingerprint = regroup_key

    def run(
        self,
        texts_train: Sequence[str],
        texts_eval: Sequence[str],
        *,
        predefined: Sequence[Any] | None = None,
        predefined_eval: Sequence[Any] | None = None,
        reference: Sequence[Any] | None = None,
        vectors: tuple[Sequence[Any], Sequence[Any]] | None = None,
    ) -> RegroupResult:
        """Regroup the training texts and assign every eval text (or load the cached result).

        Args:
            texts_train: ``n_train`` texts (embedded, and used by the report).
            texts_eval: ``n_eval`` texts.
            predefined: predefined domain of each training text (``data.domain_field``):
                the report's contingency table, and the domains of ``regroup=original``.
            predefined_eval: predefined domain of each eval text; only checked (every eval
                domain must have training examples) by ``regroup=original``.
            reference: latent label of each training text (``data.reference_field``);
                ARI/NMI in the report only.
            vectors: ``(train, eval)`` per-record vectors for an embedder reading a column
                (:attr:`input_column`); they are embedded instead of the texts.

        Returns:
            The labels, names, summary, report and fingerprint.

        Raises:
            ValueError: empty eval split, misaligned labels, ``regroup=original`` without
                predefined domains, or any error of the sweep (named by config key).
        """
        if not len(texts_eval):
            raise ValueError("the eval split is empty: set data.eval_path or data.eval_fraction")
        for name, values in (("data.domain_field", predefined), ("data.reference_field", reference)):  # fmt: skip
            if values is not None and len(values) != len(texts_train):
                raise ValueError(f"{name}: {len(values)} labels for {len(texts_train)} texts")
        if self.input_column is not None and vectors is None:
            raise ValueError(
                f"regroup.embedder.column={self.input_column!r}: pass the column's vectors "
                "(Regroup.run(..., vectors=(train, eval)))"
            )
        fp = self.fingerprint(
            texts_train, texts_eval, predefined=predefined, reference=reference, vectors=vectors
        )
        folder = self.cache_dir / "regroup" / fp
        computed = False
        if not (folder / "labels.npz").exists():  # a finished folder is read without the lock
            with cache_lock(folder):  # a concurrent run with the same key waits, then reuses
                if not (folder / "labels.npz").exists():
                    computed = self._compute_into(folder, texts_train, texts_eval, predefined, predefined_eval, reference, vectors)  # fmt: skip
        log.info("Regroup %s: %s", "computed" if computed else "loaded from cache", folder)
        return RegroupResult.load(folder, fp, from_cache=not computed)

    # ------------------------------------------------------------------ compute
    def _compute_into(self, folder: Path, *args: Any) -> bool:
        """Compute into a private temporary folder, then publish it atomically as ``folder``
        (a crash leaves no half-written result; a stale one from an older crash is ignored)."""
        tmp = temp_dir(folder)
        try:
            self._compute(tmp, *args)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return publish_dir(tmp, folder)

    def _embed(
        self, items: Sequence[Any], items_eval: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Train and eval embeddings (see :func:`rnb.regroup.pipeline_compute.embed`)."""
        return embed(self, items, items_eval)

    def _compute(self, folder: Path, *args: Any) -> None:
        """Write the result into ``folder`` (see :func:`~rnb.regroup.pipeline_compute.compute_result`)."""
        compute_result(self, folder, *args)

    _predefined = staticmethod(predefined_labels)
