"""benchmarks/methods_table.py: DoReMi's chain, the table's cells, resumability."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.helpers import load_benchmark


@pytest.mark.slow
def test_methods_table_runs_doremi_chain_and_tabulates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("methods_table")
    out = tmp_path / "bench"
    argv = ["methods_table.py", "--methods", "doremi→final", "rnb", "--seeds", "0"]
    argv += ["--groupings", "predefined", "--out", str(out), *TINY, "initial_eval=false"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    # doremi→final pulled in its chain: the stratified reference, then the DoReMi proxy
    for method in ("stratified", "doremi", "doremi_to_final", "rnb"):
        assert (out / "predefined" / method / "seed0" / "summary.json").exists(), method
    proxy = json.loads((out / "predefined" / "doremi" / "seed0" / "summary.json").read_text())
    final = json.loads(
        (out / "predefined" / "doremi_to_final" / "seed0" / "summary.json").read_text()
    )
    assert final["final_weights"] == pytest.approx(proxy["average_weights"], abs=1e-12)
    table = (out / "methods_table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert list(rows) == ["stratified", "doremi", "doremi→final", "rnb"]
    assert table.splitlines()[0] == (
        "| method | eval loss (predefined) | FLOPs % (predefined) | wall % (predefined) "
        "| extra runs |"
    )
    ov = proxy["overhead"]
    assert rows["doremi"].startswith(
        f"| doremi | {proxy['eval_loss']:.3f} | {ov['flops_pct']:.2f} | {ov['wall_pct']:.2f} |"
    )
    assert rows["doremi→final"].rstrip(" |").endswith("2")  # reference + proxy runs
    first = capsys.readouterr().out
    bench.main()  # resumable: every run is kept, only the table is rebuilt
    assert "seed 0: eval_loss" not in capsys.readouterr().out
    assert "seed 0: eval_loss" in first
    # --no-run: a seed with no runs yet is not trained; the table keeps the seed-0 cells
    monkeypatch.setattr(sys, "argv", [*argv[:5], "0", "1", *argv[6:], "--no-run"])
    bench.main()
    assert not (out / "predefined" / "rnb" / "seed1").exists()
    partial = (out / "methods_table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in partial.splitlines()[2:]}
    assert list(rows) == ["stratified", "doremi", "doremi→final", "rnb"]
    assert f"| {proxy['eval_loss']:.3f} (1 of 2 seeds) |" in rows["doremi"]
    assert all(row.count("(1 of 2 seeds)") == 1 for row in rows.values())
