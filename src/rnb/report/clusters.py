"""One run's Regroup clusters as a table: size, shares, top terms, an example."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rnb.report.runs import Run

__all__ = ["clusters_frame", "regrouped_run"]


def regrouped_run(runs: Sequence[Run]) -> Run | None:
    """The first completed run whose directory holds ``regroup.json`` (None if none does)."""
    return next((r for r in runs if r.completed and (r.path / "regroup.json").is_file()), None)


def clusters_frame(
    regroup_json: str | Path, terms: int = 6, example_chars: int = 120
) -> pd.DataFrame:
    """The clusters of a ``regroup.json`` (:func:`rnb.regroup.report.write_report`).

    Args:
        regroup_json: path of the file (a run dir's ``regroup.json``).
        terms: c-TF-IDF terms shown per cluster.
        example_chars: the first representative example is cut to this length.

    Returns:
        One row per cluster (index ``id``): ``size``, ``share_train``, ``share_eval``,
        ``top_terms`` (comma-separated), ``example``.
    """
    report = json.loads(Path(regroup_json).read_text(encoding="utf-8"))
    rows = [
        {
            "id": c["id"],
            "size": c["size"],
            "share_train": c["share_train"],
            "share_eval": c["share_eval"],
            "top_terms": ", ".join(t["term"] for t in c["top_terms"][:terms]),
            "example": (c["examples"][0] if c["examples"] else "")[:example_chars],
        }
        for c in report["clusters"]
    ]
    return pd.DataFrame(rows).set_index("id")
