"""Is a k sweep conclusive? The one judgement behind every "widen the sweep" note.

``rnb-regroup``'s printed table, the Regroup report (``regroup.md`` / ``regroup.json``) and
``rnb-report`` all call :func:`advise`, so they always agree. A sweep is flagged when

* **edge**: the chosen value is the smallest or the largest valid value of a sweep of at
  least :data:`MIN_VALUES_FOR_EDGE` valid values (the score may keep improving past it);
* **flat**: the valid scores barely change with the swept value, so the metric does not
  single out a value: ``max - min <`` :data:`FLAT_SILHOUETTE` for the silhouette (bounded
  in [-1, 1], so an absolute spread is meaningful), ``(max - min) / max|score| <``
  :data:`FLAT_RELATIVE` for the unbounded Davies–Bouldin / Calinski–Harabasz scores.

A best silhouette under :data:`WEAK_SILHOUETTE` is mentioned too (little cluster structure
in the embeddings: a better embedder or ``data.embed_fields`` may matter more than k).

The suggestion (``suggested``: the next ``regroup.k_values`` to try) extends the sweep past
the edge it stopped at (up to twice the chosen value, or down to half of it), or, for a
flat sweep, spans a wider range geometrically (half the smallest to twice the largest).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnb.regroup.sweep_result import METRICS

__all__ = [
    "FLAT_RELATIVE",
    "FLAT_SILHOUETTE",
    "MIN_VALUES_FOR_EDGE",
    "WEAK_SILHOUETTE",
    "KSweepAdvice",
    "advise",
    "advise_rows",
    "summary_advice",
]

#: Silhouette spread (max - min over valid values) under which a sweep counts as flat.
FLAT_SILHOUETTE = 0.02
#: Relative spread under which a Davies–Bouldin / Calinski–Harabasz sweep counts as flat.
FLAT_RELATIVE = 0.05
#: A best silhouette under this is noted as weak cluster structure.
WEAK_SILHOUETTE = 0.1
#: Fewer valid values than this never count as "at the edge" (two values: any pick is one).
MIN_VALUES_FOR_EDGE = 3
#: The smallest sensible sweep value (a clustering needs at least 2 clusters).
_MIN_VALUE = 2


@dataclass
class KSweepAdvice:
    """The verdict on one sweep.

    Attributes:
        param: the swept parameter (``n_clusters``, ``min_cluster_size``, ...).
        metric: the selection metric.
        chosen: the chosen value.
        values: the valid swept values, sorted.
        edge: ``"low"`` / ``"high"`` when the chosen value is the smallest / largest valid
            value, else None.
        flat: the scores' spread is under the documented threshold.
        spread: ``max - min`` of the valid scores.
        best: the best valid score.
        weak: the best silhouette is under :data:`WEAK_SILHOUETTE`.
        suggested: the ``regroup.k_values`` to try next (empty when nothing is flagged).
        message: one human-readable paragraph (empty when nothing is flagged).
    """

    param: str
    metric: str
    chosen: int
    values: list[int]
    edge: str | None
    flat: bool
    spread: float
    best: float
    weak: bool
    suggested: list[int] = field(default_factory=list)
    message: str = ""

    @property
    def flagged(self) -> bool:
        """True when the sweep is at an edge or flat (then ``message`` says so)."""
        return self.edge is not None or self.flat

    @property
    def suggested_override(self) -> str:
        """``suggested`` as a command-line value without spaces (``[32,40,48]``)."""
        return "[" + ",".join(str(v) for v in self.suggested) + "]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``regroup.json`` and the report)."""
        return {
            "edge": self.edge,
            "flat": self.flat,
            "spread": self.spread,
            "best": self.best,
            "weak": self.weak,
            "suggested_k_values": list(self.suggested),
            "message": self.message,
        }


