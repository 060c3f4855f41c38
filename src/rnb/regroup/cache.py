"""On-disk embedding cache: chunked and resumable computation of embeddings.

Embeddings are stored as ``<cache_dir>/embeddings/<entry>.npy`` and memory-mapped on read,
where ``<entry>`` hashes the caller's key with the code version
(:func:`rnb.caching.code_version`), so embeddings never outlive the code that wrote them.
While a corpus is being embedded, rows go to ``<entry>.partial.npy`` (a preallocated
``open_memmap``) and a small ``<entry>.partial.json`` records how many chunks are finished,
so an interrupted run resumes at the first unfinished chunk. The finished file appears
through an atomic ``os.replace``: a reader never sees a half-written ``<entry>.npy``.
A writer holds a file lock on the entry (:func:`rnb.caching.cache_lock`), so two processes
embedding the same corpus never share the partial file: the second waits, then loads.

Nothing is pickled; only ``.npy`` and JSON are written. The fingerprints and keys the
callers build entries from are :mod:`rnb.regroup.fingerprints` (re-exported here).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rnb.caching import cache_lock, code_version
from rnb.regroup.fingerprints import (
    fingerprint_array,
    fingerprint_config,
    fingerprint_texts,
    make_key,
)

__all__ = [
    "EmbeddingCache",
    "Encoder",
    "fingerprint_array",
    "fingerprint_config",
    "fingerprint_texts",
    "make_key",
]

#: Format version of the embedding files (part of every entry name).
FORMAT_VERSION = 1
_FLOAT32 = np.dtype(np.float32)
_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class Encoder(Protocol):
    """What the cache needs from an embedder."""

    def encode(self, texts: Sequence[Any]) -> np.ndarray:
        """Embed ``texts`` into a float32 ``[n, d]`` array."""
        ...


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _check_chunk(arr: Any, n_rows: int, dim: int | None, start: int) -> np.ndarray:
    out = np.asarray(arr)
    if out.ndim != 2 or out.shape[0] != n_rows:
        raise ValueError(
            f"embedder: encode() returned shape {out.shape} for {n_rows} texts "
            f"(rows {start}..{start + n_rows - 1}); expected [n, d]"
        )
    if dim is not None and out.shape[1] != dim:
        raise ValueError(f"embedder: dimension changed between chunks ({dim} -> {out.shape[1]})")
    out = out.astype(np.float32, copy=False)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ValueError(
            f"embedder: non-finite embedding at row {start + int(np.argmax(bad))}; "
            "check the embedder config (e.g. embedder.bf16)"
        )
    return out


class EmbeddingCache:
    """Embeddings on disk, keyed by data + embedder fingerprints.

    Args:
        cache_dir: Root cache directory; files go to ``cache_dir/embeddings/``.

    Notes:
        Safe for concurrent processes: computing an entry holds its file lock, so a second
        process computing the same key waits and then loads the finished file.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self.dir = self.cache_dir / "embeddings"

    def path(self, key: str) -> Path:
        """Final ``.npy`` path of ``key`` (for the running code version)."""
        if not _KEY_RE.match(key):
            raise ValueError(f"cache key must match [A-Za-z0-9._-]+, got {key!r}")
        return self.dir / f"{make_key(code_version('embeddings', FORMAT_VERSION), key)}.npy"

    def has(self, key: str) -> bool:
        """Whether a finished embedding file exists for ``key``."""
        return self.path(key).exists()

    def get_or_compute(
        self,
        key: str,
        texts: Sequence[Any],
        embedder: Encoder,
        chunk_size: int = 8192,
        dtype: str = "float32",
    ) -> np.ndarray:
        """Return the cached embeddings for ``key``, computing missing chunks first.

        If ``embedder`` is corpus-dependent and unfitted (has ``fit`` and ``is_fitted`` is
        False, e.g. TF-IDF+SVD), it is fitted on all of ``texts`` before chunking, so every
        chunk (also after a resume in a new process) uses the same fit.

        Args:
            key: Cache key, e.g. ``make_key(fingerprint_texts(texts), embedder.fingerprint())``.
            texts: Inputs, row-aligned with the result.
            embedder: Anything with ``encode(texts) -> [n, d]``.
            chunk_size: Rows per chunk; progress is saved after each chunk.
            dtype: ``"float32"`` or ``"float16"``: dtype of the file (and the result).
                Only one chunk is ever in RAM, so the file may exceed memory. Give a
                different ``key`` per dtype (the file is found by key alone).

        Returns:
            A read-only memory-mapped ``[len(texts), d]`` array of ``dtype``.

        Raises:
            ValueError: On an empty input, a bad ``chunk_size``, an embedder returning the
                wrong shape or non-finite values, or a cached file whose row count differs.
        """
        if chunk_size < 1:
            raise ValueError(f"regroup.embed_chunk_size: need >= 1, got {chunk_size}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"regroup.embed_dtype: need float32 or float16, got {dtype!r}")
        n = len(texts)
        if n == 0:
            raise ValueError("data: no texts to embed (empty split); check the data config")
        final = self.path(key)
        if final.exists():
            return self._load(final, n)
        with cache_lock(final):
            if not final.exists():  # else another process finished it while we waited
                self._compute(final, texts, embedder, chunk_size, np.dtype(dtype))
        return self._load(final, n)

    def _compute(
        self,
        final: Path,
        texts: Sequence[Any],
        embedder: Encoder,
        chunk_size: int,
        dtype: np.dtype = _FLOAT32,
    ) -> None:
        """Embed ``texts`` chunk by chunk into ``final`` (the caller holds its lock)."""
        n = len(texts)
        partial = final.with_name(final.stem + ".partial.npy")
        progress_path = final.with_name(final.stem + ".partial.json")
        n_chunks = -(-n // chunk_size)

        if getattr(embedder, "is_fitted", True) is False and hasattr(embedder, "fit"):
            embedder.fit(texts)  # type: ignore[attr-defined]

        mm, done = self._resume(partial, progress_path, n, chunk_size, dtype)
        for c in range(done, n_chunks):
            lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
            chunk = _check_chunk(
                embedder.encode(texts[lo:hi]), hi - lo, None if mm is None else mm.shape[1], lo
            )
            if mm is None:
                # The dimension is only known after the first chunk, so allocate here.
                mm = np.lib.format.open_memmap(
                    partial, mode="w+", dtype=dtype, shape=(n, chunk.shape[1])
                )
            mm[lo:hi] = chunk
            # Flush rows before recording progress: the JSON must never claim unwritten rows.
            mm.flush()
            _write_json_atomic(
                progress_path,
                {"n": n, "dim": int(mm.shape[1]), "chunk_size": chunk_size, "done": c + 1},
            )
        assert mm is not None  # n > 0 guarantees at least one chunk
        del mm  # close the map before renaming (required on Windows)
        os.replace(partial, final)
        progress_path.unlink(missing_ok=True)

    @staticmethod
    def _resume(
        partial: Path, progress_path: Path, n: int, chunk_size: int, dtype: np.dtype
    ) -> tuple[np.memmap | None, int]:
        """Open a compatible partial file and return it with its count of finished chunks."""
        if not (partial.exists() and progress_path.exists()):
            return None, 0
        try:
            prog = json.loads(progress_path.read_text(encoding="utf-8"))
            mm = np.lib.format.open_memmap(partial, mode="r+")
        except (OSError, ValueError):
            return None, 0  # unreadable leftovers: start over (they get overwritten)
        ok = (
            prog.get("n") == n
            and prog.get("chunk_size") == chunk_size
            and mm.shape == (n, prog.get("dim"))
            and mm.dtype == dtype
        )
        if not ok:
            del mm
            return None, 0
        return mm, int(prog.get("done", 0))

    @staticmethod
    def _load(path: Path, n: int) -> np.ndarray:
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(
                f"cache_dir: {path} holds shape {arr.shape} but {n} texts were given; "
                "delete the file or change cache_dir"
            )
        return arr
