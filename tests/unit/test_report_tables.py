"""rnb-report's table maths on hand-made run dirs: mean ± std, best marking, which configs
are averaged together (seed-derived keys merge, any other difference splits and is named),
and every run that did not complete is listed with its reason."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rnb.report.groups import group_runs
from rnb.report.runs import find_runs
from rnb.report.tables import (
    RESULT_COLUMNS,
    failed_table,
    mean_std,
    per_domain_tables,
    results_markdown,
    results_table,
)

DOMAINS = ["a", "b"]


def _config(seed: int, **over: Any) -> dict[str, Any]:
    cfg = {
        "seed": seed,
        "output_dir": f"/out/{seed}",
        "data": {"seed": seed, "cache_dir": f"/cache/{seed}", "batch_size": 8},
        "strategy": {"_target_": "rnb.balance.strategies.rnb.RnB", "lambda_": 3.0},
        "regroup": None,
        "trainer": {"max_steps": 12, "enable_progress_bar": seed == 0},
        "logger": {"save_dir": f"/out/{seed}"},
    }
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _run(
    root: Path, name: str, seed: int, loss: float | None, status: str = "completed", **over: Any
) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    failure = None if status == "completed" else {"step": 5, "reason": f"{name} broke"}
    summary = {
        "status": status,
        "failure": failure,
        "eval_loss": loss,
        "eval_loss_per_domain": {"a": loss, "b": None if loss is None else loss + 1},
        "domains": DOMAINS,
        "eval_proportions": [0.25, 0.75],
        "strategy": {"name": "RnB"},
        "seed": seed,
        "overhead": {"flops_pct": 1.0 + seed, "wall_pct": 2.0 * (seed + 1)},
        "config": _config(seed, **over),
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_mean_std_is_the_sample_std_over_finite_values() -> None:
    assert mean_std([2.0, 4.0]) == pytest.approx((3.0, math.sqrt(2.0)))
    mean, std = mean_std([5.0, math.nan])
    assert mean == 5.0 and math.isnan(std)  # one value: no std
    assert all(math.isnan(x) for x in mean_std([]))


def test_seeds_are_averaged_and_other_differences_split(tmp_path: Path) -> None:
    _run(tmp_path, "s0", 0, 2.0)
    _run(tmp_path, "s1", 1, 4.0)
    _run(tmp_path, "s2", 2, 3.0)
    _run(tmp_path, "lam1_s0", 0, 1.0, strategy__lambda_=1.0)
    _run(tmp_path, "lam1_s1", 1, 1.5, strategy__lambda_=1.0)
    _run(tmp_path, "b16", 0, 9.0, data__batch_size=16)
    groups = group_runs(find_runs([tmp_path]))
    table = results_table(groups).set_index("differs")
    assert list(results_table(groups).columns) == RESULT_COLUMNS
    assert len(table) == 3  # data.seed, output_dir, cache_dir, progress bar never split
    base = table.loc["data.batch_size=8, strategy.lambda_=3.0"]
    vals = [2.0, 4.0, 3.0]
    assert base["eval_loss_mean"] == pytest.approx(np.mean(vals))
    assert base["eval_loss_std"] == pytest.approx(np.std(vals, ddof=1))
    assert base["n"] == 3 and base["seeds"] == "0 1 2"
    assert base["flops_pct"] == pytest.approx(2.0) and base["wall_pct"] == pytest.approx(4.0)
    lam = table.loc["data.batch_size=8, strategy.lambda_=1.0"]
    assert lam["eval_loss_mean"] == pytest.approx(1.25) and lam["best"]
    assert table["best"].sum() == 1
    single = table.loc["data.batch_size=16, strategy.lambda_=3.0"]
    assert single["n"] == 1 and math.isnan(single["eval_loss_std"])
    md = "\n".join(results_markdown(results_table(groups)))
    assert "| **1.250 ± 0.354** |" in md and "| 9.000 |" in md  # n = 1: no ± part
    assert "differs in" in md and "strategy.lambda_=1.0" in md


def test_a_key_following_the_seed_merges_only_with_hydra_evidence(tmp_path: Path) -> None:
    """``sampler_order`` equals the seed in both runs; without ``.hydra/config.yaml`` saying
    ``${seed}`` that is a real difference (it might be a swept value)."""
    a = _run(tmp_path, "s0", 0, 2.0, data__sampler_order=0)
    b = _run(tmp_path, "s1", 1, 4.0, data__sampler_order=1)
    assert len(group_runs(find_runs([tmp_path]))) == 2
    for run in (a, b):
        (run / ".hydra").mkdir()
        cfg = _config(0, data__sampler_order="${seed}")
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    groups = group_runs(find_runs([tmp_path]))
    assert len(groups) == 1 and groups[0].differs == {}
    assert "data.sampler_order" in groups[0].runs[0].seed_keys


def test_ignore_patterns_merge_rows(tmp_path: Path) -> None:
    _run(tmp_path, "p0", 0, 2.0, strategy__from_summary="/proxy/0/summary.json")
    _run(tmp_path, "p1", 1, 4.0, strategy__from_summary="/proxy/1/summary.json")
    assert len(group_runs(find_runs([tmp_path]))) == 2
    groups = group_runs(find_runs([tmp_path]), ignore=["strategy.from_summary"])
    assert len(groups) == 1 and len(groups[0].completed) == 2


def test_runs_that_did_not_complete_are_listed_never_averaged(tmp_path: Path) -> None:
    _run(tmp_path, "ok0", 0, 2.0)
    _run(tmp_path, "ok1", 1, 4.0)
    _run(tmp_path, "div", 2, None, status="diverged")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    killed = tmp_path / "killed"
    (killed / ".hydra").mkdir(parents=True)
    (killed / ".hydra" / "config.yaml").write_text(yaml.safe_dump(_config(3)))
    (killed / "logs").mkdir()
    (killed / "logs" / "metrics.csv").write_text("step,train/loss\n0,5.0\n7,4.0\n")
    regroup_only = tmp_path / "rg"  # an rnb-regroup run dir: not a training run
    (regroup_only / ".hydra").mkdir(parents=True)
    (regroup_only / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"regroup": {}}))
    runs = find_runs([tmp_path])
    assert sorted(r.path.name for r in runs) == ["bad", "div", "killed", "ok0", "ok1"]
    failed = failed_table(runs).set_index("run")
    assert failed.loc[str(tmp_path / "div"), "status"] == "diverged"
    assert failed.loc[str(tmp_path / "div"), "reason"] == "div broke"
    assert failed.loc[str(tmp_path / "div"), "step"] == 5
    assert failed.loc[str(killed), "status"] == "unfinished"
    assert "no summary.json" in failed.loc[str(killed), "reason"]
    assert "step 7" in failed.loc[str(killed), "reason"]
    assert failed.loc[str(bad), "status"] == "unreadable"
    table = results_table(group_runs(runs))
    row = table[table["n"] == 2].iloc[0]
    # the diverged run and the killed run share the completed runs' config: counted, not averaged
    assert row["eval_loss_mean"] == pytest.approx(3.0) and row["n_not_completed"] == 2


def test_per_domain_table_averages_within_a_domain_definition(tmp_path: Path) -> None:
    _run(tmp_path, "s0", 0, 2.0)
    _run(tmp_path, "s1", 1, 4.0)
    tables = per_domain_tables(group_runs(find_runs([tmp_path])))
    frame = tables["predefined"]
    assert list(frame.index) == DOMAINS and list(frame["q"]) == [0.25, 0.75]
    (col,) = [c for c in frame.columns if c != "q"]
    assert frame.loc["a", col] == pytest.approx(3.0) and frame.loc["b", col] == pytest.approx(4.0)
