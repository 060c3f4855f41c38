"""The analysis notebook runs on tiny runs' outputs (its figures render inline through
``rnb.report``); the aggregation helpers are right."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rnb.config import compose
from rnb.report.aggregate import compare, load_runs, weights_frame
from rnb.train import train

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analyze_runs.ipynb"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("runs")
    os.environ.setdefault("RNB_CACHE_DIR", str(root / "cache"))
    for strategy, seed in (("stratified", 0), ("natural", 0), ("stratified", 1)):
        over = [*TINY, "trainer.max_steps=8", f"strategy={strategy}", f"seed={seed}"]
        train(compose("train", [*over, f"output_dir={root / f'{strategy}_{seed}'}"]))
    regrouped = [*TINY, "trainer.max_steps=8", "strategy=rnb", "regroup=kmeans",
                 "regroup/embedder=tfidf", "regroup.embedder.progress=false",
                 "regroup.k_values=[4,8]", f"output_dir={root / 'rnb_regrouped'}"]  # fmt: skip
    train(compose("train", regrouped))  # the notebook's k-sweep and clusters cells
    return root


def test_aggregate_tables(runs_dir: Path) -> None:
    runs = load_runs(runs_dir)
    assert len(runs) == 4 and set(runs["strategy"]) == {"Stratified", "Natural", "RnB"}
    table = compare(runs)
    strat = table.loc[("Stratified", "none")]
    assert strat["n"] == 2
    assert strat["eval_loss_mean"] == pytest.approx(
        runs[runs.strategy == "Stratified"].eval_loss.mean()
    )
    w = weights_frame(runs_dir / "natural_0" / "summary.json")
    assert list(w.index) == [0, 4, 8] and w.shape[1] == runs.iloc[0]["k"]


def test_notebook_executes(runs_dir: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["RNB_RUNS"] = str(runs_dir)
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the figures render inline: Fig. 2, 3 (right), 5, 6 and the cluster sizes
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    assert "top_terms" in text and "Stratified" in text and "4 runs, 4 completed" in text
