"""The edge / flat judgement of a k sweep (rnb.regroup.advice), shared by rnb-regroup, the
Regroup report and rnb-report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnb.cli.regroup import format_summary
from rnb.regroup.advice import (
    FLAT_RELATIVE,
    FLAT_SILHOUETTE,
    advise,
    advise_rows,
    summary_advice,
)
from rnb.regroup.report import build_report
from rnb.regroup.report_files import report_markdown
from rnb.regroup.sweep_result import SweepResult, SweepRow

K = [8, 12, 16, 20, 24, 28, 32]


def test_interior_peak_is_not_flagged() -> None:
    a = advise(K, [0.30, 0.40, 0.50, 0.62, 0.55, 0.45, 0.41], 20)
    assert a is not None and not a.flagged
    assert a.edge is None and not a.flat and a.suggested == [] and a.message == ""
    assert a.spread == pytest.approx(0.32) and a.best == pytest.approx(0.62)


def test_high_edge_suggests_values_past_it() -> None:
    a = advise(K, [0.30, 0.40, 0.50, 0.52, 0.55, 0.58, 0.61], 32)
    assert a is not None and a.edge == "high" and not a.flat
    # n = 7 values from 32 upwards, spacing max(4, ceil(32 / 6)) = 6, reaching 2 x 32
    assert a.suggested == [32, 38, 44, 50, 56, 62, 68]
    assert "edge of regroup.k_values" in a.message
    assert "regroup.k_values=[32,38,44,50,56,62,68]" in a.message


def test_low_edge_suggests_values_below_and_stops_at_two() -> None:
    a = advise(K, [0.70, 0.60, 0.50, 0.45, 0.40, 0.38, 0.30], 8)
    assert a is not None and a.edge == "low" and a.suggested == [4, 5, 6, 7, 8]
    two = advise([2, 3, 4], [0.9, 0.6, 0.5], 2)
    assert two is not None and two.edge == "low" and two.suggested == []
    assert "already the smallest possible value" in two.message


def test_flat_silhouette_uses_the_absolute_threshold() -> None:
    # the corpora: silhouette ~0.04, nearly flat, picked at the top of 8-32
    real = advise(K, [0.031, 0.035, 0.036, 0.040, 0.041, 0.042, 0.044], 32)
    assert real is not None and real.flat and real.edge == "high" and real.weak
    assert "nearly flat" in real.message and "little cluster structure" in real.message
    just_under = advise([8, 16, 24], [0.50, 0.50 + FLAT_SILHOUETTE * 0.99, 0.505], 16)
    just_over = advise([8, 16, 24], [0.50, 0.50 + FLAT_SILHOUETTE * 1.01, 0.505], 16)
    assert just_under is not None and just_under.flat and just_under.edge is None
    assert just_over is not None and not just_over.flagged
    # flat but interior: a wider, geometric sweep from half the smallest to twice the largest
    assert just_under.suggested[0] == 4 and just_under.suggested[-1] == 48
    assert just_under.suggested == sorted(set(just_under.suggested))


def test_flat_unbounded_metrics_use_the_relative_threshold() -> None:
    ch = [100.0, 100.0 + 100 * FLAT_RELATIVE * 0.9, 101.0]
    a = advise([8, 16, 24], ch, 16, metric="calinski_harabasz")
    assert a is not None and a.flat and not a.weak  # weak is a silhouette notion
    db = advise([8, 16, 24], [2.0, 1.0, 1.5], 16, metric="davies_bouldin")
    assert db is not None and not db.flagged


def test_undefined_scores_and_excluded_rows_bound_nothing() -> None:
    assert advise([8, 12], [0.5, math.nan], 8) is None  # one finite score: nothing to judge
    # 32 was excluded (no clustering there): 28 is the largest *valid* value -> edge
    rows = [{"value": v, "silhouette": 0.1 * i, "excluded": None} for i, v in enumerate(K[:-1])]
    rows.append({"value": 32, "silhouette": None, "excluded": "every point labelled noise"})
    a = advise_rows(rows, 28, param="n_clusters", metric="silhouette")
    assert a is not None and a.values == K[:-1] and a.edge == "high"
    with pytest.raises(ValueError, match="regroup.metric"):
        advise(K, [0.1] * 7, 8, metric="nope")
    with pytest.raises(ValueError, match="7 values but 2 scores"):
        advise(K, [0.1, 0.2], 8)


def _summary(scores: list[float], chosen: int) -> dict:
    rows = [
        {"value": v, "k_found": v, "silhouette": s, "davies_bouldin": 1.0,
         "calinski_harabasz": 10.0, "excluded": None}
        for v, s in zip(K, scores, strict=True)
    ]  # fmt: skip
    return {"k": chosen, "why": "w", "param": "n_clusters", "metric": "silhouette",
            "chosen": {"value": chosen, "k": chosen}, "scores": rows}  # fmt: skip


def test_rnb_regroup_prints_the_note_only_when_flagged() -> None:
    edge = _summary([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 32)
    text = format_summary(edge)
    assert text.splitlines()[1] == f"NOTE: {summary_advice(edge).message}"
    assert "regroup.k_values=[32,38,44,50,56,62,68]" in text
    fine = _summary([0.1, 0.2, 0.3, 0.8, 0.5, 0.6, 0.7], 20)
    assert summary_advice(fine) is None and "NOTE" not in format_summary(fine)
    assert summary_advice({"k": 3, "why": "predefined", "scores": []}) is None


def test_regroup_report_carries_the_advice() -> None:
    rows = [SweepRow(v, v, 0.04 + 0.001 * i, 1.0, 10.0, [1] * v, 0, 0.0) for i, v in enumerate(K)]
    sweep = SweepResult("n_clusters", "silhouette", rows, chosen=6)
    labels = np.arange(40) % 4
    rep = build_report([f"text {i}" for i in range(40)], labels, labels[:8], sweep=sweep)
    advice = rep["selection"]["advice"]
    assert advice["edge"] == "high" and advice["flat"] and advice["weak"]
    assert advice["suggested_k_values"] == [32, 38, 44, 50, 56, 62, 68]
    assert f"**Note:** {advice['message']}" in report_markdown(rep)
