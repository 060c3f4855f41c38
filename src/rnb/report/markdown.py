"""Markdown tables for the reports (no ``tabulate`` dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["md_cell", "md_table"]


def md_cell(x: Any) -> str:
    """One table cell: ``None`` -> ``–``, floats with 4 significant digits, ``|`` escaped."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Lines of a Markdown table (header, rule, rows) followed by a blank line."""
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md_cell(v) for v in r) + " |" for r in rows]
    return [*out, ""]
