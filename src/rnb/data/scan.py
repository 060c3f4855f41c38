"""One streaming pass over a record source: missing values, domain column, model texts.

:func:`scan_source` applies ``data.on_missing`` (:class:`~rnb.data.fields.MissingTally`)
and reads the ``data.domain_field`` column as integer codes, holding one byte (kept or
not) and one int32 (the domain) per record -- never the records. :class:`ModelTexts`
turns a kept record into the ``(source, target)`` texts the model trains on; the
tokenizer and the token store stream them (see :mod:`rnb.data.store`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rnb.data.fields import FieldRole, MissingTally

__all__ = ["ModelTexts", "SourceScan", "kept_records", "scan_source"]


class ModelTexts:
    """``data.text_fields`` / ``data.target_field`` of a record as ``(source, target)``.

    Without a target field ``source`` is the whole text and ``target`` is ``None``;
    with one, ``source`` joins the other text fields and ``target`` is the target's value.

    Args:
        text_fields: a list of fields or a ``{field}`` template.
        target_field: ``data.target_field`` or ``None``.

    Raises:
        ValueError: a target field with a template, or no field besides the target.
    """

    def __init__(self, text_fields: str | Sequence[str], target_field: str | None) -> None:
        self.target_field = target_field
        if target_field is None:
            spec = text_fields if isinstance(text_fields, str) else tuple(text_fields)
            self.source = FieldRole("data.text_fields", spec)
            return
        if isinstance(text_fields, str):
            raise ValueError(
                "data.target_field needs data.text_fields as a list of fields, not a template"
            )
        src_fields = tuple(f for f in text_fields if f != target_field)
        if not src_fields:
            raise ValueError("data.text_fields must contain a field besides data.target_field")
        self.source = FieldRole("data.text_fields", src_fields)

    def check(self, record: dict, where: str) -> None:
        """Raise if ``record``'s source text is empty (the text fields without the target).

        Raises:
            ValueError: names the record and ``data.text_fields``.
        """
        if self.source.value(record) is None:
            raise ValueError(f"data.text_fields: {where} {self.source.problem(record)}")

    def __call__(self, record: dict) -> tuple[str, str | None]:
        """``(source, target)`` of a record that passed :meth:`check` and the missing checks."""
        source = self.source.value(record)
        assert source is not None
        target = None if self.target_field is None else str(record[self.target_field])
        return source, target

    def corpus(self, record: dict) -> str:
        """The text the BPE trains on: ``source`` or ``source + " " + target``."""
        source, target = self(record)
        return source if target is None else source + " " + target


@dataclass
class SourceScan:
    """What one pass over a source keeps.

    Attributes:
        kept: ``[records]`` bool, the records ``data.on_missing`` keeps (file order).
        names: sorted distinct ``data.domain_field`` values of the kept records (``None``
            without a domain field).
        domains: ``[n]`` int32 index into ``names`` of each kept record (or ``None``).
    """

    kept: np.ndarray
    names: list[str] | None
    domains: np.ndarray | None

    @property
    def n(self) -> int:
        """Number of kept records (the rows of the source's token store)."""
        return int(self.kept.sum())


def scan_source(
    source: Iterable[dict],
    roles: Sequence[FieldRole],
    on_missing: str,
    domain_field: str | None,
    texts: ModelTexts,
) -> SourceScan:
    """Check every record of ``source`` and read its domain column, in one pass.

    Args:
        source: a :class:`~rnb.data.streams.FileSource` or ``ListSource`` (``str()`` names
            it in messages).
        roles: the fields the run reads (:func:`~rnb.data.fields.field_roles`).
        on_missing: ``data.on_missing``.
        domain_field: ``data.domain_field`` or ``None``.
        texts: the model's texts (their source part must not be empty).

    Raises:
        ValueError: as :class:`~rnb.data.fields.MissingTally` and the readers (file,
            record / line and config key named).
    """
    tally = MissingTally(roles, on_missing, str(source))
    kept = bytearray()
    codes = array("i")
    index: dict[str, int] = {}
    empty_source: ValueError | None = None  # raised after the missing-value errors
    for i, rec in enumerate(source):
        where = getattr(rec, "origin", "") or f"record {i}"
        ok = tally.keep(rec, where)
        kept.append(ok)
        if ok:
            if empty_source is None:
                try:
                    texts.check(rec, where)
                except ValueError as err:
                    empty_source = err
            if domain_field is not None:
                codes.append(index.setdefault(str(rec[domain_field]), len(index)))
    tally.finish()
    if empty_source is not None:
        raise empty_source
    mask = np.frombuffer(bytes(kept), dtype=np.uint8).astype(bool)
    if domain_field is None:
        return SourceScan(mask, None, None)
    names = sorted(index)
    remap = np.empty(len(names), dtype=np.int32)
    for new, name in enumerate(names):
        remap[index[name]] = new
    return SourceScan(mask, names, remap[np.frombuffer(codes, dtype=np.int32)])


def kept_records(source: Iterable[dict], scan: SourceScan) -> Iterator[dict]:
    """The records of ``source`` that ``scan`` kept, streamed in file order."""
    for rec, ok in zip(source, scan.kept, strict=False):
        if ok:
            yield rec
