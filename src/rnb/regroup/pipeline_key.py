"""The cache key of a :class:`~rnb.regroup.pipeline.Regroup` run (its result folder's name).

The key covers the texts (and labels), the embedder, reducer, clusterer, sweep settings,
the seed and the code version, so a rerun (or another DDP rank, or another job of a
multirun) with the same inputs finds the same folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rnb.caching import code_version
from rnb.regroup.cache import fingerprint_array, fingerprint_texts, make_key

if TYPE_CHECKING:
    from rnb.regroup.pipeline import Regroup

__all__ = ["FORMAT_VERSION", "regroup_key"]

#: Format version of a result folder; bump when the labels or reports change for the
#: same inputs, so older cached results miss.
FORMAT_VERSION = 4  # 4: regroup.json fit_sample


def _describe(component: Any) -> dict[str, Any]:
    """Class and keyword arguments of a (partial) clusterer, for the fingerprint."""
    func = getattr(component, "func", component)
    return {
        "target": f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}",
        "kwargs": dict(getattr(component, "keywords", {}) or {}),
    }


def _hash_labels(values: Sequence[Any] | None) -> str:
    return "none" if values is None else fingerprint_texts([str(v) for v in values])


def regroup_key(
    regroup: Regroup,
    texts_train: Sequence[str],
    texts_eval: Sequence[str],
    *,
    predefined: Sequence[Any] | None = None,
    reference: Sequence[Any] | None = None,
    vectors: tuple[Sequence[Any], Sequence[Any]] | None = None,
) -> str:
    """The cache key of ``regroup.run`` with the same arguments.

    An unfitted corpus-dependent embedder (``is_fitted`` is False, has ``fit``) is fitted
    on ``texts_train`` first: its fit is part of its fingerprint.

    Args:
        regroup: The configured stage.
        texts_train: ``n_train`` training texts.
        texts_eval: ``n_eval`` eval texts.
        predefined: predefined domain of each training text, or None.
        reference: latent label of each training text, or None.
        vectors: ``(train, eval)`` column vectors of an embedder reading a column; their
            embeddings are hashed instead of relying on the texts alone.

    Returns:
        20 hex characters.
    """
    embedder = regroup.embedder
    if getattr(embedder, "is_fitted", True) is False and hasattr(embedder, "fit"):
        embedder.fit(list(texts_train))  # corpus-dependent: the fit is part of the key
    data = [fingerprint_texts(texts_train), fingerprint_texts(texts_eval)]
    if vectors is not None:
        data += [fingerprint_array(embedder.encode(v)) for v in vectors]
    settings = {
        "param": regroup.param,
        "k_values": regroup.k_values,
        "metric": regroup.metric,
        "silhouette_sample": regroup.silhouette_sample,
        "silhouette_metric": regroup.silhouette_metric,
        "min_cluster_size": regroup.min_cluster_size,
        "noise_policy": regroup.noise_policy,
        "ood_quantile": regroup.ood_quantile,
        "clusterer": _describe(regroup.clusterer),
        "seed": regroup.seed,
        "embed_dtype": regroup.embed_dtype,
        "fit_sample": regroup.fit_sample,
    }
    return make_key(
        code_version("regroup", FORMAT_VERSION),
        *data,
        _hash_labels(predefined),
        _hash_labels(reference),
        embedder.fingerprint(),
        regroup.reducer.fingerprint(),
        json.dumps(settings, sort_keys=True, default=str),
    )[:20]