def _step(values: list[int]) -> int:
    """The sweep's typical spacing (median gap), at least 1."""
    gaps = sorted(b - a for a, b in itertools.pairwise(values))
    return max(1, gaps[len(gaps) // 2]) if gaps else 1


def _up(start: int, n: int, step: int) -> list[int]:
    """``n`` values from ``start`` upwards reaching at least ``2 * start`` (spacing >= step)."""
    step = max(step, math.ceil(start / max(n - 1, 1)))
    return [start + i * step for i in range(n)]


def _down(start: int, n: int) -> list[int]:
    """Values from ``max(2, start // 2)`` up to ``start`` (about ``n`` of them)."""
    lo = max(_MIN_VALUE, start // 2)
    step = max(1, math.ceil((start - lo) / max(n - 1, 1)))
    return sorted({*range(start, lo - 1, -step), lo}) if lo < start else []


def _geometric(lo: int, hi: int, n: int) -> list[int]:
    """About ``n`` geometrically spaced distinct ints from ``lo`` to ``hi``."""
    ratio = (hi / lo) ** (1 / max(n - 1, 1))
    return sorted({round(lo * ratio**i) for i in range(n)} | {lo, hi})


def _suggest(values: list[int], chosen: int, edge: str | None, flat: bool) -> list[int]:
    n, step = max(len(values), 5), _step(values)
    if edge == "high":
        return _up(chosen, n, step)
    if edge == "low":
        return _down(chosen, n)
    if flat:
        return _geometric(max(_MIN_VALUE, values[0] // 2), 2 * values[-1], n + 2)
    return []


def _message(a: KSweepAdvice, higher: bool) -> str:
    parts = []
    if a.edge is not None:
        side = "largest" if a.edge == "high" else "smallest"
        parts.append(
            f"the chosen {a.param}={a.chosen} is at the edge of regroup.k_values "
            f"{a.values} (its {side} value): the {a.metric} may keep "
            f"{'rising' if higher else 'falling'} beyond it"
        )
        if not a.suggested:
            parts.append(f"{a.param}={a.chosen} is already the smallest possible value")
    if a.flat:
        kind = "" if a.metric == "silhouette" else " (relative)"
        limit = FLAT_SILHOUETTE if a.metric == "silhouette" else FLAT_RELATIVE
        parts.append(
            f"the {a.metric} scores are nearly flat (spread{kind} {a.spread:.3g} < {limit}), "
            f"so the metric barely distinguishes the values"
        )
    if a.weak:
        parts.append(
            f"the best silhouette is only {a.best:.3g} (< {WEAK_SILHOUETTE}): the embeddings "
            "show little cluster structure (the embedder or data.embed_fields may matter more)"
        )
    text = "; ".join(parts)
    if a.suggested:
        text += f". Try regroup.k_values={a.suggested_override}"
    if a.flat:
        text += " (or train a few values and compare their eval loss: a k sweep)"
    return text[:1].upper() + text[1:] + "."


def advise(
    values: Sequence[int],
    scores: Sequence[float],
    chosen: int,
    *,
    param: str = "n_clusters",
    metric: str = "silhouette",
) -> KSweepAdvice | None:
    """Judge a sweep: is the chosen value at an edge, are the scores flat?

    Args:
        values: the swept values (any order); values with a non-finite score are ignored
            (excluded values cannot be chosen, so they bound nothing).
        scores: the selection ``metric`` of each value, same length as ``values``.
        chosen: the chosen value.
        param: the swept parameter's name (for the message).
        metric: ``silhouette``, ``davies_bouldin`` or ``calinski_harabasz``.

    Returns:
        A :class:`KSweepAdvice` (check ``flagged``), or None when fewer than 2 values have
        a finite score (a single value: nothing to judge).

    Raises:
        ValueError: unknown ``metric`` or ``values`` / ``scores`` of different lengths.
    """
    if metric not in METRICS:
        raise ValueError(f"regroup.metric: unknown metric {metric!r}; use one of {list(METRICS)}")
    if len(values) != len(scores):
        raise ValueError(f"advise: {len(values)} values but {len(scores)} scores")
    valid = sorted(
        (int(v), float(s))
        for v, s in zip(values, scores, strict=True)
        if s is not None and math.isfinite(float(s))
    )
    if len(valid) < 2:
        return None
    vals = [v for v, _ in valid]
    ss = [s for _, s in valid]
    spread = max(ss) - min(ss)
    if metric == "silhouette":
        flat = spread < FLAT_SILHOUETTE
    else:
        flat = spread < FLAT_RELATIVE * max(abs(s) for s in ss)
    edge = None
    if len(vals) >= MIN_VALUES_FOR_EDGE and chosen in (vals[0], vals[-1]):
        edge = "low" if chosen == vals[0] else "high"
    best = max(ss) if METRICS[metric] else min(ss)
    weak = metric == "silhouette" and best < WEAK_SILHOUETTE
    advice = KSweepAdvice(param, metric, int(chosen), vals, edge, flat, spread, best, weak)
    if advice.flagged:
        advice.suggested = _suggest(vals, int(chosen), edge, flat)
        advice.message = _message(advice, METRICS[metric])
    return advice


def advise_rows(
    rows: Sequence[Mapping[str, Any]], chosen: int, *, param: str, metric: str
) -> KSweepAdvice | None:
    """:func:`advise` over sweep rows as ``regroup.json`` / ``summary.json`` store them.

    Args:
        rows: dicts with ``value``, the ``metric`` score (None = undefined) and optionally
            ``excluded`` (a reason; such rows are ignored).
        chosen: the chosen value.
        param: the swept parameter.
        metric: the selection metric.
    """
    ok = [r for r in rows if not r.get("excluded") and r.get(metric) is not None]
    return advise(
        [int(r["value"]) for r in ok],
        [float(r[metric]) for r in ok],
        chosen,
        param=param,
        metric=metric,
    )


def summary_advice(regroup: Mapping[str, Any] | None) -> KSweepAdvice | None:
    """The flagged advice for a run's ``summary.json`` ``regroup`` entry (or ``rnb-regroup``'s
    summary), None when there was no sweep or nothing is flagged."""
    if not regroup or not regroup.get("scores") or not regroup.get("chosen"):
        return None
    advice = advise_rows(
        regroup["scores"],
        int(regroup["chosen"]["value"]),
        param=str(regroup.get("param") or "n_clusters"),
        metric=str(regroup.get("metric") or "silhouette"),
    )
    return advice if advice is not None and advice.flagged else None
