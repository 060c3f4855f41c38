"""What the DataModule hands Regroup: texts to embed, label columns, precomputed vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rnb.data.sources import build_texts, column

if TYPE_CHECKING:
    from rnb.regroup.pipeline import Regroup
    from rnb.regroup.result import RegroupResult

__all__ = ["RegroupFields", "regroup_inputs", "run_regroup"]


@dataclass(frozen=True)
class RegroupFields:
    """``data.text_fields`` / ``embed_fields`` / ``domain_field`` / ``reference_field``."""

    text_fields: str | Sequence[str]
    embed_fields: str | Sequence[str] | None
    domain_field: str | None
    reference_field: str | None


def regroup_inputs(
    regroup: Regroup, records: list[dict], split: str, fields: RegroupFields
) -> tuple[list[str], list[Any] | None]:
    """Texts Regroup embeds (``data.embed_fields``, else ``data.text_fields``), plus the
    vectors of ``regroup.embedder.column`` when the embedder reads precomputed ones.

    Raises:
        ValueError: a text is missing, or the vector column is missing in a record.
    """
    texts = build_texts(
        records,
        fields.embed_fields or fields.text_fields,
        "data.embed_fields" if fields.embed_fields else "data.text_fields",
    )
    col = regroup.input_column
    if col is None:
        return texts, None
    missing = [i for i, r in enumerate(records) if r.get(col) is None]
    if missing:
        raise ValueError(
            f"regroup.embedder.column='{col}' missing in {len(missing)} {split} records "
            f"(first: {missing[0]}); columns: {sorted(records[missing[0]])}"
        )
    return texts, [r[col] for r in records]


def run_regroup(
    regroup: Regroup, train: list[dict], ev: list[dict], fields: RegroupFields
) -> RegroupResult:
    """Run Regroup on the materialised train / eval records (cached by Regroup itself)."""
    (texts, vec), (ev_texts, ev_vec) = (
        regroup_inputs(regroup, train, "train", fields),
        regroup_inputs(regroup, ev, "eval", fields),
    )
    field, ref = fields.domain_field, fields.reference_field
    return regroup.run(
        texts,
        ev_texts,
        predefined=column(train, field, "data.domain_field") if field else None,
        predefined_eval=column(ev, field, "data.domain_field") if field else None,
        reference=column(train, ref, "data.reference_field") if ref else None,
        vectors=None if vec is None else (vec, ev_vec),
    )
