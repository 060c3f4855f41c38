"""DDP (gloo, 2 CPU processes): identical mixtures on every rank, equal to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.ddp


def _rnb_train(out: Path, overrides: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "rnb.train",
        *overrides,
        f"hydra.run.dir={out}",
        f"output_dir={out}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


def test_ddp_ranks_agree_and_match_single_process(tmp_path: Path) -> None:
    base = [o for o in TINY if not o.startswith("data.batch_size")]
    common = [*base, "strategy=rnb", "trainer.max_steps=12", "initial_eval=false", "logger=none"]
    ddp = _rnb_train(tmp_path / "ddp", [*common, "trainer=ddp_cpu", "data.batch_size=4"])
    single = _rnb_train(tmp_path / "single", [*common, "data.batch_size=8"])

    assert ddp["rank_weight_spread"] == 0.0  # checked every round inside the callback
    assert ddp["rank_checks"] == ddp["rounds"] == 3  # ... and the check really ran, once a round
    assert single["rank_checks"] == 0  # one process: nothing to compare
    assert len(ddp["weights_trajectory"]) == len(single["weights_trajectory"]) == 4
    for a, b in zip(ddp["weights_trajectory"], single["weights_trajectory"], strict=True):
        assert a["step"] == b["step"]
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-4)
    assert ddp["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-3)
    # draws are summed over ranks: the same global batches as one process (tail included)
    assert ddp["examples_per_domain"] == single["examples_per_domain"]
    assert sum(ddp["examples_per_domain"].values()) == 12 * 8
    assert ddp["tokens_per_domain"] == single["tokens_per_domain"]
