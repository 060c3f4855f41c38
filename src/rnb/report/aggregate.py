"""Load the ``summary.json`` files of runs (single runs or a Hydra multirun) into tables.

Only completed runs are results: :func:`compare` averages ``status == "completed"`` runs and
counts the others per group in ``n_failed``; :func:`failed_runs` lists them with the step
and the reason. A summary written before ``status`` existed counts as completed when its
``eval_loss`` is finite, else as diverged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnb.config import enabled

__all__ = ["compare", "failed_runs", "find_summaries", "load_runs", "weights_frame"]


def find_summaries(root: str | Path) -> list[Path]:
    """Every ``summary.json`` below ``root`` (sorted)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob("summary.json"))


def _status(summary: dict[str, Any]) -> tuple[str, int | None, str | None]:
    """``(status, failure step, reason)`` of a summary (older summaries have no status)."""
    if "status" in summary:
        failure = summary.get("failure") or {}
        return summary["status"], failure.get("step"), failure.get("reason")
    loss = summary.get("eval_loss")
    if isinstance(loss, int | float) and math.isfinite(loss):
        return "completed", None, None
    return "diverged", None, f"non-finite eval_loss {loss} (summary without status)"


def _component(node: Any) -> str | None:
    """Short class name of a config node's ``_target_`` (``sklearn.cluster.KMeans`` -> ``KMeans``)."""
    target = node.get("_target_") if isinstance(node, dict) else None
    return str(target).rsplit(".", 1)[-1] if target else None


def _regroup_label(regroup_cfg: dict[str, Any]) -> str:
    """``none``, or the Regroup's clusterer and embedder (``KMeans/TfidfEmbedder``), so that
    runs regrouped differently (k-means vs faiss, MiniLM vs TF-IDF) never share a group."""
    if not enabled(regroup_cfg):
        return "none"
    parts = [_component(regroup_cfg.get(k)) for k in ("clusterer", "embedder")]
    return "/".join(p for p in parts if p) or "on"


def _row(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    cfg = summary.get("config") or {}
    strat = summary.get("strategy") or {}
    rg = summary.get("regroup") or {}
    over = summary.get("overhead") or {}
    regroup_cfg = cfg.get("regroup") or {}
    status, failed_at, reason = _status(summary)
    return {
        "run": str(path.parent),
        "status": status,
        "failed_at_step": failed_at,
        "reason": reason,
        "strategy": strat.get("name"),
        "regroup": _regroup_label(regroup_cfg),
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
    """One row per run: status, strategy, regroup, k, seed, eval loss, overhead, ARI.

    ``status`` is ``completed``, ``diverged`` or ``failed``; for the latter two
    ``failed_at_step`` and ``reason`` say where and why (else ``None``).
    """
    paths: list[Path] = []
    for root in [roots] if isinstance(roots, str | Path) else roots:
        paths.extend(find_summaries(root))
    rows = [_row(p, json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, by: tuple[str, ...] = ("strategy", "regroup")) -> pd.DataFrame:
    """Mean ± std of ``eval_loss`` (and overhead) per group over completed runs, best first.

    ``n`` counts the completed runs of a group, ``n_failed`` its diverged / failed runs
    (listed by :func:`failed_runs`); a group with no completed run keeps its row (mean
    NaN, sorted last) so that it is not silently missing.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if runs.empty:
        raise ValueError(
            "no runs found: point load_runs at a directory containing summary.json files"
        )
    ok = _completed(runs)
    # A failed run's loss and overhead are no result: masked, so they enter no mean.
    runs = runs.assign(
        _ok=ok,
        _failed=~ok,
        _loss=runs["eval_loss"].astype(float).where(ok),
        _overhead=runs["overhead_wall_pct"].astype(float).where(ok),
    )
    g = runs.groupby(list(by), dropna=False)
    out = g.agg(
        eval_loss_mean=("_loss", "mean"),
        eval_loss_std=("_loss", "std"),
        n=("_ok", "sum"),
        n_failed=("_failed", "sum"),
        overhead_wall_pct=("_overhead", "mean"),
    )
    return out.astype({"n": int, "n_failed": int}).sort_values("eval_loss_mean", na_position="last")


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``runs`` that did not complete, with ``status``, step and reason."""
    cols = ["run", "strategy", "regroup", "seed", "status", "failed_at_step", "reason"]
    return runs.loc[~_completed(runs), [c for c in cols if c in runs]].reset_index(drop=True)


def _completed(runs: pd.DataFrame) -> pd.Series:
    if "status" not in runs:  # a frame built by hand, without load_runs
        return runs["eval_loss"].astype(float).map(math.isfinite)
    return runs["status"] == "completed"


def weights_frame(summary_path: str | Path) -> pd.DataFrame:
    """The weight trajectory of one run: index = step, columns = domains."""
    summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    traj = summary["weights_trajectory"]
    return pd.DataFrame(
        np.array([t["weights"] for t in traj]),
        index=pd.Index([t["step"] for t in traj], name="step"),
        columns=summary["domains"],
    )
