"""Result types of a k sweep: one row per swept value, the chosen clustering, JSON and plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "SweepResult", "SweepRow"]

#: metric name -> True when larger is better.
METRICS: dict[str, bool] = {"silhouette": True, "davies_bouldin": False, "calinski_harabasz": True}


def _num(x: float) -> float | None:
    """JSON-safe float: NaN/inf become None (strict JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class SweepRow:
    """One sweep value's outcome (after noise policy and tiny-cluster merge).

    ``excluded`` is None for a value that took part in the choice, else the reason it
    could not (no clustering at this value, fewer than 2 clusters, undefined score).
    """

    value: int
    k_found: int
    silhouette: float
    davies_bouldin: float
    calinski_harabasz: float
    sizes: list[int]
    n_noise: int
    fit_seconds: float
    metric_seconds: dict[str, float] = field(default_factory=dict)
    excluded: str | None = None

    def score(self, metric: str) -> float:
        """The row's value of ``metric`` (NaN when undefined)."""
        return float(getattr(self, metric))


@dataclass
class SweepResult:
    """All sweep rows, the chosen one, and its labels/centroids.

    Attributes:
        param: the swept clusterer parameter (e.g. ``n_clusters``).
        metric: the selection metric.
        rows: one :class:`SweepRow` per value, in sweep order.
        chosen: index into ``rows`` of the chosen value.
        labels: int64 ``[n]`` post-processed labels of the chosen row (None after
            :meth:`from_json`).
        centers: float64 ``[k, d]`` centroids of ``labels`` (None after :meth:`from_json`).
        silhouette_sample: sample size used for silhouette (None = all points).
        silhouette_metric: distance used for silhouette.
        seed: seed of the silhouette sample.
    """

    param: str
    metric: str
    rows: list[SweepRow]
    chosen: int
    labels: np.ndarray | None = None
    centers: np.ndarray | None = None
    silhouette_sample: int | None = None
    silhouette_metric: str = "euclidean"
    seed: int = 0

    @property
    def chosen_row(self) -> SweepRow:
        """The chosen :class:`SweepRow`."""
        return self.rows[self.chosen]

    @property
    def k(self) -> int:
        """Number of clusters of the chosen row."""
        return self.chosen_row.k_found

    def ranking(self) -> list[int]:
        """Indices of valid rows (not excluded, finite score), best first.

        Ties go to the smaller k, then the smaller value.
        """
        return sorted(
            (
                i
                for i, r in enumerate(self.rows)
                if r.excluded is None and math.isfinite(r.score(self.metric))
            ),
            key=lambda i: _rank_key(self.rows[i], self.metric),
        )

    @property
    def runner_up(self) -> SweepRow | None:
        """Second-best row by the selection metric, if there is one."""
        rank = [i for i in self.ranking() if i != self.chosen]
        return self.rows[rank[0]] if rank else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (NaN scores become None)."""

        def row(r: SweepRow) -> dict[str, Any]:
            d = asdict(r)
            for m in METRICS:
                d[m] = _num(d[m])
            return d

        def brief(r: SweepRow | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"value": r.value, "k": r.k_found, "score": _num(r.score(self.metric))}

        return {
            "param": self.param,
            "metric": self.metric,
            "higher_is_better": METRICS[self.metric],
            "silhouette_sample": self.silhouette_sample,
            "silhouette_metric": self.silhouette_metric,
            "seed": self.seed,
            "chosen_index": self.chosen,
            "chosen": brief(self.chosen_row),
            "runner_up": brief(self.runner_up),
            "rows": [row(r) for r in self.rows],
        }

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> SweepResult:
        """Read a file written by :meth:`to_json` (labels/centers are not stored there)."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = []
        for r in d["rows"]:
            r = dict(r)
            for m in METRICS:
                r[m] = float("nan") if r[m] is None else float(r[m])
            rows.append(SweepRow(**r))
        return cls(
            d["param"],
            d["metric"],
            rows,
            int(d["chosen_index"]),
            silhouette_sample=d["silhouette_sample"],
            silhouette_metric=d["silhouette_metric"],
            seed=int(d["seed"]),
        )

    def plot(self, path: str | Path) -> Path:
        """Save a PNG: each score vs the swept value, the chosen value marked.

        Uses matplotlib's Agg canvas directly (no pyplot), so no global backend state
        is touched.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        xs = [r.value for r in self.rows]
        fig = Figure(figsize=(4.0 * len(METRICS), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        for ax, m in zip(fig.subplots(1, len(METRICS)), METRICS, strict=True):
            ys = [r.score(m) for r in self.rows]
            ax.plot(xs, ys, "o-", color="C0" if m == self.metric else "C7")
            ax.axvline(self.chosen_row.value, color="C3", ls="--", lw=1)
            ax.plot([self.chosen_row.value], [self.chosen_row.score(m)], "*", color="C3", ms=14)
            for r, y in zip(self.rows, ys, strict=True):
                if r.k_found != r.value and math.isfinite(y):
                    ax.annotate(
                        f"k={r.k_found}",
                        (r.value, y),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            for r in self.rows:
                if r.excluded is not None:  # at the bottom of the axis: it has no score
                    ax.plot([r.value], [0.02], "x", color="C7", transform=ax.get_xaxis_transform())
            best = "max" if METRICS[m] else "min"
            ax.set_title(f"{m} ({best}){'  <- selection' if m == self.metric else ''}", fontsize=9)
            ax.set_xlabel(self.param)
        excluded = [r.value for r in self.rows if r.excluded is not None]
        note = f"; x = excluded {self.param} {excluded}" if excluded else ""
        fig.suptitle(f"chosen {self.param}={self.chosen_row.value} (k={self.k}){note}", fontsize=10)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=100)
        return path


def _rank_key(row: SweepRow, metric: str) -> tuple[float, int, int]:
    s = row.score(metric)
    return (-s if METRICS[metric] else s, row.k_found, row.value)
