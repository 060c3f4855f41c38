"""Where a run resumes from (``resume``), and whether a resumed run is already finished."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnb.run.record import RunRecord

__all__ = ["finished_summary", "resume_path"]

log = logging.getLogger(__name__)


def resume_path(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint a run resumes from (config key ``resume``), or None for a fresh run.

    Args:
        cfg: The run config; ``resume`` is null/empty/false (fresh), ``auto`` (the run
            dir's ``checkpoints/last.ckpt`` if it exists) or a ``.ckpt`` path.
        out: The run dir.

    Raises:
        FileNotFoundError: ``resume`` names a path that does not exist.
    """
    resume = cfg.get("resume")
    if resume in (None, "", False):
        return None
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(resume).exists():
        raise FileNotFoundError(f"resume='{resume}' does not exist (use a .ckpt path or 'auto')")
    return str(resume)


def finished_summary(cfg: DictConfig, out: Path, record: RunRecord) -> dict[str, Any] | None:
    """The summary of a resumed run that already reached ``trainer.max_steps``, else None.

    Such a resume has nothing to train: re-validating would only append a duplicate eval row
    to the history. The run dir is left as it is (the full resume check has passed by now).
    """
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    path = out / "summary.json"
    if record.resume_step is None or max_steps <= 0 or record.resume_step < max_steps:
        return None
    if not path.exists():  # killed between the last checkpoint and the summary: finish it
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("status", "completed") != "completed" or summary.get("steps") != max_steps:
        return None
    log.info(
        "nothing to do: %s already reached trainer.max_steps=%d (raise it to train on)",
        out,
        max_steps,
    )
    return summary
