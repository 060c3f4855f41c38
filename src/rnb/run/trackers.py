"""Lightning loggers of a run (``conf/logger/``): building them and ending them with the run.

``cfg.logger`` is one logger (a node with ``_target_``, e.g. ``logger=csv``), a mapping of
named loggers (``logger=tensorboard|wandb|mlflow``: the tracker plus rnb's own
``history`` CSV), or off (``logger=none``). A logger with a ``close(success)`` method is
closed when the rnb run ends, so the next run of the same process (a basic-launcher
multirun, a notebook) gets its own tracker run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

from rnb.config import enabled

__all__ = ["LocalMLFlowLogger", "RunScopedWandbLogger", "build_loggers", "close_loggers"]


def build_loggers(node: Any, instantiate: Callable[[Any], Any]) -> list[Logger] | bool:
    """The Lightning loggers configured by ``node`` (``cfg.logger``).

    Args:
        node: ``None`` / ``{enabled: false}`` (no logger), a logger config with
            ``_target_``, or a mapping ``{name: logger config}`` whose entries may be
            ``null`` (switched off, e.g. ``logger.history=null``).
        instantiate: the run's instantiate call (``hydra.utils.instantiate``).

    Returns:
        The loggers in config order (``False`` when there are none: Lightning's "no logger").

    Raises:
        ValueError: an entry of the mapping has no ``_target_`` (names ``logger.<entry>``).
    """
    if not enabled(node):
        return False
    if "_target_" in node:
        return [instantiate(node)]
    loggers = []
    for name, sub in node.items():
        if not enabled(sub):
            continue
        if "_target_" not in sub:
            raise ValueError(
                f"logger.{name}: not a logger config (no _target_); the logger group holds "
                "one logger or a mapping of named loggers (see conf/logger/tensorboard.yaml)"
            )
        loggers.append(instantiate(sub))
    return loggers or False


def close_loggers(loggers: list[Logger], success: bool) -> None:
    """End every logger that has a tracker run of its own (``close(success)``)."""
    for logger in loggers:
        close = getattr(logger, "close", None)
        if callable(close):
            close(success)


class RunScopedWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` whose W&B run ends with the rnb run (same arguments).

    Lightning's logger reuses any W&B run still open in the process, so without this the
    second job of a sequential multirun (or a second ``train`` in a notebook) would log into
    the first job's run. :meth:`close` finishes the run (exit code 1 for a failed run).
    """

    def close(self, success: bool) -> None:
        """Finish this logger's W&B run, if it started one."""
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish(exit_code=0 if success else 1)
        self._experiment = None


class LocalMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` (same arguments) that works on a local ``file:`` store.

    Two things stand between rnb and MLflow's file store, both handled here for ``file:``
    tracking URIs only (``sqlite:`` / ``http:`` stores are used unchanged):

    * MLflow 3 refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE=true`` ("maintenance
      mode"). Its recommended local store, SQLite, needs SQLAlchemy + Alembic and took 45 s
      to create its tables for each run on our 2-core machine, so the per-run default stays a
      file store and this sets the variable (unless the environment already sets it).
    * The file store keeps each metric in a file named by its key, so ``val/loss`` cannot
      be a file and the folder of ``val/loss/<domain>`` at once: metric keys are logged with
      ``.`` for ``/`` (``val.loss``, ``val.loss.<domain>``, ``balance.weight.<domain>``).
    """

    def __init__(self, *args: Any, tracking_uri: str | None = None, **kwargs: Any) -> None:
        self._file_store = tracking_uri is not None and tracking_uri.startswith("file:")
        if self._file_store:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().__init__(*args, tracking_uri=tracking_uri, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` (keys with ``.`` for ``/`` on a file store, see the class)."""
        if self._file_store:
            metrics = {k.replace("/", "."): v for k, v in metrics.items()}
        super().log_metrics(metrics, step)
