"""Field roles of a record (text, target, embed, domain, reference) and missing values.

A *role* is one config key (``data.text_fields``, ``data.target_field``,
``data.embed_fields``, ``data.domain_field``, ``data.reference_field``) with the fields it
reads. :func:`check_records` applies ``data.on_missing`` to every role right after
loading, so a missing value is reported with the file, the record's position in that file
and the key -- or the record is dropped (``on_missing=drop``, counted in the log). A
missing value is an absent key, ``None`` (JSON ``null``, a Parquet / dataset null) or a
float ``NaN``; for the label roles (domain, reference) also an empty
string; for the text roles a record whose joined text is blank.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnb.data.readers import origin

__all__ = [
    "ON_MISSING",
    "FieldRole",
    "MissingTally",
    "build_texts",
    "check_records",
    "column",
    "field_roles",
]

log = logging.getLogger(__name__)

#: Accepted values of ``data.on_missing``.
ON_MISSING = ("error", "drop")


def is_missing(value: Any) -> bool:
    """``None`` or a float ``NaN`` (what the readers normalise missing values to)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _template_fields(template: str, key: str) -> list[str]:
    names = []
    for _lit, name, _spec, _conv in string.Formatter().parse(template):
        if name is None:
            continue
        base = name.split(".")[0].split("[")[0]
        if not base or base.isdigit():
            raise ValueError(f"{key}: template '{template}' needs named fields like {{text}}")
        names.append(base)
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class FieldRole:
    """One config key and the fields it reads.

    Attributes:
        key: the config key (``data.text_fields``, ...), named in every error.
        spec: a field name, a list of fields, or a ``{field}`` template (text roles).
        text: ``True`` for a text role (fields joined into one text; a blank text is
            missing), ``False`` for a label role (each value must be a non-empty string).
    """

    key: str
    spec: str | tuple[str, ...]
    text: bool = True

    @property
    def template(self) -> str | None:
        """The ``{field}`` template, or ``None`` for a field list."""
        return self.spec if isinstance(self.spec, str) and "{" in self.spec else None

    @property
    def fields(self) -> list[str]:
        """The field names read (template placeholders included)."""
        if self.template is not None:
            return _template_fields(self.template, self.key)
        return [self.spec] if isinstance(self.spec, str) else list(self.spec)

    def value(self, record: dict) -> str | None:
        """The text / label of ``record``, or ``None`` when a value is missing or blank."""
        fields = self.fields
        if any(is_missing(record.get(f)) for f in fields):
            return None
        if self.template is not None:
            text = self.template.format(**record)
        else:
            text = "\n".join(str(record[f]) for f in fields)
        return text if text.strip() else None

    def problem(self, record: dict) -> str:
        """Why :meth:`value` returned ``None`` for ``record``."""
        for f in self.fields:
            if is_missing(record.get(f)):
                return f"has no value for field '{f}' (null or absent key)"
        shown = self.spec if isinstance(self.spec, str) else list(self.spec)
        return f"has empty {'text' if self.text else 'value'} (fields {shown!r})"


def field_roles(
    text_fields: str | Sequence[str],
    target_field: str | None = None,
    embed_fields: str | Sequence[str] | None = None,
    domain_field: str | None = None,
    reference_field: str | None = None,
) -> list[FieldRole]:
    """The roles a run reads (``None`` keys are skipped)."""

    def spec(value: str | Sequence[str]) -> str | tuple[str, ...]:
        return value if isinstance(value, str) else tuple(value)

    roles = [FieldRole("data.text_fields", spec(text_fields))]
    if target_field is not None:
        roles.append(FieldRole("data.target_field", target_field))
    if embed_fields is not None:
        roles.append(FieldRole("data.embed_fields", spec(embed_fields)))
    if domain_field is not None:
        roles.append(FieldRole("data.domain_field", domain_field, text=False))
    if reference_field is not None:
        roles.append(FieldRole("data.reference_field", reference_field, text=False))
    return roles


def _columns(records: Sequence[dict]) -> list[str]:
    return sorted({k for r in records for k in r})


def _require_columns(records: Sequence[dict], role: FieldRole, where: str = "") -> None:
    cols = _columns(records)
    for f in role.fields:
        if f not in cols:
            raise ValueError(f"{role.key}: field '{f}' not in columns {cols}{where}")


