"""Regroup owned by the DataModule: labels, report, summary, resume guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnb.config import compose
from rnb.train import train

REGROUP = [
    "regroup=kmeans",
    "regroup/embedder=tfidf",
    "regroup.embedder.dim=32",
    "regroup.embedder.progress=false",
    "regroup.k_values=[4,6,8]",
    "regroup.min_cluster_size=5",
]


def test_train_on_regrouped_domains(tmp_path: Path, tiny_overrides: list[str]) -> None:
    cfg = compose("train", [*tiny_overrides, *REGROUP, f"output_dir={tmp_path}"])
    summary = train(cfg)
    rg = summary["regroup"]
    assert rg["k"] == len(summary["domains"]) and 2 <= rg["k"] <= 8
    assert summary["domains"][0] == "c00"
    assert {r["value"] for r in rg["scores"]} == {4, 6, 8}
    agree = rg["agreement"]["clusters_vs_reference"]
    assert 0.0 < agree["ari"] <= 1.0
    report = json.loads((tmp_path / "regroup.json").read_text())
    assert report["k"] == rg["k"]
    assert (tmp_path / "regroup.md").read_text().strip()
    assert (tmp_path / "regroup_sweep.png").stat().st_size > 0
    assert sum(summary["eval_proportions"]) == pytest.approx(1.0)


def test_resume_with_other_regroup_fails_clearly(tmp_path: Path, tiny_overrides: list[str]) -> None:
    base = [*tiny_overrides, *REGROUP, "trainer.max_steps=4", f"output_dir={tmp_path}"]
    train(compose("train", base))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    other = compose(
        "train", [*base, "regroup.k_values=[3,5]", f"resume={ckpt}", "trainer.max_steps=8"]
    )
    with pytest.raises(ValueError, match=r"regroup.k_values: \[4, 6, 8\] -> \[3, 5\]"):
        train(other)


def test_prepare_and_setup_write_nothing_into_the_run_dir(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    from rnb.train import build_run

    out = tmp_path / "run"
    run = build_run(compose("train", [*tiny_overrides, *REGROUP, f"output_dir={out}"]), out)
    dm = run["datamodule"]
    assert not any(out.glob("regroup*"))  # reports stay in the cache until write_reports
    assert dm.regroup_fingerprint == dm.regroup_summary["fingerprint"]
    written = sorted(p.name for p in dm.write_reports(out))
    assert written == ["regroup.json", "regroup.md", "regroup_sweep.json", "regroup_sweep.png"]
