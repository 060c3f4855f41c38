"""Build a token store (:mod:`rnb.data.store`) from a source, resumably, in chunks.

The build holds the entry's file lock and writes into ``<fingerprint>.partial/`` in
chunks of ``chunk_size`` examples, each published by an atomic rename. A killed build
leaves its finished chunks there: the next build skips them (re-reading but not
re-tokenising those records) and carries on. Only a complete store is renamed to
``<fingerprint>/``. A data error (``ValueError``) removes the partial folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from rnb.caching import cache_lock
from rnb.data.store import FORMAT_VERSION, TokenStore, check_chunk_size
from rnb.data.tokenize import encode_rows

__all__ = ["build_store"]

log = logging.getLogger(__name__)

_SUB = 1024  # examples per tokenizer call


def _write_npy(path: Path, parts: Iterable[np.ndarray], dtype: str, n: int) -> None:
    """Write ``[n]`` values of ``dtype`` from ``parts`` as one ``.npy`` file, part by part
    (plain writes: nothing of the whole array is ever mapped or held)."""
    with path.open("wb") as f:
        header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n,)}
        np.lib.format.write_array_header_1_0(f, header)
        for part in parts:
            np.ascontiguousarray(part, dtype=dtype).tofile(f)


def _chunk_path(partial: Path, k: int) -> Path:
    return partial / f"chunk_{k:06d}.npz"


def _encode(
    batch: list[tuple[str, str | None]], tokenizer: Any, max_length: int, first: int
) -> dict[str, np.ndarray]:
    """Flat ``tokens`` (int32), ``lengths`` (int64) and ``lab_from`` (int32) of one chunk.

    Tokenised ``_SUB`` examples at a time, each turned into NumPy at once: the
    tokenizer's per-text objects never pile up for a whole chunk.
    """
    tokens, lengths, lab_from = [], [], []
    for at in range(0, len(batch), _SUB):
        part = batch[at : at + _SUB]
        targets = None if part[0][1] is None else [t for _, t in part]
        seqs, labs = encode_rows(
            tokenizer, [s for s, _ in part], targets, max_length, first=first + at
        )
        lengths.append(np.array([len(q) for q in seqs], dtype=np.int64))
        tokens.append(np.fromiter((t for q in seqs for t in q), np.int32, int(lengths[-1].sum())))
        lab_from.append(labs)
    return {
        "tokens": np.concatenate(tokens),
        "lengths": np.concatenate(lengths),
        "lab_from": np.concatenate(lab_from),
    }


def _encode_chunks(
    pairs: Iterator[tuple[str, str | None]],
    n: int,
    partial: Path,
    tokenizer: Any,
    max_length: int,
    chunk_size: int,
    progress: bool,
) -> int:
    """Tokenise ``pairs`` into chunk files, skipping chunks already written; returns the
    number of chunks."""
    from tqdm.auto import tqdm

    n_chunks = max(1, -(-n // chunk_size))
    with tqdm(total=n, desc="token store", unit="doc", disable=not progress) as bar:
        for k in range(n_chunks):
            batch = list(islice(pairs, chunk_size))
            out = _chunk_path(partial, k)
            if not out.exists():  # else written by an interrupted build: resume after it
                arrays = _encode(batch, tokenizer, max_length, k * chunk_size)
                tmp = partial / f".chunk_{k:06d}.tmp.npz"
                np.savez(tmp, **arrays)
                tmp.replace(out)
            bar.update(len(batch))
    return n_chunks


def _assemble(partial: Path, n_chunks: int, n: int) -> None:
    """Concatenate the chunk files into the store's flat arrays, then drop the chunks."""

    def parts(key: str) -> Iterator[np.ndarray]:
        for k in range(n_chunks):
            with np.load(_chunk_path(partial, k)) as z:
                yield z[key]

    lengths = [len(z) for z in parts("lab_from")]
    if sum(lengths) != n:
        raise RuntimeError(f"token store {partial}: chunks hold {sum(lengths)} of {n} rows")
    total = sum(int(p.sum()) for p in parts("lengths"))
    _write_npy(partial / "tokens.npy", parts("tokens"), "<i4", total)
    _write_npy(partial / "lab_from.npy", parts("lab_from"), "<i4", n)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(list(parts("lengths"))))])
    _write_npy(partial / "offsets.npy", [offsets], "<i8", n + 1)
    for k in range(n_chunks):
        _chunk_path(partial, k).unlink()


def build_store(
    root: str | os.PathLike[str],
    fingerprint: str,
    pairs: Callable[[], Iterator[tuple[str, str | None]]],
    n: int,
    tokenizer: Any,
    max_length: int,
    chunk_size: int = 20_000,
    progress: bool = True,
) -> TokenStore:
    """The store ``<root>/<fingerprint>``, built from ``pairs()`` unless it exists.

    Args:
        root: ``<cache_dir>/token_store``.
        fingerprint: from :func:`store_fingerprint`.
        pairs: returns a fresh iterator of ``(source, target | None)`` texts, one per
            example, in store order (``target`` is ``None`` without ``data.target_field``).
        n: number of examples ``pairs()`` yields.
        tokenizer: the run's tokenizer.
        max_length: ``data.max_length``.
        chunk_size: examples per resumable chunk (``data.store_chunk_size``).
        progress: show a tqdm progress bar.

    Returns:
        The opened store.

    Raises:
        ValueError: an example keeps no target token (the partial build is removed), or
            ``chunk_size`` is not a whole number >= 1 (nothing is written).
    """
    chunk_size = check_chunk_size(chunk_size)
    final = Path(root) / fingerprint
    if (final / "meta.json").exists():
        return TokenStore(final)
    with cache_lock(final):
        if (final / "meta.json").exists():  # another process built it while we waited
            return TokenStore(final)
        partial = final.with_name(final.name + ".partial")
        size_file = partial / "chunk_size"
        if partial.exists() and (
            not size_file.exists() or size_file.read_text(encoding="utf-8") != str(chunk_size)
        ):
            shutil.rmtree(partial)  # chunks of another size (or unknown): start over
        partial.mkdir(parents=True, exist_ok=True)
        size_file.write_text(str(chunk_size), encoding="utf-8")
        done = len(list(partial.glob("chunk_*.npz")))
        log.info(
            "token store %s: %d examples%s",
            final,
            n,
            f" (resuming after {done} chunks)" * bool(done),
        )
        try:
            n_chunks = _encode_chunks(
                pairs(), n, partial, tokenizer, max_length, chunk_size, progress
            )
        except ValueError:
            shutil.rmtree(partial, ignore_errors=True)  # a data error: nothing to resume
            raise
        _assemble(partial, n_chunks, n)
        meta = {"n": n, "max_length": max_length, "pad_id": int(tokenizer.pad_token_id)}
        meta.update(fingerprint=fingerprint, format=FORMAT_VERSION, chunk_size=chunk_size)
        (partial / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        size_file.unlink()  # resume bookkeeping: meta.json records the chunk size
        os.rename(partial, final)  # publish: only a complete store is ever opened
    return TokenStore(final)
