"""FSDP (trainer=fsdp_cpu: 2 gloo processes, parameters sharded): R&B gives the mixture
trajectory of one process, the head sharded or not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.config import compose
from rnb.train import train
from tests.cli import run_cli
from tests.conftest import TINY

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_fsdp_rnb_matches_single_process(tmp_path: Path) -> None:
    base = [o for o in TINY if not o.startswith("data.batch_size")]
    # initial_eval stays on: trainer.validate wraps the model before fit does (the root unit
    # must be reused, not re-wrapped over parameters already sharded)
    common = [*base, "strategy=rnb", "logger=none"]
    out = tmp_path / "fsdp"
    run_cli(
        ["rnb-train", *common, "trainer=fsdp_cpu", "data.batch_size=4",
         f"hydra.run.dir={out}", f"output_dir={out}"],
        cwd=tmp_path,
    )  # fmt: skip
    fsdp = json.loads((out / "summary.json").read_text())
    single = train(
        compose("train", [*common, "data.batch_size=8", "threads=1", f"output_dir={tmp_path}/1"])
    )

    assert fsdp["status"] == "completed" and fsdp["steps"] == 12
    assert fsdp["rank_weight_spread"] == 0.0 and fsdp["rank_checks"] == fsdp["rounds"] == 3
    # counted before sharding: a rank holds only its shard afterwards
    assert fsdp["num_parameters"] == single["num_parameters"]
    assert len(fsdp["weights_trajectory"]) == len(single["weights_trajectory"]) == 4
    for a, b in zip(fsdp["weights_trajectory"], single["weights_trajectory"], strict=True):
        assert a["step"] == b["step"]
        # same tolerance as DDP vs one process (test_ddp.py): float summation order only
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-4)
    moved = max(abs(w - 1 / 6) for w in fsdp["weights_trajectory"][1]["weights"])
    assert moved > 0.05  # the mixture really moved, so the comparison can fail
    assert fsdp["eval_loss_initial"] == pytest.approx(single["eval_loss_initial"], abs=1e-4)
    # trainer.gradient_clip_val=1.0 goes through FSDP's global norm (Lightning's plugin raises)
    assert fsdp["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-3)
    assert fsdp["examples_per_domain"] == single["examples_per_domain"]

    # last.ckpt holds the whole (gathered) model in one file: what resume=auto reads
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = ckpt["state_dict"]
    head = weights["model.lm_head.weight"]
    assert head.shape == (fsdp["config"]["data"]["tokenizer"]["vocab_size"], 32)
    tied = sum(v.numel() for k, v in weights.items() if k != "model.lm_head.weight")
    assert tied == fsdp["num_parameters"]  # every parameter whole (the head is tied to wte)
