"""The files of a Regroup report: ``regroup.json`` (strict JSON) and ``regroup.md``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rnb.report.markdown import md_cell, md_table

__all__ = ["json_clean", "report_markdown", "write_report"]


def json_clean(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into JSON types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def report_markdown(r: dict[str, Any]) -> str:
    """The Markdown summary (``regroup.md``) of a :func:`~rnb.regroup.report.build_report` dict."""
    md = ["# Regroup report", ""]
    md.append(
        f"{r['n_train']} training / {r['n_eval']} eval examples in **k = {r['k']}** clusters."
    )
    md.append("")
    sel = r["selection"]
    if sel is not None:
        md += ["## Choice of k", "", sel["why"] + ".", ""]
        fs = r.get("fit_sample")
        if fs and fs["size"] >= fs["n_train"]:  # a fit_sample of at least every point
            md += [
                f"regroup.fit_sample={fs['requested']} >= {fs['n_train']} training examples: "
                "fitted on every example.",
                "",
            ]
        elif fs:  # regroup.fit_sample: the sweep table describes the sample
            md += [
                f"Fitted on a seeded sample of {fs['size']} of {fs['n_train']} training "
                f"examples (seed {fs['seed']}), then every example labelled by "
                f"{fs['assignment']}; the sweep scores and sizes are the sample's.",
                "",
            ]
        if sel.get("advice"):
            md += [f"**Note:** {sel['advice']['message']}", ""]
        hdr = [
            sel["param"],
            "k found",
            "silhouette",
            "davies_bouldin",
            "calinski_harabasz",
            "fit s",
            "excluded (why)",
        ]
        rows = [
            [
                f"**{row['value']}**" if i == sel["chosen_index"] else row["value"],
                row["k_found"],
                row["silhouette"],
                row["davies_bouldin"],
                row["calinski_harabasz"],
                row["fit_seconds"],
                row.get("excluded") or "",
            ]
            for i, row in enumerate(sel["rows"])
        ]
        md += md_table(hdr, rows)
    md += ["## Clusters", ""]
    hdr = ["id", "size", "share train", "share eval", "OOD eval", "top terms"]
    rows = [
        [
            c["id"],
            c["size"],
            c["share_train"],
            c["share_eval"],
            c["n_ood_eval"],
            ", ".join(t["term"] for t in c["top_terms"]),
        ]
        for c in r["clusters"]
    ]
    md += md_table(hdr, rows)
    md += ["### Representative examples", ""]
    for c in r["clusters"]:
        md.append(f"**Cluster {c['id']}**")
        md += [f"- {md_cell(e)}" for e in c["examples"]] or ["- (none)"]
        md.append("")
    if r["contingency"] is not None:
        md += ["## Clusters vs predefined domains", ""]
        ct = r["contingency"]
        md += md_table(
            ["cluster", *ct["domains"]], [[i, *row] for i, row in enumerate(ct["counts"])]
        )
    if r["agreement"] is not None:
        md += ["## Agreement with the reference grouping", ""]
        md += md_table(
            ["grouping", "ARI", "NMI"], [[k, v["ari"], v["nmi"]] for k, v in r["agreement"].items()]
        )
    if r["ood"] is not None:
        o = r["ood"]
        md += ["## Out-of-distribution eval points", ""]
        md.append(
            f"{o['count']} eval points ({md_cell(o['share'])}) lie farther from their centroid than "
            f"the {o['quantile']} quantile of that cluster's training distances."
        )
        md.append("")
    return "\n".join(md)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``regroup.json`` and ``regroup.md`` into ``out_dir``.

    Returns:
        ``(json_path, markdown_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / "regroup.json", out / "regroup.md"
    jp.write_text(json.dumps(json_clean(report), indent=2, allow_nan=False), encoding="utf-8")
    mp.write_text(report_markdown(report), encoding="utf-8")
    return jp, mp
