"""File readers: one per source format, each yielding :class:`Record` s with provenance.

Every reader applies the same two load-time policies, so later stages (tokenizer training,
embedders, reports) only ever see valid ``str`` values and real missing values:

* **Missing values** (a Parquet / dataset null, a JSON ``null`` or ``NaN``) become
  ``None`` -- never the text ``'nan'`` / ``'None'``. CSV has no null: its cells are read
  as written, an empty cell as ``""`` (like ``""`` in JSONL). Whether a missing
  value is an error is decided per field role by :func:`rnb.data.fields.check_records`.
* **Text decoding** uses ``data.encoding`` with ``data.encoding_errors``: ``strict``
  raises an error naming the file, the line and both keys; ``replace`` substitutes
  U+FFFD for each undecodable byte sequence (and each lone surrogate from a JSON escape
  such as ``"\\udce9"``) and logs how many were replaced.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ENCODING_ERRORS", "Record", "TextPolicy", "origin", "read_file", "read_hf"]

log = logging.getLogger(__name__)

#: Accepted values of ``data.encoding_errors``.
ENCODING_ERRORS = ("strict", "replace")
_SURROGATE = re.compile("[\ud800-\udfff]")
_FIX = "set data.encoding to the file's encoding (e.g. data.encoding=latin-1) or "
_FIX += "data.encoding_errors=replace to replace it with U+FFFD"


class Record(dict):
    """A record (field -> value) that remembers where it came from.

    Attributes:
        origin: ``"<file>, line 3"`` (JSONL), ``"<file>, row 3"`` (CSV / Parquet /
            dataset; 1-based data rows, a CSV header is not counted) or
            ``"<file>, item 3"`` (JSON array). Kept through the eval split's shuffle.
    """

    origin: str = ""


def origin(records: Any, i: int) -> str:
    """Where record ``i`` of ``records`` came from (``"record i"`` without provenance)."""
    return getattr(records[i], "origin", "") or f"record {i}"


class TextPolicy:
    """``data.encoding`` + ``data.encoding_errors`` for one file; counts replacements.

    Args:
        path: the file (for messages).
        encoding: a Python codec name.
        errors: ``strict`` or ``replace``.

    Raises:
        ValueError: unknown codec or errors policy (names the key).
    """

    def __init__(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> None:
        try:
            codecs.lookup(encoding)
        except LookupError as err:
            raise ValueError(f"data.encoding='{encoding}' is not a known text encoding") from err
        if errors not in ENCODING_ERRORS:
            raise ValueError(f"data.encoding_errors='{errors}': choose one of {ENCODING_ERRORS}")
        self.path, self.encoding, self.errors = path, encoding, errors
        self.replaced = 0
        self.first: str | None = None  # where the first replacement happened

    def decode(self, data: bytes, where: Callable[[int], str]) -> str:
        """Decode ``data``; ``where(byte_offset)`` names the position for errors."""
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as err:
            if self.errors == "strict":
                bad = data[err.start : err.end].hex(" ")
                raise ValueError(
                    f"{where(err.start)}: bytes [{bad}] are not valid {self.encoding} "
                    f"(data.encoding='{self.encoding}', data.encoding_errors=strict): {_FIX}"
                ) from None
            text = data.decode(self.encoding, "replace")
            # U+FFFD already present in the file is text, not a replacement
            self.replaced += text.count("\ufffd") - self._present(data)
            self.first = self.first or where(err.start)
            return text

    def _present(self, data: bytes) -> int:
        """U+FFFD characters the file itself holds (text, not replacements)."""
        try:
            return data.count("\ufffd".encode(self.encoding))
        except UnicodeEncodeError:  # e.g. latin-1 cannot hold U+FFFD at all
            return 0

    def text(self, value: str, where: str, field: str) -> str:
        """Check a decoded string for lone surrogates (JSON ``\\udcXX`` escapes)."""
        if value.isascii() or not _SURROGATE.search(value):
            return value
        if self.errors == "strict":
            bad = _SURROGATE.search(value).group()  # type: ignore[union-attr]
            raise ValueError(
                f"{where}: field '{field}' holds the lone surrogate {bad!a} (an escape "
                f"that is not a character; data.encoding_errors=strict): fix the file or set "
                "data.encoding_errors=replace to replace it with U+FFFD"
            )
        value, n = _SURROGATE.subn("\ufffd", value)
        self.replaced += n
        self.first = self.first or f"{where}, field '{field}'"
        return value

    def clean(self, row: dict[str, Any], where: str) -> Record:
        """Normalise one row: missing -> ``None``, bytes decoded, strings checked."""
        rec = Record()
        rec.origin = where
        for key, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif isinstance(value, bytes):
                at = f"{where}, field '{key}'"
                value = self.decode(value, lambda _o, at=at: at)
            if isinstance(value, str):
                value = self.text(value, where, key)
            rec[key] = value
        return rec

    def report(self) -> None:
        """Log the replacement count (``replace`` policy)."""
        if self.replaced:
            log.warning(
                "%s: replaced %d undecodable byte sequence(s) / lone surrogate(s) with U+FFFD, "
                "first at %s (data.encoding='%s', data.encoding_errors=replace)",
                self.path,
                self.replaced,
                self.first,
                self.encoding,
            )


def _line_of(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, byte column) of ``offset`` in ``data``."""
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _read_text(path: Path, policy: TextPolicy) -> str:
    data = path.read_bytes()

    def where(offset: int) -> str:
        line, col = _line_of(data, offset)
        return f"{path}, line {line} (byte {col})"

    text = policy.decode(data, where)
    # a byte-order mark (Excel's CSV export) is not part of the first field name / record
    return text[1:] if text.startswith("\ufeff") else text


