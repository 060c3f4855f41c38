"""``RunRecord``: the trajectory fingerprint and the history a checkpoint carries.

Every checkpoint holds (under this callback's state) the fingerprint of the run that wrote
it (see :mod:`rnb.run.fingerprint`), the first segment's ``eval_loss_initial``, the list of
resumes so far and how many metric rows the loggers had written. A resume reads that state
with ``torch.load(weights_only=True)`` *before* anything is built or written, refuses any
change outside ``resume_may_change`` and, once the check passes, continues the history.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

import rnb
from rnb.run.fingerprint import (
    config_part,
    diff_config,
    diff_digests,
    domain_digest,
    file_part,
    tokenizer_digest,
)

__all__ = ["ResumeRefused", "RunRecord"]

log = logging.getLogger(__name__)

_FORMAT = 1
# Digest parts of the built DataModule: what they are, and where such a change comes from.
_DATA_PARTS = {
    "tokenizer": "the tokenizer changed (data.tokenizer, or the BPE cached under data.cache_dir)",
    "domains": "the domain assignment changed (data.domain_field / regroup, or Regroup's cache "
    "under data.cache_dir)",
}


class ResumeRefused(ValueError):
    """A resume whose run would not continue the checkpoint's trajectory."""


class RunRecord(L.Callback):
    """Lightning callback whose checkpointed state is the run's fingerprint and history.

    Build it with :meth:`open` (checks the config and data files against the checkpoint),
    then call :meth:`verify` with the built DataModule (checks tokenizer and domains).

    Attributes:
        fingerprint: this segment's fingerprint parts (plain containers).
        eval_loss_initial: the first segment's eval loss before training (``None`` if off).
        resumes: one entry per resume: ``step``, ``time`` (UTC, ISO 8601), ``checkpoint``,
            ``changed`` (``{key: [old, new]}`` of the allowed changes) and ``rnb_version``.
        resume_step: global step of the checkpoint resumed from (``None`` for a fresh run).
        metrics_rows: logged metric rows when the resumed checkpoint was written.
        wall_before: training wall time (s) of the earlier invocations up to the resumed
            checkpoint (0 for a fresh run); ``summary.json``'s ``wall_time_s`` adds this
            invocation's, so a resumed run reports the time its whole trajectory took (work
            a killed invocation did after its last checkpoint is redone, and counted once).
    """

    def __init__(self, fingerprint: dict[str, Any], prior: dict[str, Any] | None = None) -> None:
        self.fingerprint = fingerprint
        self.prior = prior
        self.eval_loss_initial: float | None = (prior or {}).get("eval_loss_initial")
        self.resumes: list[dict[str, Any]] = list((prior or {}).get("resumes", []))
        self.resume_step: int | None = None if prior is None else int(prior["step"])
        self.metrics_rows: int | None = (prior or {}).get("metrics_rows")
        self.wall_before = float((prior or {}).get("wall_time_s") or 0.0)
        self._fit_start: float | None = None
        self._allowed: list[str] = []
        self._ckpt_path = ""
        self._trainer: L.Trainer | None = None

    # ---------------------------------------------------------------- before the run
    @classmethod
    def open(cls, cfg: DictConfig, ckpt_path: str | None) -> RunRecord:
        """The record of a fresh run, or of a resume checked against ``ckpt_path``.

        Reads only the checkpoint; hashes the data files (streamed).

        Raises:
            ResumeRefused: the checkpoint has no fingerprint, or the config or a data file
                differs outside ``resume_may_change``.
        """
        fingerprint = {
            "config": config_part(cfg),
            "files": file_part(cfg),
            "rnb_version": rnb.__version__,
        }
        if ckpt_path is None:
            return cls(fingerprint)
        prior = _read_state(ckpt_path)
        record = cls(fingerprint, prior)
        record._allowed = list(cfg.get("resume_may_change") or [])
        old = prior["fingerprint"]
        refused, changed = diff_config(
            old["config"],
            fingerprint["config"],
            old["files"],
            fingerprint["files"],
            record._allowed,
        )
        record._refuse(ckpt_path, refused)
        if old.get("rnb_version") != rnb.__version__:
            warnings.warn(
                f"resuming a checkpoint written by rnb {old.get('rnb_version')} with rnb "
                f"{rnb.__version__}: code changes may change the trajectory (recorded in resumes)",
                stacklevel=2,
            )
            changed["rnb_version"] = [old.get("rnb_version"), rnb.__version__]
        record.resumes.append(
            {
                "step": record.resume_step,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "checkpoint": str(Path(ckpt_path).resolve()),
                "changed": {k: v for k, v in changed.items() if k != "resume"},
                "rnb_version": rnb.__version__,
            }
        )
        record._ckpt_path = ckpt_path
        return record

    def verify(self, datamodule: Any) -> None:
        """Add the tokenizer and domain digests of the built DataModule; check them on resume.

        Raises:
            ResumeRefused: the tokenizer or the domain assignment differs from the checkpoint's.
        """
        labels = datamodule.labels
        tokenizer = getattr(datamodule, "tokenizer", None)  # feature data have none
        self.fingerprint["tokenizer"] = None if tokenizer is None else tokenizer_digest(tokenizer)
        self.fingerprint["domains"] = domain_digest(labels.names, labels.train, labels.eval)
        if self.prior is not None:
            old = self.prior["fingerprint"]
            self._refuse(self._ckpt_path, diff_digests(old, self.fingerprint, _DATA_PARTS))

    def _refuse(self, ckpt_path: str, lines: list[str]) -> None:
        if not lines:
            return
        raise ResumeRefused(
            f"refusing to resume from {ckpt_path}: this run would not continue the "
            "checkpoint's trajectory. Changed:\n  "
            + "\n  ".join(lines)
            + "\nNothing in the run dir was modified. Revert these changes (the checkpoint's "
            "config is `config` in summary.json, and .hydra/config.yaml under rnb-train), or "
            "start a new run directory (a new hydra.run.dir / output_dir, without `resume`). "
            f"Keys a resume may change (`resume_may_change`): {self._allowed}"
        )

    # ---------------------------------------------------------------- during the run
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Keep the trainer: :meth:`state_dict` asks its loggers how far the history goes."""
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def continue_logs(self, loggers: list[Any]) -> None:
        """Tell loggers that keep a history file which part of it the checkpoint covers."""
        if self.resume_step is None:
            return
        for logger in loggers:
            cont = getattr(logger, "continue_history", None)
            if cont is not None:
                cont(rows=self.metrics_rows, step=self.resume_step)

    def state_dict(self) -> dict[str, Any]:
        """Plain containers only: checkpoints load with ``weights_only=True``."""
        rows = None
        if self._trainer is not None:
            for logger in self._trainer.loggers:
                mark = getattr(logger, "history_mark", None)
                if mark is not None:
                    rows = mark()  # flushes, so the rows a checkpoint covers are on disk
        step = self._trainer.global_step if self._trainer is not None else 0
        fit = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return {
            "wall_time_s": self.wall_before + fit,
            "format": _FORMAT,
            "fingerprint": self.fingerprint,
            "eval_loss_initial": self.eval_loss_initial,
            "resumes": self.resumes,
            "step": int(step),
            "metrics_rows": rows,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: :meth:`open` read this state before the run was built."""


def _read_state(ckpt_path: str) -> dict[str, Any]:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    states = ckpt.get("callbacks", {})
    key = next((k for k in states if k == RunRecord.__qualname__), None)
    if key is None:
        raise ResumeRefused(
            f"refusing to resume from {ckpt_path}: the checkpoint carries no trajectory "
            "fingerprint (written before rnb recorded one), so a changed config or data file "
            "cannot be detected. Start a new run directory (without `resume`)."
        )
    state = dict(states[key])
    state["step"] = int(ckpt.get("global_step", state.get("step", 0)))
    return state
