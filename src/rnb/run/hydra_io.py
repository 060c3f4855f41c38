"""What Hydra writes into a run dir, deferred for a resume until the resume check passes.

Hydra writes ``.hydra/{config,hydra,overrides}.yaml`` and opens ``<job>.log`` in the run dir
*before* the task function runs. For a resume that would modify the run dir even when the
resume is then refused, so ``conf/train.yaml`` sets ``hydra.output_subdir`` to null and the
job log's file handler (:class:`HeldFileHandler`, ``conf/hydra/job_logging/rnb.yaml``) to
hold its lines whenever ``resume`` is set. Once the check passes, :func:`adopt_invocation`
releases the held lines into ``<job>.log`` and writes the composed config: into ``.hydra/``
for a run that starts fresh (``resume=auto`` without a checkpoint), into
``resumes/NN/`` for a resume (``.hydra/`` keeps the first run's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

__all__ = ["HeldFileHandler", "adopt_invocation", "resuming"]


def resuming(resume: Any) -> bool:
    """Whether a ``resume`` value asks to resume (a checkpoint path or ``auto``)."""
    return resume not in (None, "", False)


# Resolvers of conf/train.yaml's `hydra:` node, registered when `rnb.train` (the Hydra app)
# is imported: `hydra.output_subdir` and the job log's `hold` depend on `resume`.
OmegaConf.register_new_resolver("rnb.resuming", resuming, replace=True)
OmegaConf.register_new_resolver(
    "rnb.unless_resuming", lambda value, resume: None if resuming(resume) else value, replace=True
)


class HeldFileHandler(logging.FileHandler):
    """``logging.FileHandler`` that can hold records in memory until :meth:`release`.

    Args:
        filename: the log file (opened on the first write, appended to).
        hold: buffer records instead of writing them; closing the handler while still holding
            drops them, so the file is neither created nor modified.
        **kwargs: ``mode``, ``encoding``, ``delay``, ``errors`` of ``FileHandler``.
    """

    def __init__(self, filename: str, hold: bool = False, **kwargs: Any) -> None:
        self._held: list[logging.LogRecord] | None = [] if hold else None
        kwargs["delay"] = bool(hold or kwargs.get("delay", False))
        super().__init__(filename, **kwargs)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, or keep it while holding."""
        if self._held is not None:
            self._held.append(record)
            return
        super().emit(record)

    def release(self) -> None:
        """Write the held records and write through from now on."""
        held, self._held = self._held, None
        for record in held or []:
            super().emit(record)

    def close(self) -> None:
        """Close; records still held (a refused resume) are dropped."""
        self._held = None
        super().close()


def adopt_invocation(out: Path, cfg: DictConfig) -> Path | None:
    """After a passed resume check: release held log lines, save this invocation's config.

    Args:
        out: the run dir.
        cfg: the task config as Hydra composed it (before ``train`` filled ``output_dir``).

    Returns:
        The folder the composed config went to, or ``None`` (Hydra wrote it already, not a
        Hydra app, or not rank 0).
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, HeldFileHandler):
            handler.release()
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.instance().cfg
    except Exception:  # not inside @hydra.main (tests, notebooks)
        return None
    if hydra_cfg is None or not resuming(cfg.get("resume")) or rank_zero_only.rank != 0:
        return None
    if not (out / ".hydra" / "config.yaml").exists():
        folder = out / ".hydra"  # resume=auto found no checkpoint: a fresh run
    else:
        done = [int(p.name) for p in (out / "resumes").glob("[0-9]*") if p.name.isdigit()]
        folder = out / "resumes" / f"{max(done, default=0) + 1:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(hydra_cfg, folder / "hydra.yaml")
    OmegaConf.save(hydra_cfg.hydra.overrides.task, folder / "overrides.yaml")
    return folder
