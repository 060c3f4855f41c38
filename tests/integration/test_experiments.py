"""The shipped experiments (issue 12 item 2): the paper's settings, and runs on fixtures.

``conf/experiment/paper/*`` must carry the paper's settings (method.md) and run when the
user has the data and the model; here each runs on a tiny local file in the dataset's own
schema (tests/paper_fixtures.py) with the tiny GPT-Neo instead of the pretrained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from rnb.config import compose
from rnb.train import train
from tests.cli import run_cli
from tests.conftest import TINY
from tests.paper_fixtures import TOPICS, write_fixture

#: experiment -> (fixture schema, pretrained model, paper's best k, predefined domain count).
PAPER = {
    "dolly": ("dolly", "EleutherAI/gpt-neo-125M", 7, 8),
    "supnatinst": ("supnatinst", "EleutherAI/gpt-neo-125M", 30, 38),
    "supnatinst_test": ("supnatinst", "EleutherAI/gpt-neo-125M", 100, 60),
    "s1": ("s1", "Qwen/Qwen2-0.5B", 10, 54),
}

#: The tiny stand-ins: TINY's sizes (not its synthetic-data keys), the tiny GPT-Neo, TF-IDF.
PAPER_TINY = [
    *(o for o in TINY if not o.startswith("data.synthetic.")),
    "model=tiny_gptneo",
    "model.lr=3e-3",  # the paper's 5e-5 barely moves a random tiny model in 12 steps
    "regroup/embedder=tfidf",
    "regroup.embedder.progress=false",
    "regroup.k_values=[3,4,5]",
    "initial_eval=true",
]


def paper_overrides(name: str, root: Path) -> list[str]:
    """Data paths of experiment ``name`` pointed at fixtures written under ``root``."""
    kind = PAPER[name][0]
    over = [f"data.train_path={write_fixture(kind, root / f'{kind}_train.jsonl')}"]
    if name == "supnatinst_test":
        eval_file = write_fixture(kind, root / f"{kind}_test.jsonl", per_domain=10, seed=1)
        over.append(f"data.eval_path={eval_file}")
    return over


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_experiment_has_the_paper_settings(name: str, tmp_path: Path) -> None:
    kind, pretrained, best_k, original = PAPER[name]
    cfg = compose("train", [f"experiment=paper/{name}", f"output_dir={tmp_path}"])
    c = OmegaConf.to_container(cfg, resolve=False)
    assert c["model"]["pretrained"] == pretrained and c["model"]["lr"] == 5e-5
    assert c["data"]["tokenizer"]["name"] == "${model.pretrained}"  # the model's tokenizer
    assert (c["data"]["batch_size"], c["data"]["eval_batch_size"], c["data"]["max_length"]) == (
        16,
        16,
        512,
    )
    assert c["data"]["eval_fraction"] == 0.05 and c["trainer"]["max_steps"] == 2000
    assert cfg.strategy._target_.endswith(".RnB") and cfg.strategy.lambda_ == 3.0
    assert cfg.regroup.metric == "silhouette" and cfg.regroup.clusterer._target_.endswith("KMeans")
    ks = list(cfg.regroup.k_values)
    # The paper's best k and the predefined count lie inside the sweep, not at an edge.
    for k in (best_k, original):
        assert ks[0] < k < ks[-1] or k == ks[-1] == original, (k, ks)
    assert ks[0] < best_k < ks[-1]
    # Every field read exists in the dataset's schema (the fixture writes exactly that schema).
    sample = json.loads(write_fixture(kind, tmp_path / "f.jsonl", per_domain=1).open().readline())
    for field in [*cfg.data.text_fields, cfg.data.domain_field]:
        assert field in sample, (name, field, sorted(sample))


def test_paper_data_sources(tmp_path: Path) -> None:
    """Hub names where a public copy has the schema; a required path where none has (the
    Dolly source must not leak into supnatinst through the shared settings)."""
    data = {
        n: compose("train", [f"experiment=paper/{n}", f"output_dir={tmp_path}"]).data for n in PAPER
    }
    assert data["dolly"].train_path == "hf:databricks/databricks-dolly-15k"
    assert data["s1"].train_path == "hf:simplescaling/s1K-1.1"
    for n in ("supnatinst", "supnatinst_test"):
        assert OmegaConf.is_missing(data[n], "train_path"), n
    assert data["supnatinst"].eval_path is None and data["dolly"].eval_path is None
    with pytest.raises(InterpolationResolutionError, match=r"data\.eval_path is required"):
        _ = data["supnatinst_test"].eval_path
    given = compose(
        "train", ["experiment=paper/supnatinst_test", "data.eval_path=t.jsonl", "output_dir=x"]
    )
    assert given.data.eval_path == "t.jsonl"


def _run(name: str, tmp_path: Path, extra: list[str] = ()) -> dict:
    tiny = PAPER_TINY
    if "regroup=none" in extra:  # no Regroup: its embedder and k sweep are not in the config
        tiny = [o for o in tiny if not o.startswith("regroup")]
    over = [f"experiment=paper/{name}", *tiny, *paper_overrides(name, tmp_path), *extra]
    return train(compose("train", [*over, f"output_dir={tmp_path / 'run'}"]))


def _check_regrouped_rnb(summary: dict, tmp_path: Path) -> None:
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert summary["config"]["model"]["pretrained"] is None  # the tiny stand-in ran
    assert summary["regroup"]["k"] in (3, 4, 5) and len(summary["domains"]) >= 2
    assert summary["strategy"]["name"] == "RnB" and len(summary["gram_rounds"]) >= 2
    assert summary["eval_loss"] < summary["eval_loss_initial"]
    assert (tmp_path / "run" / "logs" / "metrics.csv").exists()


def test_paper_dolly_runs_on_a_fixture(tmp_path: Path) -> None:
    _check_regrouped_rnb(_run("dolly", tmp_path), tmp_path)


def test_paper_dolly_predefined_domains_are_the_categories(tmp_path: Path) -> None:
    """regroup=none + strategy=stratified (a sweep's predefined arm) over the experiment's
    k sweep: Regroup is off (its keys dropped, not an error), domains = the categories."""
    summary = _run("dolly", tmp_path, ["regroup=none", "strategy=stratified"])
    assert summary["status"] == "completed" and summary["regroup"] is None
    assert summary["config"]["regroup"] is None
    assert sorted(summary["domains"]) == sorted(TOPICS)


@pytest.mark.parametrize("name", ["supnatinst", "supnatinst_test", "s1"])
def test_paper_experiment_runs_on_a_fixture(name: str, tmp_path: Path) -> None:
    summary = _run(name, tmp_path)
    _check_regrouped_rnb(summary, tmp_path)
    if name == "supnatinst_test":  # eval = the test file (40 records), not a split of train
        assert summary["config"]["data"]["eval_path"].endswith("supnatinst_test.jsonl")
        assert sum(summary["domain_sizes"]) == 4 * 60


@pytest.mark.slow
def test_smoke_experiment_runs_regroup_and_rnb(tmp_path: Path) -> None:
    """experiment=smoke as shipped (no tiny overrides): Regroup + R&B + report end to end."""
    run_cli(["rnb-train", "experiment=smoke", f"hydra.run.dir={tmp_path}"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    report = pd.read_csv(tmp_path / "report" / "report.csv")  # hydra/callbacks=report
    assert report["eval_loss_mean"].tolist() == [summary["eval_loss"]]
    assert len(list((tmp_path / "report" / "figures").glob("*.png"))) == 4
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert summary["strategy"]["name"] == "RnB" and len(summary["gram_rounds"]) == 4
    assert summary["regroup"]["k"] in (12, 16, 20, 24)
    assert summary["eval_loss"] < summary["eval_loss_initial"]
