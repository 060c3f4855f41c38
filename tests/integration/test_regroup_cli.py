"""`rnb-regroup` and the README's Regroup commands (issue 8 kind 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rnb.cli.regroup import format_summary, regroup
from rnb.config import compose
from rnb.regroup.selection import expand_values

README_RANGE = "regroup.k_values={start: 10, stop: 61, step: 10}"  # verbatim from README
TINY = [
    "regroup/embedder=tfidf",
    "regroup.embedder.progress=false",
    "data.synthetic.n_train=600",
    "data.synthetic.n_eval=100",
]


CASES = [("regroup", o) for o in ("kmeans", "minibatch", "faiss", "hdbscan", "umap_hdbscan")]


@pytest.mark.parametrize(("app", "option"), [*CASES, ("train", "kmeans")])
@pytest.mark.parametrize(
    ("override", "expected"),
    [(README_RANGE, [10, 20, 30, 40, 50, 60]), ("regroup.k_values=[10,20]", [10, 20])],
    ids=["range", "list"],
)
def test_both_k_values_forms_override_every_option(
    app: str, option: str, override: str, expected: list[int]
) -> None:
    """`Cannot merge DictConfig with ListConfig` is gone: either form replaces the default."""
    cfg = compose(app, [f"regroup={option}", override])
    assert expand_values(instantiate(cfg.regroup, _convert_="all").k_values) == expected


@pytest.mark.slow  # ~12 s on an idle machine (a Hydra app in a fresh interpreter)
def test_rnb_regroup_runs_the_readme_range(tmp_path: Path) -> None:
    """The README command, verbatim plus tiny-data overrides, in a real `rnb-regroup`."""
    exe = Path(sys.executable).with_name("rnb-regroup")
    cmd = [str(exe), "regroup=faiss", README_RANGE, *TINY, f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "regroup_summary.json").read_text(encoding="utf-8"))
    assert [r["value"] for r in summary["scores"]] == [10, 20, 30, 40, 50, 60]
    assert f"chosen k = {summary['k']}  ({summary['why']})" in proc.stdout
    for name in ("regroup.json", "regroup.md", "regroup_sweep.json", "regroup_sweep.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_original_prints_why_not_none(tmp_path: Path) -> None:
    summary = regroup(compose("regroup", ["regroup=original", *TINY, f"output_dir={tmp_path}"]))
    first = format_summary(summary).splitlines()[0]
    assert (
        first == "chosen k = 6  (kept the 6 predefined domains of data.domain_field (no k sweep))"
    )
    assert sum(summary["sizes"]) == 600
    assert (tmp_path / "regroup.md").exists() and not (tmp_path / "regroup_sweep.png").exists()
