"""Regroup end to end: embed → reduce → sweep k → pick → assign eval → report, cached.

:class:`Regroup` is a configured object (``_target_`` in ``conf/regroup/*.yaml``; its
``__init__`` parameters are the YAML keys). Its one method :meth:`Regroup.run` takes the
texts of the train and eval splits (plus optional predefined / reference labels) and
returns a :class:`~rnb.regroup.result.RegroupResult`. It knows nothing about records or
data files: the DataModule builds the texts and hands them over.

The result of a configuration is cached under ``<cache_dir>/regroup/<fingerprint>/``
where the fingerprint covers the texts (and labels), the embedder, reducer, clusterer,
sweep settings, the seed and the code version; a rerun (or another DDP rank, or another
job of a multirun) only loads it. Reports stay in that folder until
:meth:`RegroupResult.write_reports` copies them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnb.caching import cache_lock, code_version, publish_dir, temp_dir
from rnb.regroup.cache import EmbeddingCache, fingerprint_array, fingerprint_texts, make_key
from rnb.regroup.result import RegroupResult
from rnb.regroup.sampled import check_fit_sample, check_streamable

__all__ = ["Regroup", "RegroupResult"]

log = logging.getLogger(__name__)

#: Format version of a result folder; bump when the labels or reports change for the
#: same inputs, so older cached results miss.
FORMAT_VERSION = 4  # 4: regroup.json fit_sample
_DEFAULT_K = (8, 12, 16, 20, 24, 28, 32)
_EMBED_DTYPES = ("float32", "float16")
#: Reduced training rows of a fit_sample run (a memory map in the temporary result folder).
_REDUCED = "reduced.npy"


def _describe(component: Any) -> dict[str, Any]:
    """Class and keyword arguments of a (partial) clusterer, for the fingerprint."""
    func = getattr(component, "func", component)
    return {
        "target": f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}",
        "kwargs": dict(getattr(component, "keywords", {}) or {}),
    }


def _hash_labels(values: Sequence[Any] | None) -> str:
    return "none" if values is None else fingerprint_texts([str(v) for v in values])


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

    def fingerprint(
        self,
        texts_train: Sequence[str],
        texts_eval: Sequence[str],
        *,
        predefined: Sequence[Any] | None = None,
        reference: Sequence[Any] | None = None,
        vectors: tuple[Sequence[Any], Sequence[Any]] | None = None,
    ) -> str:
        """The cache key of :meth:`run` with the same arguments (20 hex characters)."""
        if getattr(self.embedder, "is_fitted", True) is False and hasattr(self.embedder, "fit"):
            self.embedder.fit(list(texts_train))  # corpus-dependent: the fit is part of the key
        data = [fingerprint_texts(texts_train), fingerprint_texts(texts_eval)]
        if vectors is not None:
            data += [fingerprint_array(self.embedder.encode(v)) for v in vectors]
        settings = {
            "param": self.param,
            "k_values": self.k_values,
            "metric": self.metric,
            "silhouette_sample": self.silhouette_sample,
            "silhouette_metric": self.silhouette_metric,
            "min_cluster_size": self.min_cluster_size,
            "noise_policy": self.noise_policy,
            "ood_quantile": self.ood_quantile,
            "clusterer": _describe(self.clusterer),
            "seed": self.seed,
            "embed_dtype": self.embed_dtype,
            "fit_sample": self.fit_sample,
        }
        return make_key(
            code_version("regroup", FORMAT_VERSION),
            *data,
            _hash_labels(predefined),
            _hash_labels(reference),
            self.embedder.fingerprint(),
            self.reducer.fingerprint(),
            json.dumps(settings, sort_keys=True, default=str),
        )[:20]

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
        if hasattr(self.embedder, "encode_eval"):  # precomputed: rows come from elsewhere
            return self.embedder.encode(items), self.embedder.encode_eval(items_eval)
        cache, emb_fp = EmbeddingCache(self.cache_dir), self.embedder.fingerprint()
        # float32 keys stay as they were before embed_dtype existed (no needless re-embed).
        dtype_part = () if self.embed_dtype == "float32" else (self.embed_dtype,)
        try:
            X, Xe = (
                cache.get_or_compute(
                    make_key(fingerprint_texts(t), emb_fp, *dtype_part),
                    t,
                    self.embedder,
                    self.embed_chunk_size,
                    dtype=self.embed_dtype,
                )
                for t in (items, items_eval)
            )
        finally:  # e.g. MiniLM's worker pool: not held through training
            getattr(self.embedder, "close", lambda: None)()
        return X, Xe  # memory-mapped: a fit_sample run never loads them whole

    def _compute(
        self, folder: Path, texts: Sequence[str], ev_texts: Sequence[str],
        domains: Sequence[Any] | None, ev_domains: Sequence[Any] | None,
        reference: Sequence[Any] | None, vectors: tuple[Sequence[Any], Sequence[Any]] | None,
    ) -> None:  # fmt: skip
        from rnb.regroup.assign import assign_to_centroids
        from rnb.regroup.postprocess import centroids
        from rnb.regroup.report import build_report, write_report
        from rnb.regroup.sampled import (
            reduce_streaming,
            sample_indices,
            sample_record,
            sweep_sampled,
        )
        from rnb.regroup.selection import sweep

        X, Xe = self._embed(*(vectors if vectors is not None else (texts, ev_texts)))
        sample = None
        if self.fit_sample is not None and self.fit_sample < X.shape[0]:
            sample = sample_indices(X.shape[0], self.fit_sample, self.seed)
            Xr = reduce_streaming(self.reducer, X, sample, folder / _REDUCED, self.embed_chunk_size)  # fmt: skip
        else:
            Xr = np.asarray(self.reducer.fit_transform(X), dtype=np.float32)
        Xer = np.asarray(self.reducer.transform(Xe), dtype=np.float32)
        result = None
        factory = lambda value: self.clusterer(**{self.param: int(value)})  # noqa: E731
        kw = dict(
            param=self.param, metric=self.metric, silhouette_sample=self.silhouette_sample,
            silhouette_metric=self.silhouette_metric, seed=self.seed,
            min_cluster_size=self.min_cluster_size, noise_policy=self.noise_policy,
        )  # fmt: skip
        if self.keeps_predefined_domains:
            labels, names = self._predefined(domains, ev_domains)
            centers = centroids(Xr, labels, len(names))
        elif sample is not None:
            result, labels = sweep_sampled(Xr, sample, factory, self.k_values, self.embed_chunk_size, **kw)  # fmt: skip
            centers = centroids(Xr, labels, len(result.centers))  # means over every point
            names = [f"c{i:02d}" for i in range(len(centers))]
        else:
            result = sweep(Xr, factory, self.k_values, **kw)
            labels, centers = np.asarray(result.labels), np.asarray(result.centers)
            names = [f"c{i:02d}" for i in range(int(labels.max()) + 1)]
        assignment = assign_to_centroids(Xer, centers, Xr, labels, ood_quantile=self.ood_quantile)
        report = build_report(
            list(texts), labels, assignment.labels, domains_train=domains,
            reference_train=reference, sweep=result, assignment=assignment,
            embeddings_train=Xr, seed=self.seed,
        )  # fmt: skip
        report["fit_sample"] = sample_record(sample, self.fit_sample, X.shape[0], self.seed, self.streaming)  # fmt: skip
        np.savez(folder / "labels.npz", train=labels, eval=assignment.labels, eval_distance=assignment.distances, eval_ood=assignment.ood_mask)  # fmt: skip
        (folder / "names.json").write_text(json.dumps(names), encoding="utf-8")
        write_report(report, folder)
        if result is not None:
            result.to_json(folder / "sweep.json")
            result.plot(folder / "sweep.png")
        del Xr  # close the map of a streamed reduction before its file goes
        (folder / _REDUCED).unlink(missing_ok=True)

    @staticmethod
    def _predefined(
        domains: Sequence[Any] | None, ev_domains: Sequence[Any] | None
    ) -> tuple[np.ndarray, list[str]]:
        if domains is None:
            raise ValueError("regroup=original needs data.domain_field (the predefined domains)")
        names = sorted({str(d) for d in domains})
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[str(d)] for d in domains], dtype=np.int64)
        unknown = sorted({str(d) for d in ev_domains or ()} - set(names))
        if unknown:
            raise ValueError(f"data.domain_field: eval domains {unknown} have no training examples")
        return labels, names
