"""The report's tables: results in the paper's Table 1 form, per-domain eval loss, failures.

Numbers come from completed runs only: ``eval_loss`` mean ± sample standard deviation
(``ddof=1``; a single run has no std) over the seeds of one :class:`~rnb.report.groups.Group`,
and the mean ``overhead.flops_pct`` / ``overhead.wall_pct``. The best (lowest) mean eval
loss is marked ``best`` (bold in Markdown; ties are all marked).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rnb.report.groups import Group
from rnb.report.markdown import md_table
from rnb.report.runs import Run

__all__ = [
    "domain_definition",
    "failed_table",
    "mean_std",
    "per_domain_tables",
    "results_markdown",
    "results_table",
]

#: Columns of ``report.csv`` (one row per group), in order.
RESULT_COLUMNS = [
    "strategy",
    "grouping",
    "m",
    "differs",
    "n",
    "n_not_completed",
    "seeds",
    "eval_loss_mean",
    "eval_loss_std",
    "flops_pct",
    "wall_pct",
    "best",
    "runs",
]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (``ddof=1``) of the finite values; NaN where undefined."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def _mean(values: Sequence[float]) -> float:
    return mean_std(values)[0]


def results_table(groups: Sequence[Group]) -> pd.DataFrame:
    """One row per group (:data:`RESULT_COLUMNS`), in the order of ``groups``."""
    rows = []
    for g in groups:
        done = g.completed
        mean, std = mean_std([r.number("eval_loss") for r in done])
        rows.append(
            {
                "strategy": g.strategy,
                "grouping": g.grouping,
                "m": g.m,
                "differs": ", ".join(f"{k}={v}" for k, v in g.differs.items()),
                "n": len(done),
                "n_not_completed": len(g.not_completed),
                "seeds": " ".join(str(r.seed) for r in done),
                "eval_loss_mean": mean,
                "eval_loss_std": std,
                "flops_pct": _mean([r.number("overhead", "flops_pct") for r in done]),
                "wall_pct": _mean([r.number("overhead", "wall_pct") for r in done]),
                "best": False,
                "runs": " ".join(str(r.path) for r in g.runs),
            }
        )
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if table["eval_loss_mean"].notna().any():
        table["best"] = np.isclose(table["eval_loss_mean"], table["eval_loss_mean"].min())
    return table


def _loss_text(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.2f}"


def results_markdown(table: pd.DataFrame) -> list[str]:
    """The results table in the paper's Table 1 form (best eval loss in bold)."""
    header = ["method", "grouping", "m", "eval loss (mean ± std)", "n", "FLOPs %", "wall %"]
    show_failed = bool(table["n_not_completed"].any())
    show_differs = bool((table["differs"] != "").any())
    header += ["not completed"] * show_failed + ["differs in"] * show_differs
    rows = []
    for r in table.itertuples():
        loss = _loss_text(r.eval_loss_mean, r.eval_loss_std)
        row = [r.strategy, r.grouping, r.m, f"**{loss}**" if r.best else loss, r.n]
        row += [_pct(r.flops_pct), _pct(r.wall_pct)]
        row += [r.n_not_completed] * show_failed + [r.differs or "–"] * show_differs
        rows.append(row)
    return md_table(header, rows)


def domain_definition(run: Run) -> str:
    """What a run's domain names mean: ``predefined`` or the Regroup fingerprint.

    ``c03`` of two clusterings are different domains, so per-domain numbers are only
    compared between runs with the same definition.
    """
    fp = (run.summary.get("regroup") or {}).get("fingerprint")
    return f"regroup {fp}" if fp else "predefined"


def per_domain_tables(groups: Sequence[Group]) -> dict[str, pd.DataFrame]:
    """Per domain definition: rows = domains (with the eval proportion ``q``), columns =
    group labels, values = mean per-domain eval loss over the group's completed runs with
    that definition (NaN: the domain has no eval example, or no such run)."""
    out: dict[str, pd.DataFrame] = {}
    by_def: dict[str, list[tuple[Group, Run]]] = {}
    for g in groups:
        for r in g.completed:
            if r.summary.get("eval_loss_per_domain") and r.summary.get("domains"):
                by_def.setdefault(domain_definition(r), []).append((g, r))
    for definition, pairs in by_def.items():
        domains = list(pairs[0][1].summary["domains"])
        q = pairs[0][1].summary.get("eval_proportions") or [math.nan] * len(domains)
        frame = pd.DataFrame({"q": q}, index=pd.Index(domains, name="domain"))
        for g in dict.fromkeys(g for g, _ in pairs):
            losses = [r.summary["eval_loss_per_domain"] for gg, r in pairs if gg is g]
            frame[g.label] = [
                _mean(
                    [float(loss.get(d) if loss.get(d) is not None else math.nan) for loss in losses]
                )
                for d in domains
            ]
        out[definition] = frame
    return out


def per_domain_markdown(frame: pd.DataFrame) -> list[str]:
    """A per-domain table with each domain's best (lowest) loss in bold."""
    cols = [c for c in frame.columns if c != "q"]
    rows = []
    for domain, r in frame.iterrows():
        vals = [float(r[c]) for c in cols]
        finite = [v for v in vals if math.isfinite(v)]
        best = min(finite) if len(finite) > 1 else math.nan
        cells = [
            "–" if not math.isfinite(v) else (f"**{v:.3f}**" if v == best else f"{v:.3f}")
            for v in vals
        ]
        rows.append([domain, _pct_share(r["q"]), *cells])
    return md_table(["domain", "eval share q", *cols], rows)


def _pct_share(q: Any) -> str:
    q = float(q) if q is not None else math.nan
    return "–" if not math.isfinite(q) else f"{q:.3f}"


def failed_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Every run that is not completed, with its status, step and reason."""
    rows = [
        {
            "run": str(r.path),
            "strategy": r.strategy,
            "grouping": r.grouping,
            "seed": r.seed,
            "status": r.status,
            "step": r.failed_at_step,
            "reason": r.reason,
        }
        for r in runs
        if not r.completed
    ]
    return pd.DataFrame(
        rows, columns=["run", "strategy", "grouping", "seed", "status", "step", "reason"]
    )
