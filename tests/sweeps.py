"""The jobs a packaged sweep (``conf/sweep/<name>.yaml``) launches, as Hydra's sweeper expands them."""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rnb.config import config_dir


def sweep_params(name: str) -> dict[str, str]:
    """``hydra.sweeper.params`` of ``conf/sweep/<name>.yaml``."""
    cfg = OmegaConf.load(config_dir() / "sweep" / f"{name}.yaml")
    return {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}


def sweep_jobs(name: str, overrides: list[str] = ()) -> list[list[str]]:
    """Each job's overrides for ``rnb-train -m sweep=<name> <overrides>`` (the BasicSweeper's
    expansion: the sweep's params, then the command line's, a command-line key replacing
    the sweep's)."""
    params = [f"{k}={v}" for k, v in sweep_params(name).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch
