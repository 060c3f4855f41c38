"""The report's figures, as matplotlib :class:`~matplotlib.figure.Figure` objects.

Each function takes the groups of :func:`rnb.report.groups.group_runs` and returns a Figure
(None when no run has the data), drawn on an Agg canvas without pyplot, so no global backend
state is touched; ``fig.savefig(path)`` writes it, a notebook shows it inline. Many domains
stay legible: only the ``top`` domains (by largest weight or share) are drawn, the rest are
summed into ``other``, and long names are shortened (:func:`shorten`).

* :func:`eval_curves`: eval loss vs step of every group on one axis (paper Fig. 3 right);
  mean over the group's seeds, the band spans min to max.
* :func:`mixture_trajectories`: the sampling mixture over training of each group's first
  completed run (Fig. 5).
* :func:`weights_vs_eval`: time-averaged training weight ``p̄`` vs eval proportion ``q`` per
  domain, with ``KL(q ‖ p̄)`` (Fig. 6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnb.report.groups import Group
from rnb.report.runs import Run

__all__ = [
    "eval_curves",
    "kl_divergence",
    "mixture_trajectories",
    "new_figure",
    "shorten",
    "top_domains",
    "weights_vs_eval",
]

#: Domains drawn individually before the rest is summed into ``other``.
TOP_DOMAINS = 8


def new_figure(width: float, height: float) -> Figure:
    """A Figure on its own Agg canvas with constrained layout (legends kept inside it)."""
    fig = Figure(figsize=(width, height), layout="constrained", dpi=100)
    FigureCanvasAgg(fig)
    return fig


def shorten(name: str, width: int = 18) -> str:
    """``name`` cut to ``width`` characters in the middle (``informat…xtraction``), so names
    that share a long prefix (``task001_…``, ``task002_…``) stay distinguishable."""
    name = str(name)
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def top_domains(values: np.ndarray, n: int = TOP_DOMAINS) -> list[int]:
    """Indices of the ``n`` domains with the largest ``values`` (ties: lower index), in
    domain order; all of them when there are at most ``n + 1`` (no 1-domain ``other``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size <= n + 1:
        return list(range(values.size))
    order = np.lexsort((np.arange(values.size), -np.nan_to_num(values, nan=-np.inf)))
    return sorted(order[:n].tolist())


def _with_other(
    matrix: np.ndarray, keep: list[int], names: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Columns ``keep`` of ``matrix`` [.., m] plus one ``other`` column summing the rest."""
    labels = [shorten(names[i]) for i in keep]
    rest = [i for i in range(matrix.shape[-1]) if i not in set(keep)]
    if not rest:
        return matrix[..., keep], labels
    other = matrix[..., rest].sum(axis=-1, keepdims=True)
    return np.concatenate([matrix[..., keep], other], axis=-1), [*labels, f"other ({len(rest)})"]


def _first(group: Group) -> Run | None:
    done = sorted(group.completed, key=lambda r: (str(r.seed), str(r.path)))
    return done[0] if done else None


def _grid(n: int, ncols: int, width: float, height: float) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure(width * ncols, height * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _val_curve(run: Run) -> pd.Series | None:
    m = run.metrics()
    if m is None or "val/loss" not in m or "step" not in m:
        return None
    v = m.dropna(subset=["val/loss"]).groupby("step")["val/loss"].last()
    return v if len(v) else None


def eval_curves(groups: Sequence[Group]) -> Figure | None:
    """Eval loss vs step, one line per group (mean over seeds; band = min..max)."""
    curves = []
    for g in groups:
        runs = [c for c in (_val_curve(r) for r in g.completed) if c is not None]
        if runs:
            curves.append((g, pd.concat(runs, axis=1, join="inner")))
    if not curves:
        return None
    fig = new_figure(9.0, 4.2)
    ax = fig.subplots()
    for i, (g, frame) in enumerate(curves):
        color = f"C{i % 10}"
        steps = frame.index.to_numpy()
        ax.plot(steps, frame.mean(axis=1), "o-", ms=3, color=color,
                label=f"{g.short_label} (n={frame.shape[1]})")  # fmt: skip
        if frame.shape[1] > 1:
            ax.fill_between(steps, frame.min(axis=1), frame.max(axis=1), color=color, alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("eval loss (val/loss)")
    ax.set_title("Eval loss during training (mean over seeds; band: min–max)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _trajectory(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    traj = run.summary.get("weights_trajectory") or []
    if not traj:
        return None
    steps = [int(t["step"]) for t in traj]
    weights = np.asarray([t["weights"] for t in traj], dtype=np.float64)
    end = max(int(run.summary.get("steps") or steps[-1]), steps[-1])
    # Each mixture holds until the next update: draw it as a staircase up to the last step.
    xs = np.repeat([*steps, end], 2)[1:-1]
    return xs, np.repeat(weights, 2, axis=0)


def mixture_trajectories(groups: Sequence[Group], top: int = TOP_DOMAINS) -> Figure | None:
    """Stacked sampling mixture vs step of each group's first completed run (Fig. 5)."""
    items = [(g, r, t) for g in groups if (r := _first(g)) and (t := _trajectory(r))]
    if not items:
        return None
    fig, axes = _grid(len(items), 2, 6.2, 2.9)
    for ax, (g, run, (xs, ws)) in zip(axes, items, strict=True):
        names = run.summary.get("domains") or [f"d{i}" for i in range(ws.shape[1])]
        keep = top_domains(ws.max(axis=0), top)
        stacked, labels = _with_other(ws, keep, names)
        colors = [f"C{i % 10}" for i in range(len(keep))] + ["0.75"] * (len(labels) > len(keep))
        ax.stackplot(xs, stacked.T, labels=labels, colors=colors, linewidth=0)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(0, 1)
        ax.set_title(f"{g.short_label} (seed {run.seed}, m={ws.shape[1]})", fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("sampling weight p", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6.5, frameon=False,
                  reverse=True)  # fmt: skip
    fig.suptitle(f"Mixture trajectories (top {top} domains by peak weight)", fontsize=10)
    return fig


def kl_divergence(q: Sequence[float], p: Sequence[float], eps: float = 1e-12) -> float:
    """``KL(q ‖ p) = Σ_{q_i > 0} q_i log(q_i / p_i)`` in nats, both renormalised; ``p``
    floored at ``eps`` (a domain the eval set needs but training never drew costs a lot,
    not infinity)."""
    q = np.asarray(q, dtype=np.float64)
    p = np.maximum(np.asarray(p, dtype=np.float64), eps)
    q, p = q / q.sum(), p / p.sum()
    nz = q > 0
    return float(np.sum(q[nz] * np.log(q[nz] / p[nz])))


def train_weights(run: Run) -> np.ndarray | None:
    """The run's time-averaged mixture ``p̄`` (``average_weights``; final weights before)."""
    w = run.summary.get("average_weights") or run.summary.get("final_weights")
    return None if not w else np.asarray(w, dtype=np.float64)


def weights_vs_eval(groups: Sequence[Group], top: int = 12) -> Figure | None:
    """Bars of the average training weight vs the eval proportion per domain, with KL (Fig. 6)."""
    items = []
    for g in groups:
        run = _first(g)
        q = run.summary.get("eval_proportions") if run else None
        p = train_weights(run) if run else None
        if q is not None and p is not None and len(q) == len(p):
            items.append((g, run, np.asarray(q, dtype=np.float64), p))
    if not items:
        return None
    fig, axes = _grid(len(items), 2, 6.2, 3.4)
    for ax, (g, run, q, p) in zip(axes, items, strict=True):
        names = run.summary.get("domains") or [f"d{i}" for i in range(len(q))]
        keep = top_domains(np.maximum(p, q), top)
        both, labels = _with_other(np.stack([p, q]), keep, names)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, both[0], 0.4, label="train weight p̄ (time average)", color="C0")
        ax.bar(x + 0.2, both[1], 0.4, label="eval proportion q", color="C1")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("share", fontsize=8)
        ax.set_title(
            f"{g.short_label} (seed {run.seed}): KL(q‖p̄) = {kl_divergence(q, p):.3f}", fontsize=9
        )
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"Training weight vs eval proportion (top {top} domains)", fontsize=10)
    return fig
