"""A Hydra callback that writes the ``rnb-report`` of a run or sweep when it ends.

Enable it on any command with ``hydra/callbacks=report`` (``conf/hydra/callbacks/report.yaml``);
``experiment=smoke`` enables it. A single run gets ``<run dir>/report/``, a multirun
``<sweep dir>/report/`` over all its jobs, the same files as ``rnb-report`` writes
(:func:`rnb.report.build.write_report`).

Hydra calls ``on_run_end`` also when the run failed (the report then lists the failure);
a multirun whose job failed re-raises the failure before ``on_multirun_end``, so there the
callback logs the ``rnb-report`` command to run instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["WriteReport"]

log = logging.getLogger(__name__)


class WriteReport(Callback):
    """Write ``report.md``/``report.csv``/``figures`` into ``<dir>/<subdir>`` at the end.

    Args:
        subdir: folder under the run (or sweep) dir that receives the report.
    """

    def __init__(self, subdir: str = "report") -> None:
        self.subdir = subdir

    def _write(self, root: Path) -> None:
        from rnb.report.build import write_report  # matplotlib etc. only when used

        try:
            path = write_report([root], root / self.subdir)
        except FileNotFoundError as err:  # nothing to report (e.g. the run never started)
            log.warning("no report written: %s", err)
            return
        log.info("report: %s", path)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After a single run (completed or failed): report on its run dir."""
        self._write(Path(config.hydra.run.dir))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """In a sweep, a failed job stops the sweep before ``on_multirun_end``: say how to
        get the report then."""
        status = getattr(getattr(job_return, "status", None), "name", "")
        if (
            status == "FAILED"
            and config.hydra.mode is not None
            and config.hydra.mode.name == "MULTIRUN"
        ):
            log.warning(
                "a job failed; the sweep will exit non-zero before its report: run "
                "`rnb-report %s` when it ends",
                config.hydra.sweep.dir,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After every job of a sweep: one report over the sweep dir."""
        self._write(Path(config.hydra.sweep.dir))
