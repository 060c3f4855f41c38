"""The k sweep across runs (paper Fig. 2): eval loss vs number of clusters, and vs silhouette.

Sources: every completed regrouped run's ``summary.json`` ``regroup`` entry (its sweep rows
and its chosen clustering) and ``eval_loss``. The selection score per number of clusters
is averaged over the distinct Regroup results (fingerprints) that scored it, so a k sweep
made of runs with one ``regroup.k_values`` value each gives the full curve, and so does a
single run that swept several values. The k marked as chosen is the one the selection
metric prefers on that curve; :func:`rnb.regroup.advice.advise` judges it (edge / flat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rnb.regroup.advice import KSweepAdvice, advise
from rnb.regroup.sweep_result import METRICS
from rnb.report.groups import Group
from rnb.report.plots import new_figure

__all__ = ["KSweepData", "k_sweep", "k_sweep_data", "r_squared"]


@dataclass
class KSweepData:
    """What Fig. 2 shows.

    Attributes:
        param: the swept clusterer parameter; metric: the selection metric.
        curve: ``{value: (k_found, mean score)}`` over the distinct Regroup results.
        chosen: the value the metric prefers on ``curve``.
        points: per completed run ``(strategy, k, silhouette of its clustering, eval loss)``.
        advice: the edge / flat verdict on ``curve`` (None: fewer than 2 scored values).
    """

    param: str
    metric: str
    curve: dict[int, tuple[int, float]]
    chosen: int
    points: list[tuple[str, int, float, float]] = field(default_factory=list)
    advice: KSweepAdvice | None = None


def k_sweep_data(groups: Sequence[Group]) -> KSweepData | None:
    """Collect Fig. 2's data from the regrouped runs; None when no run has a scored sweep."""
    scores: dict[int, dict[str, tuple[int, float]]] = {}
    points, param, metric = [], None, None
    for g in groups:
        for run in g.completed:
            rg = run.summary.get("regroup") or {}
            rows, fp = rg.get("scores") or [], rg.get("fingerprint") or str(run.path)
            if not rows or not rg.get("chosen"):
                continue
            param, metric = param or rg.get("param"), metric or rg.get("metric") or "silhouette"
            for r in rows:
                s = r.get(metric)
                if not r.get("excluded") and s is not None and math.isfinite(float(s)):
                    scores.setdefault(int(r["value"]), {})[fp] = (int(r["k_found"]), float(s))
            chosen = next((r for r in rows if r["value"] == rg["chosen"]["value"]), {})
            sil, loss = chosen.get("silhouette"), run.number("eval_loss")
            if sil is not None and math.isfinite(loss):
                k = rg.get("k") or len(run.summary.get("domains") or [])
                points.append((g.strategy, int(k), float(sil), loss))
    if not scores:
        return None
    curve = {
        v: (
            round(np.mean([k for k, _ in by.values()])),
            float(np.mean([s for _, s in by.values()])),
        )
        for v, by in sorted(scores.items())
    }
    sign = 1.0 if METRICS[metric] else -1.0
    chosen = max(curve, key=lambda v: (sign * curve[v][1], -curve[v][0], -v))
    values = list(curve)
    advice = advise(values, [curve[v][1] for v in values], chosen, param=param, metric=metric)
    return KSweepData(param or "n_clusters", metric, curve, chosen, points, advice)


def r_squared(x: Sequence[float], y: Sequence[float]) -> float:
    """R² of the least-squares line of ``y`` on ``x``; NaN with < 3 points or constant x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def k_sweep(groups: Sequence[Group], data: KSweepData | None = None):
    """Fig. 2: left, eval loss vs number of clusters (mean ± std per strategy and k) with
    the selection score on a second axis and the chosen k marked; right, eval loss vs the
    silhouette of each run's clustering with a least-squares line and its R² per strategy.

    Returns:
        A Figure, or None when no run has a scored sweep.
    """
    data = data or k_sweep_data(groups)
    if data is None:
        return None
    fig = new_figure(11.0, 4.2)
    left, right = fig.subplots(1, 2)
    strategies = list(dict.fromkeys(s for s, *_ in data.points))
    for i, strat in enumerate(strategies):
        pts = [(k, loss) for s, k, _, loss in data.points if s == strat]
        ks = sorted({k for k, _ in pts})
        mean = [np.mean([loss for kk, loss in pts if kk == k]) for k in ks]
        std = [np.std([loss for kk, loss in pts if kk == k], ddof=0) for k in ks]
        left.errorbar(ks, mean, yerr=std, fmt="o-", color=f"C{i}", capsize=3, label=strat)
        sil = [(x, loss) for s, _, x, loss in data.points if s == strat]
        xs, ys = zip(*sil, strict=True)
        r2 = r_squared(xs, ys)
        label = f"{strat}: R² = {r2:.2f}" if math.isfinite(r2) else f"{strat} (R²: needs ≥ 3 k)"
        right.plot(xs, ys, "o", color=f"C{i}", label=label)
        if math.isfinite(r2):
            slope, intercept = np.polyfit(xs, ys, 1)
            grid = np.linspace(min(xs), max(xs), 20)
            right.plot(grid, intercept + slope * grid, "--", color=f"C{i}", lw=1)
    k_chosen = data.curve[data.chosen][0]
    left.axvline(
        k_chosen, color="C3", ls="--", lw=1, label=f"chosen by {data.metric}: k={k_chosen}"
    )
    twin = left.twinx()
    ks = [data.curve[v][0] for v in data.curve]
    twin.plot(ks, [data.curve[v][1] for v in data.curve], "s:", color="0.45", ms=4,
              label=f"{data.metric} (Regroup sweep)")  # fmt: skip
    twin.set_ylabel(data.metric, color="0.35", fontsize=9)
    left.set_xlabel("number of clusters k")
    left.set_ylabel("eval loss")
    left.set_title("Eval loss vs number of clusters", fontsize=10)
    handles = left.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    left.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="upper center",
                bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)  # fmt: skip
    right.set_xlabel("silhouette score of the run's clustering")
    right.set_ylabel("eval loss")
    right.set_title("Eval loss vs silhouette", fontsize=10)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                 frameon=False)  # fmt: skip
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if data.advice is not None and data.advice.flagged:
        what = " and ".join(
            t
            for t, on in (("at the sweep's edge", data.advice.edge), ("flat", data.advice.flat))
            if on
        )
        fig.suptitle(f"Chosen k is {what}: try regroup.k_values={data.advice.suggested_override}",
                     fontsize=9, color="C3")  # fmt: skip
    return fig
