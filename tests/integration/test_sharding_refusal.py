"""``trainer=fsdp_cpu strategy=doge``: refused when the run is built, before any evaluation,
process launch or summary (the probe would meet FSDP's sharded weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnb.config import compose
from rnb.train import train


def test_fsdp_with_a_gradient_probe_strategy_is_refused_before_the_run(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    cfg = compose(
        "train",
        [*tiny_overrides, "strategy=doge", "trainer=fsdp_cpu", "logger=none",
         f"output_dir={tmp_path}"],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"strategy DoGE needs GradientProbe.*trainer=gpu \(DDP\)"):
        train(cfg)
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "checkpoints").exists()
