"""Tiny data files in every source format (for the loader and bad-input tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY

#: The default TINY run (model, trainer) on a small ``data=files`` file instead of the testbed.
FILES = [
    *(o for o in TINY if not o.startswith("data.")),
    "data=files",
    "data.text_fields=[text]",
    "data.domain_field=source",
    "data.eval_fraction=0.2",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "data.max_length=32",
    "data.tokenizer.vocab_size=300",
    "data.tokenizer.min_frequency=1",
]
#: Every source format ``load_records`` reads (``hf`` = a ``datasets.save_to_disk`` dir).
FORMATS = ("jsonl", "json", "csv", "parquet", "hf")
#: 1-based position of record index 2 as each reader reports it.
POS = {"jsonl": "line 3", "json": "item 3", "csv": "row 3", "parquet": "row 3", "hf": "row 3"}
#: Where each reader reports an undecodable byte in record index 2.
BYTE_POS = {"jsonl": "line 3", "json": "line 4", "csv": "line 4", "parquet": "row 3", "hf": "row 3"}


def write(fmt: str, rows: list[dict], tmp: Path, name: str = "d") -> Path:
    """``rows`` in format ``fmt`` (``None`` = null / empty cell; an absent key stays absent)."""
    if fmt == "jsonl":
        p = tmp / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        p = tmp / f"{name}.json"  # one item per line: item i is on line i + 1
        p.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]", encoding="utf-8")
    elif fmt == "csv":
        p = tmp / f"{name}.csv"
        pd.DataFrame(rows).to_csv(p, index=False)
    elif fmt == "parquet":
        p = tmp / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
    else:
        datasets = pytest.importorskip("datasets")
        p = tmp / f"{name}_hf"
        datasets.Dataset.from_list(rows).save_to_disk(str(p))
    return p


def write_bytes_text(fmt: str, rows: list[dict], tmp: Path, bad: bytes) -> Path:
    """Like :func:`write`, but record index 2's ``text`` holds the raw bytes ``bad``.

    Text formats get the bytes inside the file; Parquet and datasets (whose strings are
    always valid UTF-8) get a binary ``text`` column.
    """
    rows = [dict(r) for r in rows]
    if fmt in ("jsonl", "json", "csv"):
        rows[2]["text"] = "caf@@ au lait"
        path = write(fmt, rows, tmp)
        path.write_bytes(path.read_bytes().replace(b"@@", bad))
        return path
    for i, r in enumerate(rows):
        r["text"] = b"caf" + bad + b" au lait" if i == 2 else str(r["text"]).encode()
    if fmt == "parquet":
        path = tmp / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    datasets = pytest.importorskip("datasets")
    path = tmp / "d_hf"
    features = datasets.Features(
        {k: datasets.Value("binary" if k == "text" else "string") for k in rows[0]}
    )
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(path))
    return path


def write_empty(fmt: str, tmp: Path) -> Path:
    """A file of format ``fmt`` without records (a zero-byte file where that is valid)."""
    if fmt in ("jsonl", "csv"):
        p = tmp / f"d.{fmt}"
        p.write_bytes(b"")
    elif fmt == "json":
        p = tmp / "d.json"
        p.write_text("[]", encoding="utf-8")
    elif fmt == "parquet":
        p = tmp / "d.parquet"
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), p)
    else:
        datasets = pytest.importorskip("datasets")
        p = tmp / "d_hf"
        features = datasets.Features({"text": datasets.Value("string")})
        datasets.Dataset.from_dict({"text": []}, features=features).save_to_disk(str(p))
    return p
