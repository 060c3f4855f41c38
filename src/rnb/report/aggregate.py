"""Load the ``summary.json`` files of runs (single runs or a Hydra multirun) into tables."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnb.config import enabled

__all__ = ["compare", "find_summaries", "load_runs", "weights_frame"]


def find_summaries(root: str | Path) -> list[Path]:
    """Every ``summary.json`` below ``root`` (sorted)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob("summary.json"))


def _row(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    cfg = summary.get("config") or {}
    strat = summary.get("strategy") or {}
    rg = summary.get("regroup") or {}
    over = summary.get("overhead") or {}
    regroup_cfg = cfg.get("regroup") or {}
    return {
        "run": str(path.parent),
        "strategy": strat.get("name"),
        "regroup": "none" if not enabled(regroup_cfg) else (rg.get("param") or "on"),
        "k": len(summary.get("domains") or []),
        "seed": summary.get("seed"),
        "steps": summary.get("steps"),
        "eval_loss": summary.get("eval_loss"),
        "eval_loss_initial": summary.get("eval_loss_initial"),
        "wall_time_s": summary.get("wall_time_s"),
        "overhead_wall_pct": over.get("wall_pct"),
        "overhead_flops_pct": over.get("flops_pct"),
        "ari": ((rg.get("agreement") or {}).get("clusters_vs_reference") or {}).get("ari"),
    }


def load_runs(roots: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: strategy, regroup, k, seed, eval loss, overhead, ARI."""
    paths: list[Path] = []
    for root in [roots] if isinstance(roots, str | Path) else roots:
        paths.extend(find_summaries(root))
    rows = [_row(p, json.loads(p.read_text())) for p in paths]
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, by: tuple[str, ...] = ("strategy", "regroup")) -> pd.DataFrame:
    """Mean ± std of ``eval_loss`` (and overhead) per group, best first."""
    if runs.empty:
        raise ValueError(
            "no runs found: point load_runs at a directory containing summary.json files"
        )
    g = runs.groupby(list(by), dropna=False)
    out = g.agg(
        eval_loss_mean=("eval_loss", "mean"),
        eval_loss_std=("eval_loss", "std"),
        n=("eval_loss", "size"),
        overhead_wall_pct=("overhead_wall_pct", "mean"),
    )
    return out.sort_values("eval_loss_mean")


def weights_frame(summary_path: str | Path) -> pd.DataFrame:
    """The weight trajectory of one run: index = step, columns = domains."""
    summary = json.loads(Path(summary_path).read_text())
    traj = summary["weights_trajectory"]
    return pd.DataFrame(
        np.array([t["weights"] for t in traj]),
        index=pd.Index([t["step"] for t in traj], name="step"),
        columns=summary["domains"],
    )
