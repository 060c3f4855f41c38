"""Every ``conf/strategy/*.yaml`` spells out its class's Python defaults.

A run built from ``strategy=NAME`` and a strategy built in Python (a notebook, a test) with
no arguments must be the same method: the YAML's values are the documented defaults. The
comparison goes through ``describe()`` (the record in ``summary.json``), i.e. through the
constructor itself, not through ``inspect.signature``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
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


@pytest.mark.parametrize("name", ["aioli", "skillit", "doremi", "dga", "doge"])
def test_constructor_parameters_are_the_yaml_keys_and_build_the_same_object(name: str) -> None:
    """Every constructor argument is a YAML key (and no other key exists); the two objects hold
    equal attributes (these strategies keep only scalars before setup, so ``vars`` compares)."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cls = get_class(cfg._target_)
    keys = sorted(k for k in cfg if k != "_target_")
    assert sorted(inspect.signature(cls).parameters) == keys, f"{name}: constructor != YAML keys"
    built, configured = cls(), instantiate(cfg)
    assert vars(built) == vars(configured), f"{cls.__name__}() differs from strategy={name}"
