"""Run outcome records: strict JSON, failure records, and the report over mixed outcomes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnb.report.aggregate import compare, failed_runs, load_runs
from rnb.run.divergence import DivergedError, DivergenceGuard, divergence_hint
from rnb.run.status import failure_record, strict_json


def test_strict_json_writes_nonfinite_as_null() -> None:
    obj = {
        "a": float("nan"),
        "b": [1.0, float("inf"), np.float32("nan"), np.float64(2.5)],
        "c": np.array([np.nan, 1.0]),
        "d": torch.tensor([float("-inf"), 3.0]),
        "e": {"f": True, "g": 3, "h": None, "i": Path("/x")},
    }
    out = json.loads(strict_json(obj), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert out == {
        "a": None,
        "b": [1.0, None, None, 2.5],
        "c": [None, 1.0],
        "d": [None, 3.0],
        "e": {"f": True, "g": 3, "h": None, "i": "/x"},
    }


def test_failure_record() -> None:
    assert failure_record(None, 7) == {"status": "completed", "failure": None}
    diverged = failure_record(DivergedError(3, "non-finite training loss", "lower model.lr"), 4)
    assert diverged["status"] == "diverged"
    assert diverged["failure"]["step"] == 3
    assert diverged["failure"]["reason"] == "non-finite training loss"
    assert diverged["failure"]["message"].endswith("; lower model.lr")
    failed = failure_record(MemoryError("out of memory"), 9)
    assert failed["status"] == "failed"
    assert failed["failure"] == {
        "step": 9,
        "reason": "MemoryError: out of memory",
        "type": "MemoryError",
        "message": "out of memory",
    }


def test_divergence_hint_names_the_keys() -> None:
    clipped = divergence_hint({"model": {"lr": 0.5}, "trainer": {"gradient_clip_val": 1.0}})
    assert "model.lr (now 0.5)" in clipped and "trainer.gradient_clip_val (now 1.0)" in clipped
    unclipped = divergence_hint({"model": {"lr": 0.5}, "trainer": {"gradient_clip_val": None}})
    assert "trainer.gradient_clip_val (now None; e.g. 1.0)" in unclipped


def test_guard_tolerance_counts_consecutive_steps() -> None:
    guard = DivergenceGuard(max_nonfinite_steps=1)
    guard._observe(True, 5)
    guard._observe(False, 6)  # a finite loss resets the streak
    guard._observe(True, 7)
    with pytest.raises(DivergedError) as info:
        guard._observe(True, 8)
    assert info.value.step == 7 and "2 consecutive" in info.value.reason
    with pytest.raises(ValueError, match="divergence.max_nonfinite_steps"):
        DivergenceGuard(max_nonfinite_steps=-1)


def _summary(root: Path, name: str, strategy: str, **entries: object) -> None:
    folder = root / name
    folder.mkdir()
    body = {"strategy": {"name": strategy}, "seed": 0, "domains": ["a", "b"], **entries}
    # json.dumps writes float nan as a bare NaN, like summaries written before `status`.
    (folder / "summary.json").write_text(json.dumps(body))


def test_report_separates_failed_runs(tmp_path: Path) -> None:
    _summary(tmp_path, "ok1", "RnB", status="completed", failure=None, eval_loss=2.0)
    _summary(tmp_path, "ok2", "RnB", status="completed", failure=None, eval_loss=4.0)
    failure = {"step": 3, "reason": "non-finite training loss"}
    _summary(tmp_path, "div", "RnB", status="diverged", failure=failure, eval_loss=None)
    _summary(tmp_path, "legacy_nan", "Natural", eval_loss=float("nan"))  # no status key
    _summary(tmp_path, "legacy_ok", "Stratified", eval_loss=3.0)
    runs = load_runs(tmp_path)
    status = dict(zip(runs["run"].map(lambda r: Path(r).name), runs["status"], strict=True))
    assert status == {
        "ok1": "completed",
        "ok2": "completed",
        "div": "diverged",
        "legacy_nan": "diverged",
        "legacy_ok": "completed",
    }
    table = compare(runs)
    rnb = table.loc[("RnB", "none")]
    assert (rnb["n"], rnb["n_failed"]) == (2, 1)
    assert rnb["eval_loss_mean"] == pytest.approx(3.0)
    assert rnb["eval_loss_std"] == pytest.approx(math.sqrt(2.0))
    natural = table.loc[("Natural", "none")]  # no completed run: kept, mean NaN, sorted last
    assert (natural["n"], natural["n_failed"]) == (0, 1) and math.isnan(natural["eval_loss_mean"])
    assert table.index[-1] == ("Natural", "none")
    failed = failed_runs(runs).set_index("run")
    assert sorted(failed["status"]) == ["diverged", "diverged"]
    assert failed.loc[str(tmp_path / "div"), "failed_at_step"] == 3
    assert failed.loc[str(tmp_path / "div"), "reason"] == "non-finite training loss"
    assert "non-finite eval_loss" in failed.loc[str(tmp_path / "legacy_nan"), "reason"]


def test_compare_without_status_column_uses_finite_loss() -> None:
    runs = pd.DataFrame(
        {
            "strategy": ["A", "A"],
            "regroup": ["none", "none"],
            "eval_loss": [1.0, float("nan")],
            "overhead_wall_pct": [0.0, 0.0],
        }
    )
    row = compare(runs).loc[("A", "none")]
    assert (row["n"], row["n_failed"], row["eval_loss_mean"]) == (1, 1, 1.0)


def test_regroup_column_names_the_clusterer_and_embedder(tmp_path: Path) -> None:
    """k-means and faiss runs (both sweep `n_clusters`) used to share the group `n_clusters`."""
    from rnb.report.aggregate import load_runs

    def regroup(clusterer: str, embedder: str) -> dict:
        return {"clusterer": {"_target_": clusterer}, "embedder": {"_target_": embedder}}

    cases = {
        "km": regroup("sklearn.cluster.KMeans", "rnb.regroup.embedders.TfidfEmbedder"),
        "faiss": regroup(
            "rnb.regroup.clusterers.FaissKMeans", "rnb.regroup.embedders.TfidfEmbedder"
        ),
        "none": None,
    }
    for name, rg in cases.items():
        (tmp_path / name).mkdir()
        summary = {"status": "completed", "eval_loss": 1.0, "config": {"regroup": rg}}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    runs = load_runs(tmp_path).set_index("run")["regroup"]
    assert runs[str(tmp_path / "km")] == "KMeans/TfidfEmbedder"
    assert runs[str(tmp_path / "faiss")] == "FaissKMeans/TfidfEmbedder"
    assert runs[str(tmp_path / "none")] == "none"
