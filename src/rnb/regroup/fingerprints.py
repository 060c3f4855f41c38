"""Stable sha256 fingerprints of texts, arrays and configs, and the cache keys made of them.

Every Regroup cache key (embedding entries, result folders) and every component's
``fingerprint()`` is built from these functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fingerprint_array", "fingerprint_config", "fingerprint_texts", "make_key"]

# Bump when the on-disk layout or the meaning of a fingerprint changes, so old caches miss.
_FINGERPRINT_VERSION = 1


def _sha256_parts(parts: Sequence[bytes]) -> str:
    # Length-prefix every part so that ("ab", "c") and ("a", "bc") hash differently.
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def fingerprint_texts(texts: Sequence[str]) -> str:
    """Stable sha256 fingerprint of an ordered sequence of strings.

    Args:
        texts: The texts, in dataset order (order matters: rows of the cache align to it).

    Returns:
        A 64-character hex digest.

    Raises:
        ValueError: If an item is not a ``str``.
    """
    h = hashlib.sha256()
    h.update(len(texts).to_bytes(8, "little"))
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(
                f"data.embed_fields / data.text_fields: expected every text to be a str, got "
                f"{type(t).__name__} at row {i}"
            )
        b = t.encode("utf-8", errors="surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def fingerprint_array(arr: np.ndarray, block_rows: int = 65536) -> str:
    """Stable sha256 fingerprint of an array's dtype, shape and values.

    Reads row blocks so a memory-mapped file is hashed without loading it whole.

    Args:
        arr: Any numeric array (e.g. precomputed embeddings).
        block_rows: Rows hashed per step.

    Returns:
        A 64-character hex digest.
    """
    a = np.asarray(arr)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}".encode())
    if a.ndim == 0:
        h.update(a.tobytes())
        return h.hexdigest()
    for lo in range(0, a.shape[0], block_rows):
        h.update(np.ascontiguousarray(a[lo : lo + block_rows]).tobytes())
    return h.hexdigest()


def make_key(*parts: str) -> str:
    """Combine fingerprints (data, embedder, ...) into one cache key.

    Args:
        *parts: Strings such as :func:`fingerprint_texts` and ``embedder.fingerprint()``.

    Returns:
        A 64-character hex sha256 digest, safe to use as a file name.
    """
    if not parts:
        raise ValueError("make_key: need at least one part")
    return _sha256_parts([str(p).encode("utf-8") for p in parts])


def fingerprint_config(kind: str, config: dict[str, Any]) -> str:
    """Fingerprint of a component's class name and the config that changes its output.

    Args:
        kind: Fully qualified class name (so two classes with equal kwargs differ).
        config: JSON-serialisable settings; key order does not matter.

    Returns:
        A 64-character hex digest.
    """
    payload = json.dumps(
        {"v": _FINGERPRINT_VERSION, "kind": kind, "config": config},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
