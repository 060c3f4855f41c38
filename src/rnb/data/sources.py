"""Loading training / evaluation records from files, HF datasets or the built-in testbed.

:func:`load_records` returns :class:`rnb.data.readers.Record` s (plain dicts that know
their file and line / row) with missing values normalised to ``None`` and text decoded
under ``data.encoding`` / ``data.encoding_errors``. :func:`build_texts` turns records
into the text the model trains on and the embedder sees; :func:`column` extracts label
fields (predefined domain, reference); :func:`check_records` applies ``data.on_missing``;
:func:`split_records` is the seeded eval split. Errors name the file, the record and the
config key.
"""

from __future__ import annotations

from pathlib import Path

from rnb.data.fields import FieldRole, build_texts, check_records, column, field_roles
from rnb.data.readers import Record, TextPolicy, read_file, read_hf
from rnb.data.split import split_records

__all__ = [
    "FieldRole",
    "Record",
    "build_texts",
    "check_records",
    "column",
    "field_roles",
    "load_records",
    "split_records",
]


def load_records(
    path: str,
    key: str = "data.train_path",
    split: str | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
) -> list[Record]:
    """Load records from ``.jsonl``/``.json``, ``.parquet``, ``.csv``/``.tsv``, or HF data.

    Args:
        path: a file, a directory written by ``datasets.save_to_disk``, or ``hf:<name>``
            for a hub dataset (needs network).
        key: the config key holding ``path``, for error messages.
        split: split name for HF dataset dicts (``data.split``).
        encoding: text encoding of JSONL / JSON / CSV files (``data.encoding``); also
            decodes binary (bytes) columns of Parquet files and datasets.
        encoding_errors: ``strict`` (error naming file and line) or ``replace`` (U+FFFD,
            count logged) for undecodable bytes and lone surrogates
            (``data.encoding_errors``).

    Returns:
        Records with missing values (nulls, ``NaN``, absent keys) as ``None``; CSV
        cells as written (an empty cell is ``""``).

    Raises:
        FileNotFoundError: if a local path does not exist.
        ValueError: on unreadable or undecodable content, or a file without records.
    """
    policy = TextPolicy(path, encoding, encoding_errors)
    if path.startswith("hf:"):
        rows = read_hf(path[3:], split, policy, key)
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{key}='{path}' does not exist")
        rows = read_hf(str(p), split, policy, key) if p.is_dir() else read_file(p, key, policy)
    policy.report()
    if not rows:
        raise ValueError(f"{key}='{path}' contains no records")
    return rows
