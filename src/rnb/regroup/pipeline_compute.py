"""Compute one :class:`~rnb.regroup.pipeline.Regroup` result into a folder.

embed (through the embedding cache) → reduce → sweep k (or keep the predefined domains)
→ assign the eval split → write labels, names, report and sweep files. The caller
(:meth:`Regroup.run`) picks the folder, holds the lock and publishes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnb.regroup.cache import EmbeddingCache, fingerprint_texts, make_key

if TYPE_CHECKING:
    from rnb.regroup.pipeline import Regroup

__all__ = ["compute_result", "embed", "predefined_labels"]

#: Reduced training rows of a fit_sample run (a memory map in the temporary result folder).
_REDUCED = "reduced.npy"


def embed(
    regroup: Regroup, items: Sequence[Any], items_eval: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the train and eval items, through the embedding cache.

    Args:
        regroup: The configured stage (its embedder, cache dir, chunk size, dtype).
        items: ``n_train`` texts (or column vectors).
        items_eval: ``n_eval`` texts (or column vectors).

    Returns:
        ``([n_train, d], [n_eval, d])``, memory-mapped from the cache (a fit_sample run
        never loads them whole); an embedder with ``encode_eval`` (precomputed) brings
        its own eval rows and is not cached.
    """
    embedder = regroup.embedder
    if hasattr(embedder, "encode_eval"):  # precomputed: rows come from elsewhere
        return embedder.encode(items), embedder.encode_eval(items_eval)
    cache, emb_fp = EmbeddingCache(regroup.cache_dir), embedder.fingerprint()
    # float32 keys stay as they were before embed_dtype existed (no needless re-embed).
    dtype_part = () if regroup.embed_dtype == "float32" else (regroup.embed_dtype,)
    try:
        X, Xe = (
            cache.get_or_compute(
                make_key(fingerprint_texts(t), emb_fp, *dtype_part),
                t,
                embedder,
                regroup.embed_chunk_size,
                dtype=regroup.embed_dtype,
            )
            for t in (items, items_eval)
        )
    finally:  # e.g. MiniLM's worker pool: not held through training
        getattr(embedder, "close", lambda: None)()
    return X, Xe


def compute_result(
    regroup: Regroup, folder: Path, texts: Sequence[str], ev_texts: Sequence[str],
    domains: Sequence[Any] | None, ev_domains: Sequence[Any] | None,
    reference: Sequence[Any] | None, vectors: tuple[Sequence[Any], Sequence[Any]] | None,
) -> None:  # fmt: skip
    """Write the result of ``regroup`` on these inputs into ``folder`` (an empty folder).

    Args:
        regroup: The configured stage.
        folder: Where ``labels.npz``, ``names.json``, the report and the sweep files go.
        texts: ``n_train`` training texts.
        ev_texts: ``n_eval`` eval texts.
        domains: predefined domain per training text, or None.
        ev_domains: predefined domain per eval text, or None.
        reference: latent label per training text, or None.
        vectors: ``(train, eval)`` column vectors embedded instead of the texts, or None.

    Raises:
        ValueError: ``regroup=original`` without predefined domains, or any sweep error.
    """
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

    r = regroup
    X, Xe = r._embed(*(vectors if vectors is not None else (texts, ev_texts)))
    sample = None
    if r.fit_sample is not None and r.fit_sample < X.shape[0]:
        sample = sample_indices(X.shape[0], r.fit_sample, r.seed)
        Xr = reduce_streaming(r.reducer, X, sample, folder / _REDUCED, r.embed_chunk_size)
    else:
        Xr = np.asarray(r.reducer.fit_transform(X), dtype=np.float32)
    Xer = np.asarray(r.reducer.transform(Xe), dtype=np.float32)
    result = None
    factory = lambda value: r.clusterer(**{r.param: int(value)})  # noqa: E731
    kw = dict(
        param=r.param, metric=r.metric, silhouette_sample=r.silhouette_sample,
        silhouette_metric=r.silhouette_metric, seed=r.seed,
        min_cluster_size=r.min_cluster_size, noise_policy=r.noise_policy,
    )  # fmt: skip
    if r.keeps_predefined_domains:
        labels, names = predefined_labels(domains, ev_domains)
        centers = centroids(Xr, labels, len(names))
    elif sample is not None:
        result, labels = sweep_sampled(Xr, sample, factory, r.k_values, r.embed_chunk_size, **kw)  # fmt: skip
        centers = centroids(Xr, labels, len(result.centers))  # means over every point
        names = [f"c{i:02d}" for i in range(len(centers))]
    else:
        result = sweep(Xr, factory, r.k_values, **kw)
        labels, centers = np.asarray(result.labels), np.asarray(result.centers)
        names = [f"c{i:02d}" for i in range(int(labels.max()) + 1)]
    assignment = assign_to_centroids(Xer, centers, Xr, labels, ood_quantile=r.ood_quantile)
    report = build_report(
        list(texts), labels, assignment.labels, domains_train=domains,
        reference_train=reference, sweep=result, assignment=assignment,
        embeddings_train=Xr, seed=r.seed,
    )  # fmt: skip
    report["fit_sample"] = sample_record(sample, r.fit_sample, X.shape[0], r.seed, r.streaming)
    np.savez(folder / "labels.npz", train=labels, eval=assignment.labels, eval_distance=assignment.distances, eval_ood=assignment.ood_mask)  # fmt: skip
    (folder / "names.json").write_text(json.dumps(names), encoding="utf-8")
    write_report(report, folder)
    if result is not None:
        result.to_json(folder / "sweep.json")
        result.plot(folder / "sweep.png")
    del Xr  # close the map of a streamed reduction before its file goes
    (folder / _REDUCED).unlink(missing_ok=True)


def predefined_labels(
    domains: Sequence[Any] | None, ev_domains: Sequence[Any] | None
) -> tuple[np.ndarray, list[str]]:
    """Labels of ``regroup=original``: the predefined domains, sorted by name.

    Args:
        domains: predefined domain per training text (``data.domain_field``).
        ev_domains: predefined domain per eval text, or None (then not checked).

    Returns:
        ``(labels [n_train] int64, names)``.

    Raises:
        ValueError: No domains, or eval domains without training examples.
    """
    if domains is None:
        raise ValueError("regroup=original needs data.domain_field (the predefined domains)")
    names = sorted({str(d) for d in domains})
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[str(d)] for d in domains], dtype=np.int64)
    unknown = sorted({str(d) for d in ev_domains or ()} - set(names))
    if unknown:
        raise ValueError(f"data.domain_field: eval domains {unknown} have no training examples")
    return labels, names