def _not_object(where: str, row: Any, key: str) -> ValueError:
    return ValueError(
        f"{where}: expected a JSON object (field -> value), got {type(row).__name__} ({key})"
    )


def _jsonl(path: Path, policy: TextPolicy, key: str) -> list[Record]:
    rows = []
    # split on "\n" only: JSON strings may hold a raw U+2028 that str.splitlines would cut
    for lineno, line in enumerate(_read_text(path, policy).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: invalid JSON ({err.msg}; {key})") from err
        if not isinstance(row, dict):
            raise _not_object(where, row, key)
        rows.append(policy.clean(row, where))
    return rows


def _json(path: Path, policy: TextPolicy, key: str) -> list[Record]:
    text = _read_text(path, policy)
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: invalid JSON ({err.msg}; {key})") from err
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(
            f"{key}='{path}': expected a JSON array of objects or {{\"data\": [...]}}, "
            f"got {type(data).__name__}"
        )
    rows = []
    for i, row in enumerate(data, 1):
        where = f"{path}, item {i}"
        if not isinstance(row, dict):
            raise _not_object(where, row, key)
        rows.append(policy.clean(row, where))
    return rows


def _csv(path: Path, policy: TextPolicy, key: str, sep: str) -> list[Record]:
    import pandas as pd

    text = _read_text(path, policy)
    try:
        # Every cell is read as written, as a str: no '1.0' domains, no lost leading zeros,
        # and no NaN (pandas' default turns '', 'NA', 'null', 'None' into NaN, which became
        # the text 'nan'). CSV has no null: an empty cell is the empty string, exactly like
        # "" in JSONL -- an empty text or label is then reported as such, while an empty
        # optional text field (Alpaca's `input`) inside a multi-field text stays allowed.
        # Cells absent from a short row are still NaN and become None (missing) below.
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except pd.errors.ParserError as err:
        raise ValueError(f"{key}='{path}': unreadable CSV ({err})") from err
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [policy.clean(r, f"{path}, row {i}") for i, r in enumerate(rows, 1)]


def _parquet(path: Path, policy: TextPolicy, key: str) -> list[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()  # nulls are None, binary columns bytes
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{key}='{path}': unreadable Parquet file ({err})") from err
    return [policy.clean(r, f"{path}, row {i}") for i, r in enumerate(rows, 1)]


def _load_from_disk(p: Path, key: str) -> Any:
    import datasets

    state = p / "state.json"
    if state.exists() and json.loads(state.read_text(encoding="utf-8")).get("_data_files") == []:
        return []  # a saved 0-row dataset, which datasets itself fails to load (IndexError)
    try:
        return datasets.load_from_disk(str(p))
    except (FileNotFoundError, IndexError, KeyError, ValueError) as err:
        raise ValueError(
            f"{key}='{p}': not a readable datasets.save_to_disk directory ({err!r})"
        ) from err


def read_hf(
    path_or_name: str, split: str | None, policy: TextPolicy, key: str = "data.train_path"
) -> list[Record]:
    """Rows of a ``datasets.save_to_disk`` directory or a hub dataset (``data.split``)."""
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("HF datasets support needs `pip install 'rnb[hf]'`") from err
    p = Path(path_or_name)
    ds = _load_from_disk(p, key) if p.exists() else datasets.load_dataset(path_or_name)
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        if name not in ds:
            raise ValueError(f"data.split='{name}' not in dataset splits {list(ds)}")
        ds = ds[name]
    return [policy.clean(dict(r), f"{path_or_name}, row {i}") for i, r in enumerate(ds, 1)]


def read_file(path: Path, key: str, policy: TextPolicy) -> list[Record]:
    """Records of one local file, by suffix.

    Raises:
        ValueError: unsupported suffix, unreadable content or undecodable text (names
            the file, the line / row and the key).
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path, policy, key)
    if suffix == ".json":
        return _json(path, policy, key)
    if suffix in (".parquet", ".pq"):
        return _parquet(path, policy, key)
    if suffix in (".csv", ".tsv"):
        return _csv(path, policy, key, "\t" if suffix == ".tsv" else ",")
    raise ValueError(
        f"{key}='{path}': unsupported format '{suffix}' "
        "(use .jsonl, .json, .parquet, .csv, .tsv, or a save_to_disk directory)"
    )
