"""ODM under DDP (gloo, 2 CPU processes): every rank holds the same mixture as one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data_files import FILES
from tests.integration.test_ddp import _rnb_train
from tests.integration.test_odm_train import planted_file

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_odm_ddp_ranks_agree_and_match_single_process(tmp_path: Path) -> None:
    base = [o for o in FILES if not o.startswith("data.batch_size")]
    common = [
        *base,
        f"data.train_path={planted_file(tmp_path)}",
        "strategy=odm",
        "strategy.reward=importance",  # state-dependent: rank drift would show
        "strategy.warmup_steps=0",
        "balance.steps_per_round=null",
        "trainer.max_steps=12",
        "initial_eval=false",
        "logger=none",
    ]
    ddp = _rnb_train(tmp_path / "ddp", [*common, "trainer=ddp_cpu", "data.batch_size=2"])
    single = _rnb_train(tmp_path / "single", [*common, "data.batch_size=4"])
    assert ddp["rank_weight_spread"] == 0.0
    assert ddp["rank_checks"] == ddp["rounds"] == 12  # the check ran every (one-step) round
    a = np.array([t["weights"] for t in ddp["weights_trajectory"]])
    b = np.array([t["weights"] for t in single["weights_trajectory"]])
    assert a.shape == b.shape == (13, 4) and np.abs(a[-1] - 0.25).max() > 1e-3
    np.testing.assert_allclose(a, b, atol=1e-4)  # rewards summed over ranks = one process
