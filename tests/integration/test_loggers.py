"""logger=tensorboard|wandb|mlflow (issue 12 item 4): each logs a real run, next to metrics.csv.

Every tracker installed here gets one tiny run through ``rnb.train.train``; the test reads
the tracker's own files back (event files, the W&B offline run, the MLflow store) and
checks they hold the run's eval losses and config, and that rnb's ``logs/metrics.csv``
(which rnb-report, the notebook and resume read) is still written. A tracker that is not
installed is skipped with the extra that installs it.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from rnb.config import compose
from rnb.run.trackers import build_loggers
from rnb.train import train
from tests.conftest import TINY

#: logger option -> (module that must be importable, pip extra).
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
TRACKERS["mlflow"] = ("mlflow", "mlflow")


def _need(option: str) -> None:
    module, extra = TRACKERS[option]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"logger={option} needs `pip install 'rnb[{extra}]'` ({module} not installed)")


def _run(option: str, out: Path, extra: list[str] = ()) -> dict:
    over = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", f"logger={option}"]
    return train(compose("train", [*over, *extra, f"output_dir={out}"]))


def _csv_val(out: Path) -> list[tuple[int, str]]:
    """``(step, val/loss)`` rows of metrics.csv, the loss as written (a string)."""
    with (out / "logs" / "metrics.csv").open(newline="") as fh:
        return [(int(r["step"]), r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")]


def _close(pairs: list[tuple[int, float]], rows: list[tuple[int, str]]) -> None:
    assert [s for s, _ in pairs] == [s for s, _ in rows]
    assert [v for _, v in pairs] == pytest.approx([float(v) for _, v in rows], rel=1e-6)


def test_tensorboard_logs_the_run_and_metrics_csv_stays(tmp_path: Path) -> None:
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = _run("tensorboard", tmp_path)
    rows = _csv_val(tmp_path)
    assert len(rows) >= 3  # initial, after step 2, after step 4
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"val/loss", "train/loss"} <= set(tags)
    assert any(t.startswith("balance/weight/") for t in tags)
    events = acc.Scalars("val/loss")
    _close([(e.step, e.value) for e in events], rows)  # the same history as metrics.csv
    assert events[-1].value == pytest.approx(summary["eval_loss"], rel=1e-6)


def test_wandb_offline_run_holds_metrics_and_config(tmp_path: Path) -> None:
    _need("wandb")
    summary = _run("wandb", tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs  # offline: written locally, nothing sent
    data = runs[0].read_bytes()
    # The run file is protobuf records: keys and JSON values appear verbatim.
    assert b"val/loss" in data and b"balance/weight/" in data
    for _, value in _csv_val(tmp_path):  # the same losses as metrics.csv
        assert value.encode() in data
    assert summary["config"]["strategy"]["_target_"].encode() in data  # the run's config


def test_wandb_runs_in_one_process_get_their_own_runs(tmp_path: Path) -> None:
    """Two runs in one process (a sequential multirun, a notebook): without closing the W&B
    run, Lightning's logger reused the first one and the second run logged into it."""
    _need("wandb")
    for name in ("a", "b"):
        _run("wandb", tmp_path / name)
    for name in ("a", "b"):
        runs = list((tmp_path / name / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1 and runs[0].stat().st_size > 0, (name, runs)
    import wandb

    assert wandb.run is None  # nothing left open


def test_mlflow_file_store_holds_metrics_params_and_status(tmp_path: Path) -> None:
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    summary = _run("mlflow", tmp_path)
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "rnb"]
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val.loss")  # '/' -> '.' on a file store
    _close([(m.step, m.value) for m in history], _csv_val(tmp_path))
    assert history[-1].value == pytest.approx(summary["eval_loss"])
    domains = summary["domains"]
    assert {f"val.loss.{d}" for d in domains} <= set(run.data.metrics)
    assert run.data.params["strategy/_target_"] == summary["config"]["strategy"]["_target_"]
    assert run.data.params["seed"] == "0"


def test_history_csv_can_be_dropped_explicitly(tmp_path: Path) -> None:
    _need("tensorboard")
    summary = _run("tensorboard", tmp_path, ["logger.history=null"])
    assert summary["status"] == "completed"
    assert not (tmp_path / "logs" / "metrics.csv").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_logger_mapping_entries_need_a_target() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.create({"history": None, "mine": {"save_dir": "x"}})
    with pytest.raises(ValueError, match=r"logger\.mine: not a logger config"):
        build_loggers(node, lambda n: n)
    assert build_loggers(OmegaConf.create({"history": None}), lambda n: n) is False
    assert build_loggers(None, lambda n: n) is False


def test_resume_with_a_tracker_continues_metrics_csv(tmp_path: Path) -> None:
    """With a tracker chosen, the history CSV inside the logger mapping still continues
    across a resume (RunRecord reaches it among the loggers): the resumed file has every
    eval step once, as an uninterrupted run's."""
    _need("tensorboard")
    over = ["checkpoint.every_n_train_steps=2"]
    _run("tensorboard", tmp_path, over)
    first = _csv_val(tmp_path)
    summary = _run("tensorboard", tmp_path, [*over, "resume=auto", "trainer.max_steps=8"])
    assert summary["status"] == "completed" and summary["steps"] == 8
    rows = _csv_val(tmp_path)
    steps = [s for s, _ in rows]
    assert (
        rows[: len(first)] == first and len(steps) == len(set(steps)) and steps[-1] > first[-1][0]
    )
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) >= 2
