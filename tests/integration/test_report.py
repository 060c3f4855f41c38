"""``rnb-report`` on a real multirun: one command gives the complete report.

A tiny ``rnb-train -m strategy=stratified,rnb seed=0,1`` sweep runs once per module; one
job's summary is then marked failed (as a crashed job writes it). The report's numbers are
recomputed here from the summaries themselves. The console scripts run in-process
(``tests/cli.run_main``: same entry point and argv, no 15-25 s interpreter start);
``test_readme_commands.py`` starts each installed script once as a subprocess.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnb.cli.report import main
from rnb.regroup.advice import summary_advice
from rnb.report.tables import RESULT_COLUMNS
from tests.cli import run_main
from tests.conftest import TINY

PNG = b"\x89PNG\r\n\x1a\n"
SHORT = ["trainer.max_steps=8", "trainer.val_check_interval=4"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    out = root / "multirun"
    argv = ["rnb-train", "-m", *TINY, *SHORT, "strategy=stratified,rnb", "seed=0,1"]
    # hydra/callbacks=report writes the sweep's report when the sweep ends; kept aside so the
    # rnb-report tests below (same default --out) start from a clean folder
    run_main([*argv, "hydra/callbacks=report", f"hydra.sweep.dir={out}"], root)
    shutil.move(out / "report", root / "callback_report")
    return out


def _summaries(sweep: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def _mark_failed(sweep: Path) -> Path:
    """Mark the RnB seed-1 job failed (idempotent); returns its run dir."""
    for run, s in _summaries(sweep).items():
        if s["strategy"]["name"] == "RnB" and s["seed"] == 1:
            s["status"] = "failed"
            s["failure"] = {"step": 4, "reason": "injected by the test", "type": "RuntimeError"}
            (run / "summary.json").write_text(json.dumps(s))
            return run
    raise AssertionError("no RnB seed-1 job in the sweep")


def test_report_of_a_real_multirun(sweep: Path) -> None:
    failed = _mark_failed(sweep)
    summaries = _summaries(sweep)
    assert len(summaries) == 4
    proc = run_main(["rnb-report", str(sweep)], sweep.parent)
    out = sweep / "report"  # the default --out
    assert proc.stdout.strip() == f"report: {out / 'report.md'}"
    md = (out / "report.md").read_text()

    table = pd.read_csv(out / "report.csv")
    assert list(table.columns) == RESULT_COLUMNS
    assert sorted(zip(table.strategy, table.grouping, strict=True)) == [
        ("RnB", "predefined"),
        ("Stratified", "predefined"),
    ]
    table = table.set_index("strategy")
    strat = [s["eval_loss"] for s in summaries.values() if s["strategy"]["name"] == "Stratified"]
    rnb = [
        s["eval_loss"]
        for s in summaries.values()
        if s["strategy"]["name"] == "RnB" and s["status"] == "completed"
    ]
    assert len(strat) == 2 and len(rnb) == 1  # the failed run's loss is no result
    mean, std = float(np.mean(strat)), float(np.std(strat, ddof=1))
    assert table.loc["Stratified", "eval_loss_mean"] == pytest.approx(mean, rel=1e-12)
    assert table.loc["Stratified", "eval_loss_std"] == pytest.approx(std, rel=1e-12)
    assert table.loc["Stratified", "seeds"] == "0 1"
    assert table.loc["RnB", "eval_loss_mean"] == pytest.approx(rnb[0], rel=1e-12)
    assert math.isnan(table.loc["RnB", "eval_loss_std"])
    assert (table.loc["RnB", "n"], table.loc["RnB", "n_not_completed"]) == (1, 1)
    flops = [s["overhead"]["flops_pct"] for s in summaries.values() if s["status"] == "completed"
             and s["strategy"]["name"] == "RnB"]  # fmt: skip
    assert table.loc["RnB", "flops_pct"] == pytest.approx(flops[0]) and flops[0] > 0
    best = "RnB" if rnb[0] < mean else "Stratified"
    assert table["best"].to_dict() == {"RnB": best == "RnB", "Stratified": best == "Stratified"}

    strat_cell = f"{mean:.3f} ± {std:.3f}"
    rnb_cell = f"{rnb[0]:.3f}"
    for name, cell in (("Stratified", strat_cell), ("RnB", rnb_cell)):
        shown = f"**{cell}**" if name == best else cell
        assert f"| {name} | predefined | 6 | {shown} |" in md
    # the failed run: listed with its reason, and nowhere averaged
    listed = md[md.index("## Runs that did not complete") :]
    assert f"| {failed} | RnB | predefined | 1 | failed | 4 | injected by the test |" in listed
    # per-domain table: the testbed's 6 predefined domains
    domains = next(iter(summaries.values()))["domains"]
    assert len(domains) == 6 and all(f"| {d} |" in md for d in domains)
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "completed", "completed", "failed"]

    for name in ("eval_curves", "trajectories", "weights_vs_eval"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000, name
        assert f"(figures/{name}.png)" in md
    assert not (out / "figures" / "k_sweep.png").exists()  # no Regroup in this sweep


def test_unfinished_run_and_out_option(sweep: Path, tmp_path: Path) -> None:
    """A job killed before its summary is listed as unfinished; ``--out`` is honoured."""
    killed = tmp_path / "killed_job"
    shutil.copytree(next(sweep.glob("0")), killed)
    (killed / "summary.json").unlink()
    assert main([str(sweep), str(killed), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| unfinished |" in md and "no summary.json (killed, or still running)" in md
    assert f"| {killed} |" in md
    assert main([str(tmp_path / "nothing_here")]) == 2  # a missing dir: an error, no report


@pytest.mark.slow
def test_k_sweep_report_of_real_runs(tmp_path: Path) -> None:
    """Regrouped runs with one k each: Fig. 2 with R², rows split by ``regroup.k_values``."""
    out = tmp_path / "ks"
    argv = ["rnb-train", "-m", *TINY, *SHORT, "strategy=rnb", "regroup=kmeans",
            "regroup/embedder=tfidf", "regroup.embedder.progress=false",
            "regroup.k_values=[4],[8],[12]"]  # fmt: skip
    run_main([*argv, f"hydra.sweep.dir={out}"], tmp_path)
    assert main([str(out)]) == 0
    md = (out / "report" / "report.md").read_text()
    for k in (4, 8, 12):
        assert f"| {k} |" in md and f"regroup.k_values=[{k}]" in md
    assert (out / "report" / "figures" / "k_sweep.png").stat().st_size > 20_000
    assert "## Choice of k" in md


def test_readme_embeds_a_small_committed_figure() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)]+\.png)\)", readme)
    assert figures, "README.md embeds no docs/figures/*.png"
    for rel in figures:
        data = (root / rel).read_bytes()
        assert data[:8] == PNG and 10_000 < len(data) < 100_000, rel


def test_rnb_regroup_and_its_report_flag_an_edge_sweep(tmp_path: Path) -> None:
    """The testbed has 20 latent skills: a 4-8-12 sweep peaks at its top edge, and the
    printed table, ``regroup.md`` and ``regroup.json`` carry the same note."""
    out = tmp_path / "rg"
    proc = run_main(
        ["rnb-regroup", "data.synthetic.n_train=400", "data.synthetic.n_eval=80",
         "regroup/embedder=tfidf", "regroup.embedder.progress=false",
         "regroup.k_values=[4,8,12]", f"hydra.run.dir={out}"],
        tmp_path,
    )  # fmt: skip
    summary = json.loads((out / "regroup_summary.json").read_text())
    advice = summary_advice(summary)
    assert summary["chosen"]["value"] == 12 and advice is not None and advice.edge == "high"
    assert f"NOTE: {advice.message}" in proc.stdout
    assert f"**Note:** {advice.message}" in (out / "regroup.md").read_text()
    saved = json.loads((out / "regroup.json").read_text())["selection"]["advice"]
    assert saved["suggested_k_values"] == advice.suggested == [12, 16, 20, 24, 28]


def test_readme_lists_the_report_csv_columns() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `report.csv` |"))
    assert re.findall(r"`([a-z_]+)`", row.split("|")[2]) == RESULT_COLUMNS


def test_hydra_callback_writes_the_sweep_report(sweep: Path) -> None:
    """``hydra/callbacks=report``: one report over every job, written when the sweep ends."""
    out = sweep.parent / "callback_report"
    assert (out / "report.md").is_file() and len(list((out / "figures").glob("*.png"))) >= 3
    table = pd.read_csv(out / "report.csv").set_index("strategy")
    assert sorted(table.index) == ["RnB", "Stratified"]
    assert (table["n"] == 2).all() and (table["n_not_completed"] == 0).all()
    for name in ("RnB", "Stratified"):  # eval_loss is kept when a test marks a run failed
        losses = [
            s["eval_loss"] for s in _summaries(sweep).values() if s["strategy"]["name"] == name
        ]
        assert table.loc[name, "eval_loss_mean"] == pytest.approx(np.mean(losses), rel=1e-12)
