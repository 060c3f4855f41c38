"""Record sources read as streams, with a content fingerprint (for the token store).

A corpus larger than memory is never held as a list of dicts: :class:`FileSource`
yields :class:`~rnb.data.readers.Record` s one by one, under the same load-time policies
and with the same errors (file, line / row, config key) as
:func:`rnb.data.sources.load_records`. JSONL (in an ASCII-compatible encoding) and
Parquet stream record by record / row group by row group; JSON, CSV/TSV and datasets
directories are read whole by their reader and then yielded (their formats or libraries
have no cheap streaming path here). Every pass over a source reads the file again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from rnb.data.readers import Record, TextPolicy, read_file, read_hf

__all__ = ["FileSource", "ListSource", "content_hash"]

_HASHES: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, or of every file under a folder
    (:func:`rnb.run.fingerprint.sha256_path`), memoised per process by (path, size,
    mtime), so the passes of one run hash once."""
    from rnb.run.fingerprint import sha256_path

    p = Path(path)
    stat = p.stat()
    memo = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        _HASHES[memo] = sha256_path(p)
    return _HASHES[memo]


def _ascii_compatible(encoding: str) -> bool:
    """Lines of this encoding end in the byte ``\\n`` (UTF-8, Latin-1, ...; not UTF-16)."""
    try:
        return "\n{}".encode(encoding) == b"\n{}"
    except (LookupError, UnicodeEncodeError):
        return False


def _jsonl_stream(path: Path, policy: TextPolicy, key: str) -> Iterator[Record]:
    """Records of a JSONL file, line by line (errors as the whole-file reader's)."""
    with path.open("rb") as f:
        # split on b"\n" only: JSON strings may hold a raw U+2028 that splitlines would cut
        for lineno, raw in enumerate(f, 1):
            where = f"{path}, line {lineno}"
            text = policy.decode(raw, lambda off, w=where: f"{w} (byte {off + 1})")
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark is not part of the first record
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg}; {key})") from err
            if not isinstance(row, dict):
                raise ValueError(
                    f"{where}: expected a JSON object (field -> value), got "
                    f"{type(row).__name__} ({key})"
                )
            yield policy.clean(row, where)


def _parquet_stream(path: Path, policy: TextPolicy, key: str) -> Iterator[Record]:
    """Records of a Parquet file, one record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=8192)
        i = 0
        for batch in batches:
            for row in batch.to_pylist():  # nulls are None, binary columns bytes
                i += 1
                yield policy.clean(row, f"{path}, row {i}")
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{key}='{path}': unreadable Parquet file ({err})") from err


class FileSource:
    """The records of ``data.train_path`` / ``data.eval_path``, as a re-iterable stream.

    Args:
        path: a file, a ``datasets.save_to_disk`` folder, or ``hf:<name>``.
        key: the config key holding ``path`` (named in errors).
        split: ``data.split`` (HF dataset dicts).
        encoding: ``data.encoding``.
        encoding_errors: ``data.encoding_errors``.

    Raises:
        FileNotFoundError: the local path does not exist (on iteration).
        ValueError: unreadable / undecodable content, or no record at all (on iteration;
            messages name the file, the line / row and the key).
    """

    def __init__(
        self,
        path: str,
        key: str,
        split: str | None = None,
        encoding: str = "utf-8",
        encoding_errors: str = "strict",
    ) -> None:
        self.path, self.key, self.split = path, key, split
        self.encoding, self.encoding_errors = encoding, encoding_errors

    def __str__(self) -> str:
        return f"{self.key}='{self.path}'"

    def _local(self) -> Path:
        p = Path(self.path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{self.key}='{self.path}' does not exist")
        return p

    def _rows(self, policy: TextPolicy) -> Iterator[Record]:
        if self.path.startswith("hf:"):
            yield from read_hf(self.path[3:], self.split, policy, self.key)
            return
        p = self._local()
        suffix = p.suffix.lower()
        if p.is_dir():
            yield from read_hf(str(p), self.split, policy, self.key)
        elif suffix in (".jsonl", ".ndjson") and _ascii_compatible(self.encoding):
            yield from _jsonl_stream(p, policy, self.key)
        elif suffix in (".parquet", ".pq"):
            yield from _parquet_stream(p, policy, self.key)
        else:
            yield from read_file(p, self.key, policy)

    def __iter__(self) -> Iterator[Record]:
        policy = TextPolicy(self.path, self.encoding, self.encoding_errors)
        n = 0
        for rec in self._rows(policy):
            n += 1
            yield rec
        policy.report()
        if n == 0:
            raise ValueError(f"{self.key}='{self.path}' contains no records")

    @property
    def fingerprint(self) -> str:
        """Content hash of the file / folder plus the settings that decide its records.

        A hub dataset (``hf:<name>``) has no local bytes: its name and split stand in.
        """
        content = self.path if self.path.startswith("hf:") else content_hash(self._local())
        return repr((content, self.split, self.encoding, self.encoding_errors))


class ListSource:
    """Records already in memory (the built-in testbed), fingerprinted by their content.

    Args:
        records: the records, in order (JSON-serialisable values).
        name: shown in messages.
    """

    def __init__(self, records: Sequence[dict], name: str) -> None:
        self.records, self.name = records, name
        self._fingerprint: str | None = None

    def __str__(self) -> str:
        return self.name

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the records' JSON."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for r in self.records:
                h.update(json.dumps(r, sort_keys=True, default=repr).encode())
                h.update(b"\n")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
