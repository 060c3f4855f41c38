"""A CSV logger whose ``metrics.csv`` survives a resume (``logger=csv``).

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it opens the log dir, so
every resume used to wipe the history. :class:`HistoryCSVLogger` keeps it: on a resume it
drops only the rows the resumed run logs again and appends from there, so the file equals
an uninterrupted run's. A fresh run behaves like ``CSVLogger`` (a stale file is replaced).
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["HistoryCSVLogger"]


class _HistoryWriter(ExperimentWriter):
    """``ExperimentWriter`` that trims an existing ``metrics.csv`` instead of deleting it.

    Which rows survive a resume from a checkpoint at global step ``G`` written when the file
    had ``n`` rows: row ``i`` is kept iff ``i < n`` (logged before the checkpoint; the resumed
    run never repeats these, e.g. a mixture round that ended at step ``G``) or its ``step`` is
    below ``G`` (Lightning labels the loss of optimizer step ``s`` with ``s - 1``: the loss of
    step ``G`` is logged just after the checkpoint and is not repeated either). Every other
    row the resumed run logs again.
    """

    def __init__(self, log_dir: str, keep: tuple[int | None, int] | None) -> None:
        self._keep = keep
        self.rows_total = 0
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._keep is None or not self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()
            return
        rows_before, step = self._keep
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [
                row
                for i, row in enumerate(reader)
                if (rows_before is not None and i < rows_before) or float(row["step"]) < step
            ]
        tmp = self.metrics_file_path + ".tmp"
        with self._fs.open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)  # a kill mid-rewrite leaves the old file
        self.metrics_keys = header
        self.rows_total = len(rows)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        """Record one row (counted, so a checkpoint knows how far the history goes)."""
        super().log_metrics(metrics_dict, step)
        self.rows_total += 1


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` across resumes (same arguments).

    The run (``rnb.train``) calls :meth:`continue_history` before fitting a resumed run and
    :meth:`history_mark` each time a checkpoint is written (via ``RunRecord``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep: tuple[int | None, int] | None = None

    def continue_history(self, rows: int | None, step: int) -> None:
        """Keep the history up to a checkpoint at global ``step`` written after ``rows`` rows.

        Raises:
            RuntimeError: the log file is already open (call before the first log call).
        """
        if self._experiment is not None:
            raise RuntimeError("continue_history must be called before the logger is used")
        self._keep = (rows, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use; trims the history of a resumed run then)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir, keep=self._keep)
        return self._experiment

    def history_mark(self) -> int | None:
        """Flush and return the number of rows logged so far (``None`` off rank 0)."""
        if rank_zero_only.rank != 0:
            return None
        self.save()
        return self.experiment.rows_total
