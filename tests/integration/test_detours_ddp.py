"""Skill-It under DDP (gloo, 2 CPU processes): the same graph and mixtures on every rank,
equal to one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY
from tests.integration.test_ddp import _rnb_train

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def _ddp_and_single(tmp_path: Path, overrides: list[str]) -> tuple[dict, dict]:
    """Summaries of 2 gloo ranks x batch 4 and of one process x batch 8 (same global batch)."""
    base = [o for o in TINY if not o.startswith("data.batch_size")]
    common = [*base, *overrides, "initial_eval=false", "logger=none"]
    ddp = _rnb_train(tmp_path / "ddp", [*common, "trainer=ddp_cpu", "data.batch_size=4"])
    single = _rnb_train(tmp_path / "single", [*common, "data.batch_size=8"])
    return ddp, single


def test_skillit_ddp_ranks_agree_and_match_single_process(tmp_path: Path) -> None:
    ddp, single = _ddp_and_single(
        tmp_path, ["strategy=skillit", "strategy.graph_steps=3", "trainer.max_steps=8"]
    )
    assert ddp["rank_weight_spread"] == 0.0
    assert ddp["rank_checks"] == ddp["rounds"] + 1  # + p_0 after the graph runs
    # the sandboxed graph runs average gradients over ranks: the single-process graph
    np.testing.assert_allclose(
        ddp["strategy"]["skills_graph"], single["strategy"]["skills_graph"], atol=1e-4
    )
    for a, b in zip(ddp["weights_trajectory"], single["weights_trajectory"], strict=True):
        assert a["step"] == b["step"]
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-5)
    assert ddp["detours"] == single["detours"]
    # FLOPs of all ranks: the same analytic overhead as one process
    assert ddp["overhead"]["extra_flops"] == pytest.approx(single["overhead"]["extra_flops"])


def test_aioli_ddp_inline_detours_match_single_process(tmp_path: Path) -> None:
    ddp, single = _ddp_and_single(
        tmp_path,
        [
            "strategy=aioli",
            "strategy.lp_rounds=1",
            "strategy.lp_steps=1",
            "balance.steps_per_round=8",
            "trainer.max_steps=10",
        ],
    )
    assert ddp["rank_weight_spread"] == 0.0
    assert ddp["rank_checks"] == ddp["rounds"] + 1  # + the start LearnParams mixture (step 7)
    assert ddp["detours"] == single["detours"]
    assert ddp["examples_per_domain"] == single["examples_per_domain"]  # same detour batches
    for a, b in zip(ddp["weights_trajectory"], single["weights_trajectory"], strict=True):
        assert a["step"] == b["step"]
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-5)
