"""Issue 8 kind 7 end to end: a sweep value without a clustering is excluded, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnb.cli.regroup import format_summary, regroup
from rnb.config import compose

#: 210 training rows (the issue's reproducer), HDBSCAN after PCA on TF-IDF vectors.
BASE = [
    "regroup=hdbscan",
    "regroup/embedder=tfidf",
    "regroup.embedder.progress=false",
    "regroup.reducer.n_components=8",
    "data.synthetic.n_train=210",
    "data.synthetic.n_eval=60",
]


def test_hdbscan_value_that_labels_everything_noise_is_excluded(tmp_path: Path) -> None:
    cfg = compose("regroup", [*BASE, "regroup.k_values=[10,200]", f"output_dir={tmp_path}"])
    with pytest.warns(UserWarning, match=r"min_cluster_size=200 is excluded"):
        summary = regroup(cfg)
    ten, two_hundred = summary["scores"]
    assert ten["value"] == 10 and ten["excluded"] is None and ten["k_found"] >= 2
    assert summary["chosen"]["value"] == 10 and summary["k"] == ten["k_found"]
    assert two_hundred["excluded"]  # the reason: every point noise, or a single cluster
    table = format_summary(summary)
    assert f"excluded: {two_hundred['excluded']}" in table
    sweep_json = json.loads((tmp_path / "regroup_sweep.json").read_text())
    assert sweep_json["rows"][1]["excluded"] == two_hundred["excluded"]
    assert "excluded" in (tmp_path / "regroup.md").read_text()


def test_no_valid_value_names_the_key_and_each_reason(tmp_path: Path) -> None:
    cfg = compose("regroup", [*BASE, "regroup.k_values=[200,205]", f"output_dir={tmp_path}"])
    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        regroup(cfg)
    msg = str(err.value)
    assert "regroup.k_values" in msg
    assert "min_cluster_size=200:" in msg and "min_cluster_size=205:" in msg