class MissingTally:
    """Applies ``data.on_missing`` record by record, so a stream is checked in one pass.

    :func:`check_records` (a list) and the streaming scan (:mod:`rnb.data.scan`) share it:
    :meth:`keep` decides each record, :meth:`finish` raises or logs once every record was
    seen (the error counts the records of the first bad role over the whole source).

    Args:
        roles: from :func:`field_roles`.
        on_missing: ``error`` or ``drop``.
        source: ``"data.train_path='t.csv'"``, for messages.

    Raises:
        ValueError: ``on_missing`` is not one of :data:`ON_MISSING`.
    """

    def __init__(self, roles: Sequence[FieldRole], on_missing: str = "error", source: str = ""):
        if on_missing not in ON_MISSING:
            raise ValueError(f"data.on_missing='{on_missing}': choose one of {ON_MISSING}")
        self.roles, self.on_missing = list(roles), on_missing
        self.where = f" of {source}" if source else ""
        self.columns: set[str] = set()
        self.seen = 0
        self.first: tuple[str, str, FieldRole] | None = None  # origin, problem, role
        self.bad_per_key: dict[str, int] = {}

    def keep(self, record: dict, origin_: str) -> bool:
        """Whether ``record`` (at ``origin_``) has every value its roles read."""
        self.seen += 1
        self.columns.update(record)
        role = next((role for role in self.roles if role.value(record) is None), None)
        if role is None:
            return True
        if self.first is None:
            self.first = (origin_, role.problem(record), role)
        self.bad_per_key[role.key] = self.bad_per_key.get(role.key, 0) + 1
        return False

    def finish(self) -> None:
        """Raise for the first bad record (``error``) or log the drops (``drop``).

        Raises:
            ValueError: a field is in no record (lists the columns), a value is missing
                with ``on_missing=error``, or ``drop`` left no record. Messages name the
                file, the record's position in it and the config key.
        """
        cols = sorted(self.columns)
        for role in self.roles:
            for f in role.fields:
                if f not in self.columns:
                    raise ValueError(f"{role.key}: field '{f}' not in columns {cols}{self.where}")
        if self.first is None:
            return
        at, problem, role = self.first
        n_bad = sum(self.bad_per_key.values())
        if self.on_missing == "error":
            n = self.bad_per_key[role.key]
            raise ValueError(
                f"{role.key}: {at} {problem}; {n} of {self.seen} records{self.where} lack a "
                f"{role.key} value. Fill them, change {role.key}, or set data.on_missing=drop "
                "to skip those records"
            )
        if n_bad == self.seen:
            raise ValueError(f"data.on_missing=drop dropped all {self.seen} records{self.where}")
        log.warning(
            "data.on_missing=drop: dropped %d of %d records%s with missing values %s",
            n_bad,
            self.seen,
            self.where,
            self.bad_per_key,
        )


def check_records(
    records: list[dict], roles: Sequence[FieldRole], on_missing: str = "error", source: str = ""
) -> list[dict]:
    """Apply ``data.on_missing`` to every role of every record (see :class:`MissingTally`).

    Args:
        records: loaded records (with provenance, see :class:`rnb.data.readers.Record`).
        roles: from :func:`field_roles`.
        on_missing: ``error`` (raise on the first bad record, with the count) or ``drop``
            (skip records with a missing value; the count is logged).
        source: ``"data.train_path='t.csv'"``, for messages.

    Returns:
        The records kept (all of them with ``error``).

    Raises:
        ValueError: as :meth:`MissingTally.finish`.
    """
    tally = MissingTally(roles, on_missing, source)
    kept = [r for i, r in enumerate(records) if tally.keep(r, origin(records, i))]
    tally.finish()
    return kept


def build_texts(
    records: Sequence[dict], text_fields: str | Sequence[str], key: str = "data.text_fields"
) -> list[str]:
    """Join the configured fields of each record into one text.

    ``text_fields`` is a list of field names (joined with a newline) or a template string
    containing ``{field}`` placeholders (``"Q: {prompt}\\nA: {response}"``).

    Raises:
        ValueError: a field is in no record (names the available columns), or a record
            has a missing value or an empty text (names the record's file and position).
    """
    role = FieldRole(key, text_fields if isinstance(text_fields, str) else tuple(text_fields))
    _require_columns(records, role)
    texts = []
    for i, r in enumerate(records):
        text = role.value(r)
        if text is None:
            raise ValueError(f"{key}: {origin(records, i)} {role.problem(r)}")
        texts.append(text)
    return texts


def column(records: Sequence[dict], field: str, key: str) -> list[str]:
    """Values of ``field`` as strings; errors name ``key``, the records and the columns."""
    role = FieldRole(key, field, text=False)
    missing = [i for i, r in enumerate(records) if role.value(r) is None]
    if missing:
        raise ValueError(
            f"{key}='{field}' missing in {len(missing)} records (first: "
            f"{origin(records, missing[0])}); columns: {_columns(records)}"
        )
    return [str(r[field]) for r in records]
