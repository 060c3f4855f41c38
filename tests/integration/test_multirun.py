"""Issue 8 kind 8: a multirun with many (and path-valued) overrides gets flat, short job dirs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli import run_cli
from tests.conftest import TINY


def test_multirun_with_many_overrides_has_flat_job_dirs(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "deeply" / "nested" / "cache"  # path-valued override
    sweep = tmp_path / "sweep"
    overrides = [*TINY, "trainer.max_steps=4", "initial_eval=false", f"data.cache_dir={cache}"]
    assert len(overrides) >= 10 and len("_".join(overrides)) > 255  # over the file-name limit
    run_cli(["rnb-train", "-m", *overrides, "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]  # flat: no nesting from '/' in values
    for num, job in enumerate(jobs):
        recorded = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"data.cache_dir={cache}" in recorded and f"seed={num}" in recorded
        summary = json.loads((job / "summary.json").read_text())
        assert summary["seed"] == num and summary["steps"] == 4
