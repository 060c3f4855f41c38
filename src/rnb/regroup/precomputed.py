"""Embeddings computed elsewhere (images, other modalities): a ``.npy`` file or a column."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rnb.regroup.cache import fingerprint_array, fingerprint_config

__all__ = ["PrecomputedEmbedder"]


def _kind(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class PrecomputedEmbedder:
    """Embeddings computed elsewhere (images, other modalities): a ``.npy`` file or a column.

    File mode (``path``): the ``.npy`` rows align with the texts of the split being
    embedded; it is memory-mapped, and returned without a copy when already float32.
    ``eval_path`` holds the rows for the evaluation split (:meth:`encode_eval`).
    Column mode (``column``): :meth:`encode` receives the column values (one vector per
    example) instead of texts; :meth:`from_records` pulls them out of row dicts.

    Args:
        path: ``.npy`` file of shape ``[n_train, d]``.
        column: Dataset column holding one vector per example.
        eval_path: ``.npy`` file for the evaluation split (file mode only).
        progress: Show a tqdm bar while validating rows.
    """

    def __init__(
        self,
        path: str | None = None,
        column: str | None = None,
        eval_path: str | None = None,
        progress: bool = True,
    ) -> None:
        if (path is None) == (column is None):
            raise ValueError(
                "regroup.embedder: set exactly one of regroup.embedder.path or regroup.embedder.column"
            )
        if eval_path is not None and path is None:
            raise ValueError(
                "regroup.embedder.eval_path: only valid together with regroup.embedder.path"
            )
        self.path, self.column, self.eval_path = path, column, eval_path
        self.progress = bool(progress)
        self.dim: int | None = None
        self._file_fp: dict[str, tuple[tuple[int, int], str]] = {}

    def _validate(self, arr: np.ndarray, key: str, n: int | None) -> np.ndarray:
        if arr.ndim != 2:
            raise ValueError(f"{key}: expected a 2-D [n, d] array, got shape {arr.shape}")
        if n is not None and arr.shape[0] != n:
            raise ValueError(
                f"{key}: {arr.shape[0]} embedding rows but {n} examples in the split; "
                "rows must align with the dataset"
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{key}: expected numeric values, got dtype {arr.dtype}")
        step = 65536  # check a memmap block by block instead of reading it all at once
        for lo in tqdm(range(0, arr.shape[0], step), desc="check", disable=not self.progress):
            bad = ~np.isfinite(arr[lo : lo + step]).all(axis=1)
            if bad.any():
                raise ValueError(f"{key}: NaN or inf in row {lo + int(np.argmax(bad))}")
        self.dim = int(arr.shape[1])
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    def _load_file(self, path: str, key: str, n: int | None) -> np.ndarray:
        if not os.path.isfile(path):
            raise ValueError(f"{key}: file not found: {path!r}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{key}: {path!r} is not a numeric .npy file ({e})") from e
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{key}: {path!r} must be a single .npy array, not an archive")
        return self._validate(arr, key, n)

    def _vectors(self, values: Sequence[Any], n: int | None = None) -> np.ndarray:
        try:
            arr = np.asarray([np.asarray(v, dtype=np.float32) for v in values], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"regroup.embedder.column={self.column!r}: not equal-length vectors"
            ) from e
        return self._validate(arr, f"regroup.embedder.column={self.column!r}", n)

    def from_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Stack ``records[i][column]`` into a float32 ``[n, d]`` array."""
        if self.column is None:
            raise ValueError("regroup.embedder.column: from_records needs a column name")
        values = []
        for i, r in enumerate(records):
            if self.column not in r:
                raise ValueError(
                    f"regroup.embedder.column={self.column!r} not in record {i} (keys: {sorted(r)})"
                )
            values.append(r[self.column])
        return self._vectors(values)

    def encode(self, texts: Sequence[Any]) -> np.ndarray:
        """Training-split embeddings: rows of ``path`` (checked against ``len(texts)``), or,
        in column mode, ``texts`` are the column values themselves."""
        if self.path is None:
            return self._vectors(texts)
        return self._load_file(self.path, "regroup.embedder.path", len(texts))

    def encode_eval(self, texts: Sequence[Any]) -> np.ndarray:
        """Evaluation-split embeddings: rows of ``eval_path``, or the column values."""
        if self.path is None:
            return self._vectors(texts)
        if self.eval_path is None:
            raise ValueError("regroup.embedder.eval_path: needed to embed the evaluation split")
        return self._load_file(self.eval_path, "regroup.embedder.eval_path", len(texts))

    def _content_fp(self, path: str) -> str | None:
        # Hash file contents (not the path): a rewritten file must change the cache key.
        # Memoised on (size, mtime) so repeated calls do not re-read large files.
        if not os.path.isfile(path):
            return None
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
        if path not in self._file_fp or self._file_fp[path][0] != stamp:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            self._file_fp[path] = (stamp, fingerprint_array(arr))
        return self._file_fp[path][1]

    def fingerprint(self) -> str:
        """Hash of the class, column name, and the contents of ``path``/``eval_path``.

        In column mode the vectors travel with the data, so the data fingerprint must
        cover them (e.g. :func:`rnb.regroup.cache.fingerprint_array`)."""
        cfg = {
            "column": self.column,
            "path": None if self.path is None else self._content_fp(self.path),
            "eval_path": None if self.eval_path is None else self._content_fp(self.eval_path),
        }
        return fingerprint_config(_kind(self), cfg)
