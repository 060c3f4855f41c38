"""Trajectory fingerprint parts, the resume checks, the CSV history and Hydra's deferred files."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from rnb.config import config_dir
from rnb.run.csvlog import HistoryCSVLogger
from rnb.run.fingerprint import diff_config, domain_digest, file_part, sha256_path
from rnb.run.hydra_io import HeldFileHandler
from rnb.run.record import ResumeRefused, RunRecord


def test_diff_config_refuses_by_default_and_records_allowed() -> None:
    old = {"seed": 0, "trainer.max_steps": 10, "logger.name": "logs", "data.a": 1}
    new = {"seed": 1, "trainer.max_steps": 20, "logger.name": "x", "data.b": 2}
    refused, deliberate = diff_config(old, new, {}, {}, ["trainer.max_steps", "logger", "*.nope"])
    assert refused == ["data.a: 1 -> '<absent>'", "data.b: '<absent>' -> 2", "seed: 0 -> 1"]
    assert deliberate == {"trainer.max_steps": [10, 20], "logger.name": ["logs", "x"]}
    refused, _ = diff_config({"data.ab": 1}, {"data.ab": 2}, {}, {}, ["data.a"])
    assert refused == ["data.ab: 1 -> 2"]  # a prefix matches whole key parts only
    _, deliberate = diff_config(
        {"regroup.x.progress": 1}, {"regroup.x.progress": 0}, {}, {}, ["*.progress"]
    )
    assert deliberate == {"regroup.x.progress": [1, 0]}


def test_file_part_compares_content_not_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "x"}\n')
    b.write_text('{"text": "x"}\n')
    fa = file_part({"data": {"train_path": str(a), "eval_path": None}})
    fb = file_part({"data": {"train_path": str(b), "eval_path": None}})
    assert list(fa) == ["data.train_path"]  # unset file keys are not part of it
    refused, deliberate = diff_config({}, {}, fa, fb, [])
    assert refused == [] and deliberate == {"data.train_path": [str(a), str(b)]}
    b.write_text('{"text": "y"}\n')
    refused, _ = diff_config({}, {}, fa, file_part({"data": {"train_path": str(b)}}), [])
    assert len(refused) == 1 and refused[0].startswith("data.train_path: content changed")
    hub = file_part({"data": {"train_path": "hf:user/set"}})
    assert hub == {"data.train_path": {"path": "hf:user/set", "sha256": None}}


def test_sha256_of_a_directory_covers_names_and_content(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    h1 = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "x").rename(tmp_path / "d" / "y")
    h2 = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "y").write_text("2")
    assert len({h1, h2, sha256_path(tmp_path / "d")}) == 3


class _Tok:
    eos_token_id = pad_token_id = 1

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, "b": 1}

    def __len__(self) -> int:
        return 2


def _fake_dm(train: list[int]) -> SimpleNamespace:
    labels = SimpleNamespace(names=["x", "y"], train=np.array(train), eval=np.array([0, 1]))
    return SimpleNamespace(labels=labels, tokenizer=_Tok())


def _checkpoint(tmp: Path, record: RunRecord, step: int = 4) -> str:
    path = tmp / "last.ckpt"
    state = {**record.state_dict(), "step": step}
    torch.save({"global_step": step, "callbacks": {"RunRecord": state}}, path)
    return str(path)


def test_changed_domain_assignment_is_refused_after_the_build(tmp_path: Path) -> None:
    cfg = {"seed": 0}
    first = RunRecord.open(cfg, None)
    first.verify(_fake_dm([0, 1, 1]))
    first.eval_loss_initial = 3.5
    ckpt = _checkpoint(tmp_path, first)
    same = RunRecord.open(cfg, ckpt)
    same.verify(_fake_dm([0, 1, 1]))
    assert same.eval_loss_initial == 3.5 and same.resumes[0]["step"] == 4
    other = RunRecord.open(cfg, ckpt)
    with pytest.raises(ResumeRefused, match="the domain assignment changed"):
        other.verify(_fake_dm([0, 0, 1]))
    assert domain_digest(["x", "y"], [0, 1], [0]) != domain_digest(["y", "x"], [0, 1], [0])


def test_checkpoint_without_fingerprint_is_refused(tmp_path: Path) -> None:
    torch.save({"global_step": 3, "callbacks": {}}, tmp_path / "old.ckpt")
    with pytest.raises(ResumeRefused, match="no trajectory fingerprint"):
        RunRecord.open({"seed": 0}, str(tmp_path / "old.ckpt"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_history_csv_logger_keeps_rows_the_checkpoint_covers(tmp_path: Path) -> None:
    first = HistoryCSVLogger(tmp_path, name="logs", version="")
    for step, key in [(0, "val"), (1, "train"), (4, "round"), (3, "train"), (5, "train")]:
        first.log_metrics({key: float(step)}, step=step)
    assert first.history_mark() == 5  # flushed: the rows a checkpoint covers are on disk
    # a checkpoint at step 4 written after 3 rows; the killed run logged two more rows
    resumed = HistoryCSVLogger(tmp_path, name="logs", version="")
    resumed.continue_history(rows=3, step=4)
    resumed.log_metrics({"train": 5.5, "new": 1.0}, step=5)
    resumed.save()
    rows = _rows(tmp_path / "logs" / "metrics.csv")
    # kept: the 3 rows before the checkpoint + the step-3 row (below step 4); dropped: step 5
    assert [(r["step"], r["new"]) for r in rows] == [
        ("0", ""),
        ("1", ""),
        ("4", ""),
        ("3", ""),
        ("5", "1.0"),
    ]
    assert resumed.history_mark() == 5
    fresh = HistoryCSVLogger(tmp_path, name="logs", version="")  # no resume: a new file
    fresh.log_metrics({"train": 1.0}, step=0)
    fresh.save()
    assert len(_rows(tmp_path / "logs" / "metrics.csv")) == 1


def test_held_file_handler_writes_nothing_until_released(tmp_path: Path) -> None:
    record = logging.LogRecord("rnb", logging.INFO, __file__, 1, "hello", None, None)
    held = HeldFileHandler(str(tmp_path / "a.log"), hold=True)
    held.emit(record)
    held.close()  # a refused resume
    assert not (tmp_path / "a.log").exists()
    (tmp_path / "b.log").write_text("old\n")
    held = HeldFileHandler(str(tmp_path / "b.log"), hold=True)
    held.emit(record)
    assert (tmp_path / "b.log").read_text() == "old\n"
    held.release()
    held.emit(record)
    held.close()
    assert (tmp_path / "b.log").read_text() == "old\nhello\nhello\n"


@pytest.mark.parametrize(
    ("resume", "subdir", "hold"), [("null", ".hydra", False), ("auto", None, True)]
)
def test_hydra_defers_its_run_dir_files_for_a_resume(
    resume: str, subdir: str | None, hold: bool
) -> None:
    import rnb.train  # noqa: F401  (registers the resolvers, as `rnb-train` does)

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("train", [f"resume={resume}"], return_hydra_config=True)
    assert cfg.hydra.output_subdir == subdir
    file_handler = cfg.hydra.job_logging.handlers.file
    assert file_handler["class"] == "rnb.run.hydra_io.HeldFileHandler"
    assert file_handler.hold is hold
