"""Records of another file tokenised like the training data (the probe's target set)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnb.data.scan import ModelTexts
from rnb.data.sources import build_texts, check_records, column, field_roles, load_records
from rnb.data.tokenize import TokenizedSplit, encode_examples

__all__ = ["encode_records_file", "model_io"]


def model_io(
    records: list[dict], text_fields: str | Sequence[str], target_field: str | None
) -> tuple[list[str], list[str] | None]:
    """The model's source texts and, for instruction tuning, its target texts.

    Args:
        records: Checked records.
        text_fields: ``data.text_fields`` (fields or a ``{field}`` template).
        target_field: ``data.target_field``; ``None``: the loss covers the whole text.

    Returns:
        ``(sources, targets)``; ``targets`` is ``None`` without a target field.
    """
    if target_field is None:
        return build_texts(records, text_fields), None
    texts = ModelTexts(text_fields, target_field)
    sources = build_texts(records, list(texts.source.spec))
    return sources, column(records, target_field, "data.target_field")


def encode_records_file(
    path: str,
    key: str,
    tokenizer: Any,
    text_fields: str | Sequence[str],
    target_field: str | None,
    max_length: int,
    split: str | None,
    encoding: str,
    encoding_errors: str,
    on_missing: str,
) -> TokenizedSplit:
    """Load, check and tokenise ``path`` with the training data's settings.

    Same fields, ``data.on_missing``, tokenizer and ``data.max_length``; no domain field
    is read (domain ids are ``-1``). Held in memory (a probe set is small).

    Args:
        path: The file (any format :func:`rnb.data.sources.load_records` reads).
        key: The config key holding ``path``, for error messages.
        tokenizer: The training tokenizer.
        text_fields: ``data.text_fields``.
        target_field: ``data.target_field``.
        max_length: ``data.max_length``.
        split: ``data.split``.
        encoding: ``data.encoding``.
        encoding_errors: ``data.encoding_errors``.
        on_missing: ``data.on_missing``.

    Returns:
        The tokenised examples.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_records` / ``check_records``.
    """
    records = load_records(path, key, split, encoding, encoding_errors)
    roles = field_roles(text_fields, target_field)
    records = check_records(records, roles, on_missing, f"{key}='{path}'")
    sources, targets = model_io(records, text_fields, target_field)
    domain = np.full(len(records), -1, dtype=np.int64)
    return encode_examples(tokenizer, sources, targets, domain, max_length)
