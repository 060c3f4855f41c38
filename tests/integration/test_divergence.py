"""A diverged or failed run stops, says so in a strict-JSON summary, and never passes for a result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from rnb.config import compose
from rnb.report.aggregate import compare, failed_runs, load_runs
from rnb.run.divergence import DivergedError
from rnb.train import train
from tests.helpers import Crash, CrashAt
from tests.integration.test_train import SUMMARY_KEYS

#: lr=1e6 makes the tiny model's loss non-finite at optimizer step 3 (deterministic: seed 0).
EXPLODE = ["strategy=rnb", "model.lr=1e6"]
DIVERGES_AT = 3


def _strict(path: Path) -> dict:
    """Parse like a non-Python JSON reader: a bare NaN / Infinity is an error."""

    def reject(token: str) -> None:
        raise ValueError(f"{path} is not strict JSON: {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def _train(out: Path, overrides: list[str], callbacks: list | None = None) -> dict:
    return train(compose("train", [*overrides, f"output_dir={out}"]), callbacks=callbacks)


@pytest.mark.parametrize(("tolerance", "stopped_after"), [(0, 4), (2, 6)])
def test_diverged_run_stops_with_status_step_and_hint(
    tmp_path: Path, tiny_overrides: list[str], tolerance: int, stopped_after: int
) -> None:
    over = [*tiny_overrides, *EXPLODE, f"divergence.max_nonfinite_steps={tolerance}"]
    with pytest.raises(DivergedError) as info:
        _train(tmp_path, over)
    err = info.value
    assert err.step == DIVERGES_AT
    assert "model.lr (now 1000000.0)" in str(err) and "trainer.gradient_clip_val" in str(err)
    assert f"{tolerance + 1} consecutive" in err.reason

    summary = _strict(tmp_path / "summary.json")
    assert set(summary) >= SUMMARY_KEYS
    assert summary["status"] == "diverged"
    assert summary["failure"]["step"] == DIVERGES_AT
    assert summary["failure"]["reason"] == err.reason
    # Stopped one step after the first non-finite loss beyond the tolerance (the flag is
    # read one step late), not at trainer.max_steps=12; a diverged run has no eval loss.
    assert summary["steps"] == stopped_after
    assert summary["eval_loss"] is None and summary["eval_loss_per_domain"] is None
    assert summary["eval_loss_initial"] is not None
    if tolerance == 0:  # no checkpoint of diverged weights (every_n_train_steps=4: step 4)
        assert not (tmp_path / "checkpoints" / "step000004.ckpt").exists()


class _PoisonEval(L.Callback):
    """Makes the model's output non-finite right before the first evaluation during fit."""

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            with torch.no_grad():
                pl_module.head.weight.fill_(float("inf"))


def test_nonfinite_eval_loss_means_diverged(tmp_path: Path, tiny_overrides: list[str]) -> None:
    with pytest.raises(DivergedError, match="non-finite eval loss") as info:
        _train(tmp_path, tiny_overrides, callbacks=[_PoisonEval()])
    assert info.value.step == 6  # trainer.val_check_interval=6
    summary = _strict(tmp_path / "summary.json")
    assert summary["status"] == "diverged" and summary["failure"]["step"] == 6


def test_exception_during_fit_writes_failed_summary(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    with pytest.raises(Crash):
        _train(tmp_path, tiny_overrides, callbacks=[CrashAt(5)])
    summary = _strict(tmp_path / "summary.json")
    assert summary["status"] == "failed"
    assert summary["failure"]["step"] == 5
    assert summary["failure"]["reason"] == "Crash: killed at step 5"
    assert summary["eval_loss"] is None


def test_completed_run_has_status(tmp_path: Path, tiny_overrides: list[str]) -> None:
    summary = _train(tmp_path, [*tiny_overrides, "trainer.max_steps=4"])
    assert summary["status"] == "completed" and summary["failure"] is None
    assert _strict(tmp_path / "summary.json")["status"] == "completed"


def test_compare_keeps_diverged_runs_out_of_the_mean(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "strategy=rnb", "trainer.max_steps=8"]
    good = _train(tmp_path / "good", over)
    with pytest.raises(DivergedError):
        _train(tmp_path / "bad", [*over, "model.lr=1e6", "seed=1"])
    runs = load_runs(tmp_path)
    assert sorted(runs["status"]) == ["completed", "diverged"]
    row = compare(runs).loc[("RnB", "none")]
    assert (row["n"], row["n_failed"]) == (1, 1)
    assert row["eval_loss_mean"] == pytest.approx(good["eval_loss"])
    failed = failed_runs(runs)
    assert list(failed["run"]) == [str(tmp_path / "bad")]
    assert failed.loc[0, "status"] == "diverged"
    assert "non-finite training loss" in failed.loc[0, "reason"]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rnb.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_cli_diverged_run_exits_nonzero(tmp_path: Path, tiny_overrides: list[str]) -> None:
    proc = _cli([*tiny_overrides, *EXPLODE, f"hydra.run.dir={tmp_path}"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "model.lr" in text and "Traceback" not in text
    assert _strict(tmp_path / "summary.json")["status"] == "diverged"


@pytest.mark.slow
def test_multirun_diverged_job_fails_sweep_but_others_run(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    args = ["-m", *tiny_overrides, "strategy=rnb", "model.lr=1e6,1e-3"]
    proc = _cli([*args, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}"])
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "DivergedError" in text and "model.lr" in text
    # Job 1 ran after job 0 diverged; both left an honest summary.
    assert _strict(tmp_path / "0" / "summary.json")["status"] == "diverged"
    assert _strict(tmp_path / "1" / "summary.json")["status"] == "completed"


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_stop_together(tmp_path: Path) -> None:
    """Every rank reads the same (all-reduced) flag: no rank hangs in the next collective."""
    from tests.conftest import TINY

    base = [o for o in TINY if not o.startswith("data.batch_size")]
    ddp = ["trainer=ddp_cpu", "data.batch_size=4", "initial_eval=false", "logger=none"]
    out = [f"hydra.run.dir={tmp_path}", f"output_dir={tmp_path}"]
    proc = _cli([*base, *ddp, *EXPLODE, *out])
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    summary = _strict(tmp_path / "summary.json")
    assert summary["status"] == "diverged" and summary["failure"]["step"] == DIVERGES_AT


def test_off_simplex_update_fails_the_run_naming_the_strategy(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "strategy._target_=tests.detour_strategies.OffSimplex"]
    with pytest.raises(RuntimeError, match=r"OffSimplex\.update returned off-simplex weights"):
        _train(tmp_path, over)
    summary = _strict(tmp_path / "summary.json")
    assert summary["status"] == "failed" and summary["failure"]["step"] == 4  # first round end
    assert "OffSimplex.update returned off-simplex" in summary["failure"]["reason"]
    assert summary["eval_loss"] is None


def test_a_vertex_of_the_simplex_is_adopted(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, "strategy._target_=tests.detour_strategies.OneDomainAtTheEdge"]
    over += ["trainer.max_steps=8", "initial_eval=false", "logger=none"]
    _train(tmp_path, over)
    summary = _strict(tmp_path / "summary.json")
    assert summary["status"] == "completed"
    vertex = [1.0] + [0.0] * (len(summary["domains"]) - 1)
    assert [t["weights"] for t in summary["weights_trajectory"][1:]] == [vertex, vertex]
