"""What a Regroup run returns: label arrays, names, summary, fingerprint, and its reports.

A result lives in a cache folder ``<cache_dir>/regroup/<fingerprint>/``:

| file | content |
|---|---|
| ``labels.npz`` | ``train``/``eval`` int64 labels, ``eval_distance``, ``eval_ood`` |
| ``names.json`` | domain names, index = label |
| ``regroup.json``, ``regroup.md`` | the report (:mod:`rnb.regroup.report`) |
| ``sweep.json``, ``sweep.png`` | the k sweep (absent for ``regroup=original``) |

Nothing is written anywhere else while computing; :meth:`RegroupResult.write_reports`
copies the reports into a run directory when the caller asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnb.caching import publish_file

__all__ = ["REPORT_FILES", "RegroupResult"]

#: Report files of a result folder -> their names in a run directory.
REPORT_FILES = {
    "regroup.json": "regroup.json",
    "regroup.md": "regroup.md",
    "sweep.json": "regroup_sweep.json",
    "sweep.png": "regroup_sweep.png",
}


@dataclass
class RegroupResult:
    """Domains found by Regroup for one train/eval pair.

    Attributes:
        names: domain names, index = label (``c00, c01, …`` or the predefined names).
        train: ``[n_train]`` int64 domain of every training example.
        eval: ``[n_eval]`` int64 domain of every eval example (nearest training centroid).
        summary: the ``regroup`` entry of ``summary.json`` (k, why, sweep scores, agreement).
        report: the full report (``regroup.json``).
        fingerprint: the cache key; identical inputs and settings give the same one.
        folder: the cache folder holding the labels and reports.
        from_cache: True if an earlier run (or another process) computed the result.
    """

    names: list[str]
    train: np.ndarray
    eval: np.ndarray
    summary: dict[str, Any]
    report: dict[str, Any]
    fingerprint: str
    folder: Path
    from_cache: bool

    @classmethod
    def load(cls, folder: Path, fingerprint: str, from_cache: bool) -> RegroupResult:
        """Read a finished result folder."""
        data = np.load(folder / "labels.npz")
        report = json.loads((folder / "regroup.json").read_text(encoding="utf-8"))
        names = [str(n) for n in json.loads((folder / "names.json").read_text(encoding="utf-8"))]
        return cls(
            names=names,
            train=np.asarray(data["train"], dtype=np.int64),
            eval=np.asarray(data["eval"], dtype=np.int64),
            summary=_summary(report, names, fingerprint, folder),
            report=report,
            fingerprint=fingerprint,
            folder=folder,
            from_cache=from_cache,
        )

    def write_reports(self, out_dir: str | Path) -> list[Path]:
        """Copy the reports into ``out_dir`` as ``regroup.json``, ``regroup.md``,
        ``regroup_sweep.json`` and ``regroup_sweep.png`` (the sweep files only when there
        was a sweep). Each copy is atomic, so concurrent callers (DDP ranks) are safe.

        Returns:
            The written paths.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return [
            publish_file(self.folder / src, out / dst)
            for src, dst in REPORT_FILES.items()
            if (self.folder / src).exists()
        ]


def _summary(
    report: dict[str, Any], names: list[str], fingerprint: str, folder: Path
) -> dict[str, Any]:
    sel = report.get("selection") or {}
    return {
        "k": len(names),
        "fingerprint": fingerprint,
        "param": sel.get("param"),
        "metric": sel.get("metric"),
        "chosen": sel.get("chosen"),
        "why": sel.get("why")
        or f"kept the {len(names)} predefined domains of data.domain_field (no k sweep)",
        "scores": [
            {
                key: r.get(key)
                for key in (
                    "value",
                    "k_found",
                    "silhouette",
                    "davies_bouldin",
                    "calinski_harabasz",
                    "excluded",
                )
            }
            for r in sel.get("rows", [])
        ],
        "agreement": report.get("agreement"),
        "ood_eval": (report.get("ood") or {}).get("count"),
        "cache": str(folder),
    }
