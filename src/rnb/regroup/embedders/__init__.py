"""Embedders for the regroup stage: ``encode(texts) -> float32 [n, d]``, one backend per module.

Every embedder is built from plain kwargs (Hydra ``_target_``), encodes in batches behind
a tqdm bar (``progress=False`` hides it), is deterministic, and has ``fingerprint()``: a
sha256 of its class and the settings that change its output, used in cache keys.
Settings that only change speed (``batch_size``, ``device``, ``progress``) are left out
of the fingerprint on purpose, so a cache built on one machine is reused on another.

Backends: :mod:`~rnb.regroup.embedders.sentence_transformer` (MiniLM by default),
:mod:`~rnb.regroup.embedders.tfidf` (TF-IDF + SVD) and :mod:`rnb.regroup.precomputed`
(vectors computed elsewhere). All are re-exported here, so ``_target_:
rnb.regroup.embedders.<Class>`` keeps working.

Heavy imports (torch, sentence-transformers) happen on first use, not at import time.
"""

from __future__ import annotations

from rnb.regroup.embedders.sentence_transformer import (
    DEFAULT_MODEL_ALIASES,
    SentenceTransformerEmbedder,
    resolve_model,
)
from rnb.regroup.embedders.tfidf import TfidfSvdEmbedder

# Re-exported so that `rnb.regroup.embedders` lists every embedder.
from rnb.regroup.precomputed import PrecomputedEmbedder

__all__ = [
    "DEFAULT_MODEL_ALIASES",
    "PrecomputedEmbedder",
    "SentenceTransformerEmbedder",
    "TfidfSvdEmbedder",
    "resolve_model",
]
