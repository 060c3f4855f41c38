"""``rnb-regroup``: run the Regroup stage alone and print its summary table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from rnb.config import config_dir, enabled, hydra_output_dir
from rnb.regroup.advice import summary_advice

__all__ = ["format_summary", "main", "regroup"]


def regroup(cfg: DictConfig) -> dict[str, Any]:
    """Regroup ``cfg.data`` with ``cfg.regroup``; writes the reports into the output dir."""
    if not enabled(cfg.get("regroup")):
        raise ValueError(
            "rnb-regroup needs a regroup config: regroup=kmeans|minibatch|faiss|hdbscan|..."
        )
    out = Path(cfg.get("output_dir") or hydra_output_dir() or os.getcwd()).resolve()
    dm = instantiate(cfg.data, regroup=instantiate(cfg.regroup, _convert_="all"), _recursive_=False)
    labels = dm.prepare_domains()
    dm.write_reports(out)
    summary = {
        **dm.regroup_summary,
        "sizes": [int((labels.train == i).sum()) for i in range(len(labels.names))],
        "output_dir": str(out),  # where the reports went (printed last by the CLI)
    }
    (out / "regroup_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of the sweep and the chosen clustering."""
    lines = [f"chosen k = {summary['k']}  ({summary['why']})", ""]
    advice = summary_advice(summary)
    if advice is not None:
        lines[1:1] = [f"NOTE: {advice.message}"]
    rows = summary.get("scores") or []
    if rows:
        lines.append(f"{'value':>6} {'k':>4} {'silhouette':>11} {'davies_b':>9} {'calinski_h':>11}")
        for r in rows:

            def f(x: Any) -> str:
                return "nan" if x is None else f"{x:.4f}"

            lines.append(
                f"{r['value']:>6} {r['k_found']:>4} {f(r['silhouette']):>11} "
                f"{f(r['davies_bouldin']):>9} {f(r['calinski_harabasz']):>11}"
                + (f"  excluded: {r['excluded']}" if r.get("excluded") else "")
            )
    for name, agree in (summary.get("agreement") or {}).items():
        lines.append(f"{name}: ARI {agree['ari']:.3f}  NMI {agree['nmi']:.3f}")
    if summary.get("ood_eval") is not None:
        lines.append(f"eval points flagged out-of-distribution: {summary['ood_eval']}")
    lines.append(f"cluster sizes: {summary.get('sizes')}")
    if summary.get("output_dir"):
        lines.append(
            f"reports (regroup.md, regroup.json, regroup_sweep.*): {summary['output_dir']}"
        )
    return "\n".join(lines)


def main() -> None:
    """Console entry point (Hydra app over ``conf/regroup.yaml``)."""
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name="regroup", version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        print(format_summary(regroup(cfg)))

    _app()


if __name__ == "__main__":
    main()
