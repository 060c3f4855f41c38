"""Locating the packaged Hydra configs and small config helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = ["compose", "config_dir", "count", "enabled", "hydra_output_dir", "required"]


def config_dir() -> Path:
    """The ``conf/`` directory: packaged inside ``rnb`` (wheel) or the repo root (editable)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent.parent / "conf"):
        if (candidate / "train.yaml").exists():
            return candidate
    raise FileNotFoundError(
        f"rnb configs not found (looked in {here / 'conf'} and {here.parent.parent / 'conf'}); "
        "reinstall rnb"
    )


def enabled(node: Any) -> bool:
    """False for ``None``, empty nodes and nodes with ``enabled: false`` (the ``none`` options)."""
    if node is None:
        return False
    try:
        if len(node) == 0:
            return False
    except TypeError:
        return True
    get = getattr(node, "get", None)
    return not (get is not None and get("enabled", True) is False)


def required(key: str, what: str = "a value") -> Any:
    """Resolver ``${rnb.required:KEY,WHAT}``: a key a config needs set, even over a default.

    ``???`` cannot mark a key required when an earlier config in the defaults list already
    gave it a value (OmegaConf's merge keeps that value), e.g. ``data.eval_path: null`` of
    ``conf/data/files.yaml`` under ``experiment=paper/supnatinst_test``. Setting the key on the
    command line replaces this interpolation; resolving it unset raises.

    Raises:
        ValueError: always (naming ``key`` and what it should hold).
    """
    raise ValueError(f"{key} is required here ({what}): set {key}=... on the command line")


OmegaConf.register_new_resolver("rnb.required", required, replace=True)


def count(value: Any, key: str, what: str = "a count") -> int:
    """Resolver ``${rnb.count:${KEY},KEY,WHAT}``: ``KEY``'s value as a whole number >= 1.

    For values a config derives from another key that must then be a plain count, e.g.
    ``hydra/launcher=slurm_multinode`` reads ``gpus_per_node`` from ``trainer.devices``,
    whose ``-1`` ("all visible GPUs") or ``auto`` cannot size a SLURM job before it runs.
    Also the check of every count-valued key (``data.store_chunk_size``,
    ``regroup.embedder.processes``): a fraction is refused, never truncated.

    Raises:
        ValueError: ``value`` is not a whole number >= 1 (a bool, ``-1``, ``0``, ``"auto"``,
            a list of device ids, ``2.5``), naming ``key`` and ``what`` it should hold. A
            float with an integral value (a command line's ``2e4``) and a digit string pass.
    """
    number = value
    if (isinstance(value, str) and value.strip().isdigit()) or (
        isinstance(value, float) and value.is_integer()
    ):
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{key}={value!r}: need a whole number >= 1 here ({what}); set {key}=N")
    return number


OmegaConf.register_new_resolver("rnb.count", count, replace=True)


def hydra_output_dir() -> str | None:
    """The current Hydra run directory, or ``None`` outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir
    except Exception:  # not inside @hydra.main (tests, notebooks)
        return None


def compose(config_name: str = "train", overrides: list[str] | None = None):
    """Compose a config outside a Hydra app (notebooks, tests)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return _compose(config_name=config_name, overrides=overrides or [])
