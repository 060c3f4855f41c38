"""Weights transferred between real runs: the callback fills the domain fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.config import compose
from rnb.train import train


def _train(out: Path, overrides: list[str]) -> dict:
    return train(compose("train", [*overrides, f"output_dir={out}"]))


def test_from_summary_checks_the_domain_definition(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "trainer.max_steps=4"]
    source = _train(tmp_path / "natural", [*over, "strategy=natural"])  # p ∝ domain sizes
    path = tmp_path / "natural" / "summary.json"
    static = ["strategy=static", f"strategy.from_summary={path}"]

    same = _train(tmp_path / "same", [*over, *static])
    np.testing.assert_allclose(same["final_weights"], source["final_weights"])
    assert same["strategy"]["transfer"]["fingerprint"] == {
        "source": "data.domain_field=domain",
        "run": "data.domain_field=domain",
    }

    # The 20 latent skills instead of the 6 categories: other domains, other definition.
    with pytest.raises(ValueError) as info:
        _train(tmp_path / "skills", [*over, *static, "data.domain_field=reference"])
    text = str(info.value)
    assert "defined by data.domain_field=domain, this run's by data.domain_field=reference" in text
    assert "missing [" in text and "extra [" in text
    failed = json.loads((tmp_path / "skills" / "summary.json").read_text())
    assert (
        failed["status"] == "failed" and "strategy.check_fingerprint" in failed["failure"]["reason"]
    )
