"""R&B through Lightning: weights move, Gram matrices saved, overhead metered, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnb.config import compose
from rnb.train import train
from tests.helpers import full_and_resumed


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_rnb_run(tmp_path: Path, tiny_overrides: list[str], mode: str) -> None:
    over = [
        *tiny_overrides,
        "strategy=rnb",
        f"balance.capture.mode={mode}",
        "balance.capture.sketch_out=64",
        "balance.capture.sketch_in=16",
        f"output_dir={tmp_path}",
    ]
    summary = train(compose("train", over))
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    assert traj.shape[0] == 4  # p0 + 3 rounds of 4 steps
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)
    assert np.abs(traj[1:] - traj[0]).max() > 1e-3  # the strategy moved the mixture
    assert len(summary["gram_rounds"]) == 3
    G = np.load(summary["gram_rounds"][0])
    np.testing.assert_allclose(G, G.T, rtol=1e-6, atol=1e-12)
    assert summary["balance_memory_bytes"] > 0
    assert summary["overhead"]["flops_pct"] > 0 and summary["overhead"]["wall_pct"] > 0
    assert summary["strategy"]["name"] == "RnB"
    # per-round mixture metrics reach the logger at each round's step
    logged = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    rows = logged.dropna(subset=["balance/gq_norm"])
    assert rows["step"].tolist() == [4, 8, 12]
    cols = [f"balance/weight/{d}" for d in summary["domains"]]
    np.testing.assert_allclose(rows[cols].to_numpy(), traj[1:], rtol=1e-6)
    np.testing.assert_allclose(rows["balance/gq_norm"], summary["gq_norms"], rtol=1e-6)
    assert all(x > 0 for x in summary["gq_norms"])


def test_rnb_resume_mid_round_is_exact(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [
        *tiny_overrides,
        "strategy=rnb",
        "trainer.max_steps=16",
        "checkpoint.every_n_train_steps=3",
        "initial_eval=false",
    ]
    full, resumed = full_and_resumed(
        over, tmp_path, crash_at=10
    )  # last checkpoint at step 9: one step into round 3
    a = np.array([t["weights"] for t in full["weights_trajectory"]])
    b = np.array([t["weights"] for t in resumed["weights_trajectory"]])
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert len(full["gq_norms"]) == 4  # one per round, the rounds before the crash restored
    np.testing.assert_allclose(resumed["gq_norms"], full["gq_norms"], rtol=1e-9)
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-5)
    # the per-domain ledger (mid-round draws included) survives the crash exactly
    for key in ("tokens_per_domain", "examples_per_domain", "average_weights", "starved_domains"):
        assert resumed[key] == full[key], key


def test_warmup_rounds_keep_uniform_weights(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, "strategy=rnb", "balance.warmup_rounds=2", "initial_eval=false"]
    summary = train(compose("train", [*over, f"output_dir={tmp_path}"]))
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    m = traj.shape[1]
    np.testing.assert_allclose(traj[:3], 1.0 / m)  # p0 + two warm-up rounds
    assert np.abs(traj[3] - 1.0 / m).max() > 1e-3  # then R&B takes over
