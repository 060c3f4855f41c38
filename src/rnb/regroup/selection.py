"""Choose the number of clusters: sweep a clusterer parameter and score each clustering.

R&B (method.md, Stage 1 step 2) clusters the training embeddings for each candidate
``k`` and keeps the best by a label-free score (paper: silhouette). Each sweep value goes
through the same post-processing as the final labels (noise policy, tiny-cluster merge),
so ``k_found`` and the scores describe the domains training will actually use.

Invalid values (the documented fallback): a value is *excluded* from the choice, with a
warning and its reason recorded in the row (``SweepRow.excluded``: sweep table, JSON and
plot), when it yields no usable clustering: the clusterer raised ``ValueError`` for it
(e.g. ``min_cluster_size`` larger than the data), every point was labelled noise, fewer
than 2 clusters or every point its own cluster remained after the noise policy and the
tiny-cluster merge, or the selection score is undefined (e.g. the silhouette sample holds
one cluster). The sweep raises (naming ``regroup.k_values`` and each value's reason) only
when no value is valid; a single value whose clustering exists but cannot be scored is
returned as is. All-identical embeddings make every score undefined, so they raise up
front unless ``values`` has a single entry.

The scores of one clustering are :mod:`rnb.regroup.scores`; the sweep spec is expanded by
:mod:`rnb.regroup.sweep_values` (``expand_values`` is re-exported here).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rnb.regroup.advice import advise
from rnb.regroup.assign import all_finite
from rnb.regroup.postprocess import apply_noise_policy, merge_small_clusters
from rnb.regroup.scores import score_row
from rnb.regroup.sweep_result import METRICS, SweepResult, SweepRow, _rank_key
from rnb.regroup.sweep_values import expand_values

__all__ = ["METRICS", "SweepResult", "SweepRow", "expand_values", "sweep"]

log = logging.getLogger(__name__)

_SILHOUETTE_METRICS = ("euclidean", "cosine")


def _validate(
    X: np.ndarray,
    values: list[int],
    metric: str,
    silhouette_metric: str,
    silhouette_sample: int | None,
) -> bool:
    """Raise on bad input; return True when all embeddings are identical (degenerate)."""
    if metric not in METRICS:
        raise ValueError(f"regroup.metric: unknown metric {metric!r}; use one of {list(METRICS)}")
    if silhouette_metric not in _SILHOUETTE_METRICS:
        raise ValueError(
            f"regroup.silhouette_metric: {silhouette_metric!r} not in {_SILHOUETTE_METRICS}"
        )
    # A silhouette needs k >= 2 clusters with at least one of them holding 2 points: a
    # sample of 2 can never score, so 3 is the smallest useful size.
    if silhouette_sample is not None and int(silhouette_sample) < 3:
        raise ValueError(f"regroup.silhouette_sample: need >= 3 or null, got {silhouette_sample}")
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"embedder: need a non-empty 2-D [n, d] embedding array, got {X.shape}")
    if not all_finite(X):
        raise ValueError(
            "embedder: embeddings contain NaN/inf; check the embedder (or the precomputed file)"
        )
    n = X.shape[0]
    for v in values:
        if v <= 1:
            raise ValueError(f"regroup.k_values: need values >= 2, got {v}")
        if v > n:
            raise ValueError(
                f"regroup.k_values: value {v} exceeds the number of training examples n={n}"
            )
    degenerate = not np.any(np.ptp(X, axis=0) > 0)
    if degenerate and len(values) > 1:
        raise ValueError(
            f"embedder: all {n} embeddings are identical, so no clustering can be scored; "
            "check data.text_field / the embedder, or give a single value in regroup.k_values"
        )
    return degenerate


def _cluster(
    X: np.ndarray,
    clusterer_factory: Callable[[int], Any],
    param: str,
    value: int,
    noise_policy: str,
    min_cluster_size: int,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, int, str | None]:
    """Fit one sweep value and post-process its labels.

    Returns:
        ``((labels [n], sums [k, d], counts [k]) or None, n_noise, reason)``: the clustering
        is None, with ``reason`` saying why, when there is no clustering at this value.

    Raises:
        ValueError: an invalid ``noise_policy`` / ``min_cluster_size`` or labels of the
            wrong shape (configuration errors, not properties of the value).
    """
    clusterer = clusterer_factory(value)
    try:
        raw = np.asarray(clusterer.fit_predict(X))
    except ValueError as err:
        # sklearn's convention for "this parameter value does not fit the data" (e.g.
        # HDBSCAN's min_cluster_size > n); other exceptions are bugs and propagate.
        name = type(clusterer).__name__
        return None, 0, f"{name}({param}={value}) raised ValueError: {err}"
    n_noise = int((raw < 0).sum()) if raw.shape == (X.shape[0],) else 0
    if n_noise == X.shape[0] and noise_policy == "nearest":  # other policies decide themselves
        return None, n_noise, "every point labelled noise (no cluster found)"
    labels = apply_noise_policy(X, raw, noise_policy)
    clustering = merge_small_clusters(X, labels, min_cluster_size, return_sums=True)
    return clustering, n_noise, None


def _invalid_reason(k: int, n: int, degenerate: bool, score: float, metric: str) -> str | None:
    """Why a post-processed clustering with ``k`` clusters cannot be chosen (None if it can)."""
    if k < 2:
        return (
            f"{k} cluster after the noise policy and the tiny-cluster merge "
            "(regroup.noise_policy, regroup.min_cluster_size); need >= 2"
        )
    if k > n - 1:
        return f"every point is its own cluster (k={k}, n={n})"
    if degenerate:
        return "all embeddings are identical, so every score is undefined"
    if not math.isfinite(score):
        return f"{metric} is undefined (e.g. the silhouette sample holds a single cluster)"
    return None


def sweep(
    X: np.ndarray,
    clusterer_factory: Callable[[int], Any],
    values: Sequence[int] | Mapping[str, int],
    param: str = "n_clusters",
    metric: str = "silhouette",
    silhouette_sample: int | None = 10000,
    silhouette_metric: str = "euclidean",
    seed: int = 0,
    min_cluster_size: int = 1,
    noise_policy: str = "nearest",
) -> SweepResult:
    """Cluster ``X`` once per sweep value, score each clustering, pick the best.

    Args:
        X: ``[n, d]`` training embeddings.
        clusterer_factory: ``value -> clusterer`` (anything with ``fit_predict``); the
            pipeline builds it as ``instantiate(cfg, **{param: value})``.
        values: list of values (ints, or fractions in ``(0, 1)`` of ``n``), or a
            ``{start, stop, step}`` spec (see :func:`expand_values`).
        param: name of the swept parameter (recorded; the factory applies it).
        metric: ``silhouette`` (max), ``davies_bouldin`` (min) or ``calinski_harabasz``
            (max). Ties go to the smaller ``k_found``, then the smaller value.
        silhouette_sample: silhouette is computed on a seeded sample of this many points
            (sklearn ``sample_size``/``random_state=seed``); None = all points. The other
            two metrics are O(n d) and use all points.
        silhouette_metric: ``euclidean`` or ``cosine``.
        seed: seed of the silhouette sample.
        min_cluster_size: clusters smaller than this are merged into their nearest
            neighbour (see ``postprocess.merge_small_clusters``); 1 = off.
        noise_policy: how noise labels (-1) are resolved (``postprocess.apply_noise_policy``).

    Returns:
        A :class:`SweepResult` holding the labels and centroids of the chosen value only.

    Raises:
        ValueError: bad values/metric/embeddings, or no valid value (see module doc); the
            message names ``regroup.k_values`` and each value's reason.
    """
    X = np.asarray(X)
    vals = expand_values(values, n=X.shape[0] if X.ndim == 2 else None)
    degenerate = _validate(X, vals, metric, silhouette_metric, silhouette_sample)
    rows: list[SweepRow] = []
    best_i: int = -1
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # labels, sums, counts
    fallback: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # an unscored clustering
    for v in vals:
        t0 = time.perf_counter()
        clustering, n_noise, reason = _cluster(
            X, clusterer_factory, param, v, noise_policy, min_cluster_size
        )
        fit_s = time.perf_counter() - t0
        scores, secs = dict.fromkeys(METRICS, float("nan")), {}
        counts = np.zeros(0, dtype=np.int64)
        if clustering is not None:
            labels, sums, counts = clustering
            scores, secs = score_row(
                X, labels, sums, counts, silhouette_sample, silhouette_metric, seed, degenerate
            )
            reason = _invalid_reason(len(counts), X.shape[0], degenerate, scores[metric], metric)
        row = SweepRow(
            value=v,
            k_found=len(counts),
            sizes=counts.tolist(),
            n_noise=n_noise,
            fit_seconds=fit_s,
            metric_seconds=secs,
            excluded=reason,
            **scores,
        )
        rows.append(row)
        log.info(
            "sweep %s=%d: k=%d %s=%.4g (fit %.2fs)%s",
            param,
            v,
            row.k_found,
            metric,
            row.score(metric),
            fit_s,
            f" excluded: {reason}" if reason else "",
        )
        if reason is not None:
            warnings.warn(
                f"regroup.k_values: {param}={v} is excluded from the choice: {reason}",
                stacklevel=2,
            )
            if fallback is None and clustering is not None:
                fallback = clustering  # returned if this stays the only value
            continue
        if best_i < 0 or _rank_key(row, metric) < _rank_key(rows[best_i], metric):
            best_i, best = len(rows) - 1, clustering
    if best_i < 0:
        if len(rows) > 1 or fallback is None:
            why = "; ".join(f"{param}={r.value}: {r.excluded}" for r in rows)
            raise ValueError(
                f"regroup.k_values: no value in {vals} gives a clustering that "
                f"regroup.metric={metric} can score ({why}); change regroup.k_values "
                f"(or the clusterer's other parameters, e.g. min_samples)"
            )
        best_i, best = 0, fallback
    assert best is not None
    advice = advise(
        [r.value for r in rows],
        [float("nan") if r.excluded else r.score(metric) for r in rows],
        vals[best_i],
        param=param,
        metric=metric,
    )
    if advice is not None and advice.flagged:
        # The optimum may lie outside the swept range (the curve is often U-shaped), or the
        # metric may not single out a value at all: say so, with the values to try next.
        log.warning("sweep: %s", advice.message)
    return SweepResult(
        param=param,
        metric=metric,
        rows=rows,
        chosen=best_i,
        labels=best[0],
        centers=best[1] / best[2][:, None],
        silhouette_sample=silhouette_sample,
        silhouette_metric=silhouette_metric,
        seed=seed,
    )
