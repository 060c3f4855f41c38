"""Every ``conf/strategy/*.yaml`` spells out its class's Python defaults.

A run built from ``strategy=NAME`` and a strategy built in Python (a notebook, a test) with
no arguments must be the same method: the YAML's values are the documented defaults. The
comparison goes through ``describe()`` (the record in ``summary.json``), i.e. through the
constructor itself, not through ``inspect.signature``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "strategy"
#: keys a strategy needs to be built at all (no default exists), given to both sides
REQUIRED = {"static": {"weights": [0.25, 0.75]}}
#: files that are presets over another file (Hydra ``defaults``), not the class defaults
PRESETS = {"aioli_paper"}


def _strategy_files() -> list[str]:
    return sorted(p.stem for p in CONF.glob("*.yaml") if p.stem not in PRESETS)


def test_every_strategy_file_is_checked() -> None:
    assert {"odm", "unimax", "natural", "rnb", "static", "stratified"} <= set(_strategy_files())
    for name in PRESETS:  # a preset really is one (else it would need checking here)
        assert "defaults" in OmegaConf.load(CONF / f"{name}.yaml")


@pytest.mark.parametrize("name", _strategy_files())
def test_yaml_values_are_the_constructor_defaults(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    module, cls = cfg._target_.rsplit(".", 1)
    strategy_cls = getattr(importlib.import_module(module), cls)
    extra = REQUIRED.get(name, {})
    from_yaml = instantiate(cfg, **extra, _convert_="all")
    from_python = strategy_cls(**extra)
    assert from_yaml.describe() == from_python.describe()
