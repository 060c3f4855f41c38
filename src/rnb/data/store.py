"""The token store: a source's examples tokenised once into memory-mapped flat arrays.

Layout of ``<cache_dir>/token_store/<fingerprint>/`` (NumPy ``.npy`` files, opened with
``mmap_mode="r"``, so a corpus larger than memory is paged in only where it is read):

* ``tokens.npy``   ``[T]`` int32: every example's ids (``source [+ target] + eos``, cut to
  ``data.max_length``), concatenated in record order;
* ``offsets.npy``  ``[n + 1]`` int64: example ``i`` is ``tokens[offsets[i]:offsets[i+1]]``;
* ``lab_from.npy`` ``[n]`` int32: first position that carries loss (``0`` without
  ``data.target_field``);
* ``meta.json``: sizes, ``max_length``, pad id, fingerprint; written last.

The fingerprint (:func:`store_fingerprint`) covers the source's content hash, the fields
and missing-value policy that select and build the texts, the tokenizer's full definition,
``max_length`` and the code version, so any change builds a new store.

Building (:func:`~rnb.data.store_build.build_store`, in :mod:`rnb.data.store_build`) holds the entry's file lock and writes into
``<fingerprint>.partial/`` in chunks of ``chunk_size`` examples, each published by an
atomic rename. A killed build leaves its finished chunks there: the next build skips
them (re-reading but not re-tokenising those records) and carries on. Only a complete
store is renamed to ``<fingerprint>/``, so a half-written store is never opened. A data
error (``ValueError``) removes the partial folder: rebuilding it would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnb.caching import code_version
from rnb.config import count

__all__ = ["FORMAT_VERSION", "StoreSplit", "TokenStore", "check_chunk_size", "store_fingerprint"]

#: Format version of the store; bump when its layout or content changes.
FORMAT_VERSION = 1
_ARRAYS = ("tokens", "offsets", "lab_from")


def check_chunk_size(value: Any) -> int:
    """``data.store_chunk_size`` as an int >= 1 (`rnb.config.count`).

    Raises:
        ValueError: ``value`` is not a whole number >= 1 (``0``, ``-5``, ``1.5``, ``"abc"``,
            a bool): a fraction is refused rather than truncated to another chunk size.
    """
    what = "examples per resumable chunk of the token store build, default 20000"
    return count(
        int(value) if isinstance(value, np.integer) else value, "data.store_chunk_size", what
    )


def store_fingerprint(*parts: object) -> str:
    """Cache key of a store: ``parts`` (source hash, fields, tokenizer, ...) + code version."""
    h = hashlib.sha256(repr((code_version("token_store", FORMAT_VERSION), *parts)).encode())
    return h.hexdigest()[:16]


class TokenStore:
    """A published store, memory-mapped read-only.

    Args:
        path: the store folder (``<cache_dir>/token_store/<fingerprint>``).

    Raises:
        FileNotFoundError: ``meta.json`` is missing (not a complete store).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        self.n, self.max_length = int(meta["n"]), int(meta["max_length"])
        self.pad_id = int(meta["pad_id"])
        self.fingerprint = str(meta["fingerprint"])
        self._maps: dict[str, np.ndarray] | None = None

    def _arrays(self) -> dict[str, np.ndarray]:
        # opened lazily (and again after pickling): a memmap pickles as a full copy
        if self._maps is None:
            self._maps = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return self.n

    def loss_tokens(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows)]`` int64: positions ``1..`` of each row that carry loss (the count of
        ``labels[:, 1:] != -100``, what UniMax's token budget counts)."""
        a = self._arrays()
        rows = np.asarray(rows, dtype=np.int64)
        length = a["offsets"][rows + 1] - a["offsets"][rows]
        return np.maximum(length - np.maximum(a["lab_from"][rows].astype(np.int64), 1), 0)

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask, labels)`` of ``rows``, each ``[b, max_length]`` int64,
        exactly as :func:`rnb.data.tokenize.dense_rows` lays them out."""
        a = self._arrays()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        b, L = rows.size, self.max_length
        start, stop = a["offsets"][rows], a["offsets"][rows + 1]
        length = stop - start
        pos = np.arange(L)
        valid = pos[None, :] < length[:, None]  # [b, L]
        ids = np.full((b, L), self.pad_id, dtype=np.int64)
        flat = (start[:, None] + pos[None, :])[valid]
        ids[valid] = a["tokens"][flat]
        labels = np.where(valid & (pos[None, :] >= a["lab_from"][rows][:, None]), ids, -100)
        return ids, valid.astype(np.int64), labels


class StoreSplit:
    """A split (a subset of a store's rows) served from the memory-mapped store.

    Same surface as :class:`rnb.data.tokenize.TokenizedSplit`: ``split[i]`` is a dict of
    ``input_ids``, ``attention_mask``, ``labels`` (``[L]`` int64) and ``domain``;
    :meth:`take` reads a batch. The full ``[n, L]`` arrays (``input_ids`` ...) are
    materialised only when asked for (small splits, tests).

    Args:
        store: the token store.
        rows: ``[n]`` int64 store rows of this split, in split order.
        domain: ``[n]`` int64 domain id of each example.
    """

    def __init__(self, store: TokenStore, rows: np.ndarray, domain: np.ndarray) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.domain = np.asarray(domain, dtype=np.int64)
        self._dense: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Batch of split positions ``idx``: ``{key: [b, L]}`` plus ``domain`` ``[b]``."""
        idx = np.asarray(idx, dtype=np.int64)
        ids, mask, labels = self.store.rows(self.rows[idx])
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "domain": self.domain[idx],
        }

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        row = self.take(np.array([i]))
        return {k: v[0] for k, v in row.items()}

    def __getitems__(self, idx: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """Rows ``idx`` as ``split[i]`` gives them, read in one :meth:`take`: the DataLoader
        fetches a whole batch through this (one vectorised read of the memory map per batch
        instead of one per example)."""
        batch = self.take(np.asarray(idx, dtype=np.int64))
        return [{k: v[j] for k, v in batch.items()} for j in range(len(idx))]

    def _all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._dense is None:
            self._dense = self.store.rows(self.rows)
        return self._dense

    @property
    def input_ids(self) -> np.ndarray:
        """``[n, L]`` int64 (materialised on first access)."""
        return self._all()[0]

    @property
    def attention_mask(self) -> np.ndarray:
        """``[n, L]`` int64 (materialised on first access)."""
        return self._all()[1]

    @property
    def labels(self) -> np.ndarray:
        """``[n, L]`` int64, ``-100`` where no loss is taken (materialised on first access)."""
        return self._all()[2]


def __getattr__(name: str) -> Any:
    """``rnb.data.store.build_store`` still resolves (it lives in :mod:`rnb.data.store_build`,
    which imports this module, so it is looked up lazily instead of imported here)."""
    if name == "build_store":
        from rnb.data.store_build import build_store

        return build_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
