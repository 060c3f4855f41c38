"""Loading training / evaluation records from files, HF datasets or the built-in testbed.

Every loader returns a list of plain dict records. :func:`build_texts` turns records into
the text the model trains on and the embedder sees; :func:`column` extracts optional
label fields (predefined domain, reference) with errors that name the config key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_texts", "column", "load_records", "split_records"]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: invalid JSON line ({err.msg})") from err
    return rows


def _read_table(path: Path, kind: str) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path)
    return frame.to_dict(orient="records")


def _read_hf(path_or_name: str, split: str | None) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("HF datasets support needs `pip install 'rnb[hf]'`") from err
    p = Path(path_or_name)
    ds = datasets.load_from_disk(str(p)) if p.exists() else datasets.load_dataset(path_or_name)
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        if name not in ds:
            raise ValueError(f"data.split='{name}' not in dataset splits {list(ds)}")
        ds = ds[name]
    return [dict(r) for r in ds]


def load_records(path: str, key: str = "data.train_path", split: str | None = None) -> list[dict]:
    """Load records from ``.jsonl``/``.json``, ``.parquet``, ``.csv``, or an HF dataset.

    Args:
        path: a file, a directory written by ``datasets.save_to_disk``, or ``hf:<name>``
            for a hub dataset (needs network).
        key: the config key holding ``path``, for error messages.
        split: split name for HF dataset dicts.

    Raises:
        FileNotFoundError: if a local path does not exist.
        ValueError: on unreadable content or an empty file.
    """
    if path.startswith("hf:"):
        rows = _read_hf(path[3:], split)
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{key}='{path}' does not exist")
        suffix = p.suffix.lower()
        if p.is_dir():
            rows = _read_hf(str(p), split)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(p)
        elif suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            rows = data if isinstance(data, list) else data.get("data", [])
        elif suffix in (".parquet", ".pq"):
            rows = _read_table(p, "parquet")
        elif suffix in (".csv", ".tsv"):
            rows = _read_table(p, "csv")
        else:
            raise ValueError(
                f"{key}='{path}': unsupported format '{suffix}' "
                "(use .jsonl, .json, .parquet, .csv, or a save_to_disk directory)"
            )
    if not rows:
        raise ValueError(f"{key}='{path}' contains no records")
    return rows


def _columns(records: Sequence[dict]) -> list[str]:
    return sorted(records[0].keys()) if records else []


def build_texts(
    records: Sequence[dict], text_fields: str | Sequence[str], key: str = "data.text_fields"
) -> list[str]:
    """Join the configured fields of each record into one text.

    ``text_fields`` is a list of field names (joined with a newline) or a template string
    containing ``{field}`` placeholders (``"Q: {prompt}\\nA: {response}"``).

    Raises:
        ValueError: a field is missing (names the available columns) or a text is empty.
    """
    cols = _columns(records)
    if isinstance(text_fields, str) and "{" in text_fields:
        template = text_fields
        try:
            texts = [template.format(**r) for r in records]
        except KeyError as err:
            raise ValueError(f"{key}: template field {err} not in columns {cols}") from err
    else:
        fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
        for f in fields:
            if any(f not in r for r in records):
                raise ValueError(f"{key}: field '{f}' not in columns {cols}")
        texts = ["\n".join(str(r[f]) for f in fields if r[f] is not None) for r in records]
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"{key}: record {i} has empty text (fields {text_fields})")
    return texts


def column(records: Sequence[dict], field: str, key: str) -> list[str]:
    """Values of ``field`` as strings; errors name ``key`` and the available columns."""
    cols = _columns(records)
    missing = [i for i, r in enumerate(records) if field not in r or r[field] is None]
    if missing:
        raise ValueError(
            f"{key}='{field}' missing in {len(missing)} records (first: {missing[0]}); "
            f"columns: {cols}"
        )
    return [str(r[field]) for r in records]


def split_records(
    records: list[dict], eval_fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Seeded train/eval split (used when no ``data.eval_path`` is given)."""
    import numpy as np

    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in (0, 1), got {eval_fraction}")
    n = len(records)
    n_eval = max(1, round(n * eval_fraction))
    if n_eval >= n:
        raise ValueError(
            f"data.eval_fraction={eval_fraction} leaves no training data ({n} records)"
        )
    perm = np.random.default_rng([seed, 7]).permutation(n)
    eval_idx = set(perm[:n_eval].tolist())
    train = [r for i, r in enumerate(records) if i not in eval_idx]
    ev = [records[i] for i in sorted(eval_idx)]
    return train, ev
