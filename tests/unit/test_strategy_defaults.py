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
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "strategy"


@pytest.mark.parametrize("name", ["aioli", "skillit", "doremi", "dga", "doge"])
def test_constructor_defaults_equal_the_yaml(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cls = get_class(cfg._target_)
    keys = sorted(k for k in cfg if k != "_target_")
    assert sorted(inspect.signature(cls).parameters) == keys, f"{name}: constructor != YAML keys"
    built, configured = cls(), instantiate(cfg)
    assert vars(built) == vars(configured), f"{cls.__name__}() differs from strategy={name}"
