"""A strategy built in Python (``Aioli()``) is the strategy of its shipped config.

Every constructor argument of Aioli, Skill-It, DoReMi, DGA and DoGE is a key of
``conf/strategy/<name>.yaml`` with the constructor's default as its value, and the YAML has no
key the constructor lacks: the notebooks and tests that build strategies directly run the same
method as ``strategy=<name>``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "strategy"


@pytest.mark.parametrize("name", ["aioli", "skillit", "doremi", "dga", "doge"])
def test_constructor_defaults_equal_the_yaml(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(cfg, dict)
    cls = get_class(cfg.pop("_target_"))
    params = inspect.signature(cls).parameters
    assert sorted(params) == sorted(cfg), f"{name}: constructor and YAML keys differ"
    for key, value in cfg.items():
        default = params[key].default
        if isinstance(default, tuple):
            default = list(default)
        assert default == value and type(default) is type(value), (
            f"conf/strategy/{name}.yaml: {key}={value!r}, {cls.__name__}() default {default!r}"
        )
