"""One domain (``data=files`` without ``data.domain_field``): every strategy trains (issue 8.3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rnb.config import compose
from rnb.train import train
from tests.data_files import FILES, write


def _strict_json(text: str) -> dict:
    def no_constants(name: str) -> float:
        raise ValueError(f"summary.json holds {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=stratified"],
        ["strategy=natural"],
        ["strategy=static", "strategy.weights=[1]"],
        ["strategy=rnb"],
    ],
    ids=["stratified", "natural", "static", "rnb"],
)
def test_every_strategy_trains_on_one_domain(tmp_path: Path, strategy: list[str]) -> None:
    """Reproducer: 200 rows without a domain field crashed in models/lm.py (0-d tensor)."""
    rows = [{"text": f"note {i}: the value of item {i % 13} is {i % 7}"} for i in range(200)]
    path = write("jsonl", rows, tmp_path)
    over = [*FILES, "data.domain_field=null", f"data.train_path={path}", *strategy]
    summary = train(compose("train", [*over, f"output_dir={tmp_path / 'run'}"]))
    on_disk = _strict_json((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["domains"] == summary["domains"] == ["all"]
    assert on_disk["steps"] == 12 and on_disk["domain_sizes"] == [160]
    assert on_disk["eval_proportions"] == [1.0] and on_disk["final_weights"] == [1.0]
    assert all(t["weights"] == [1.0] for t in on_disk["weights_trajectory"])
    assert math.isfinite(on_disk["eval_loss"]) and math.isfinite(on_disk["eval_loss_initial"])
    assert on_disk["eval_loss_per_domain"] == {"all": pytest.approx(on_disk["eval_loss"])}
    assert on_disk["eval_loss"] < on_disk["eval_loss_initial"]
