"""End-to-end training through Lightning's Trainer: summary contract, learning, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.config import compose
from rnb.train import train
from tests.helpers import Crash, CrashAt

SUMMARY_KEYS = {
    "eval_loss",
    "eval_loss_per_domain",
    "domains",
    "eval_proportions",
    "strategy",
    "steps",
    "wall_time_s",
    "weights_trajectory",
    "seed",
    "config",
    "overhead",
}


def _run(tmp: Path, overrides: list[str], callbacks: list | None = None) -> dict:
    cfg = compose("train", [*overrides, f"output_dir={tmp}"])
    return train(cfg, callbacks=callbacks)


def test_train_writes_summary_and_learns(tmp_path: Path, tiny_overrides: list[str]) -> None:
    summary = _run(tmp_path, [*tiny_overrides, "trainer.max_steps=24"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(on_disk) >= SUMMARY_KEYS
    assert on_disk["steps"] == 24
    assert on_disk["gq_norms"] == []  # R&B's ‖Gq‖ per round; stratified has none
    assert math.isfinite(summary["eval_loss"])
    assert summary["eval_loss"] < summary["eval_loss_initial"] - 0.5
    # val/loss is the q-weighted average of the per-domain losses
    per = summary["eval_loss_per_domain"]
    q = dict(zip(summary["domains"], summary["eval_proportions"], strict=True))
    assert math.isclose(sum(q[d] * per[d] for d in per), summary["eval_loss"], rel_tol=1e-6)
    assert (tmp_path / "logs" / "metrics.csv").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    steps = [t["step"] for t in summary["weights_trajectory"]]
    assert steps == [0, 4, 8, 12, 16, 20, 24]


def test_natural_strategy_weights_follow_domain_sizes(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    summary = _run(tmp_path, [*tiny_overrides, "strategy=natural"])
    sizes = np.asarray(summary["domain_sizes"], dtype=float)
    np.testing.assert_allclose(summary["final_weights"], sizes / sizes.sum())


def _callback_state(ckpt: Path) -> dict:
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    (key,) = [k for k in state["callbacks"] if "BalanceCallback" in k]
    return state["callbacks"][key]


def test_resume_matches_uninterrupted_run(tmp_path: Path, tiny_overrides: list[str]) -> None:
    # A strategy whose weights change every round, so the trajectory is a real check.
    over = [
        *tiny_overrides,
        "strategy=static",
        "+strategy.weights=[1,2,3,4,5,6]",
        "trainer.max_steps=16",
        "checkpoint.every_n_train_steps=3",
    ]
    full = _run(tmp_path / "full", over)

    # Kill a run right after step 10 (last checkpoint: step 9, mid-round), resume it.
    with pytest.raises(Crash):
        _run(tmp_path / "part", over, callbacks=[CrashAt(10)])
    ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    state = _callback_state(ckpt)  # loads with weights_only=True
    assert state["batches_seen"] == 9
    resumed = _run(tmp_path / "part", [*over, "resume=auto"])

    assert resumed["weights_trajectory"] == full["weights_trajectory"]
    assert resumed["steps"] == full["steps"] == 16
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-4)
