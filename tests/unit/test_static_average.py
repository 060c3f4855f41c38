"""``strategy=static strategy.average=true`` reads the summary's step-weighted ``ᾱ``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rnb.balance.strategies.base import MixtureContext
from rnb.balance.strategies.static import Static

CTX = MixtureContext(["a", "b", "c"], np.array([10, 30, 60]), np.array([0.2, 0.3, 0.5]))
# α_0 held for 1 step, α_1 for 9: the step-weighted mean differs from the entry mean.
TRAJ = [{"step": 0, "weights": [1, 0, 0]}, {"step": 1, "weights": [0, 0, 1]}]


def _static(tmp_path: Path, **summary) -> Static:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"domains": ["a", "b", "c"], "weights_trajectory": TRAJ, **summary}))
    s = Static(from_summary=str(path), average=True)
    s.setup(CTX)
    return s


def test_average_uses_average_weights(tmp_path: Path) -> None:
    s = _static(tmp_path, average_weights=[0.1, 0.0, 0.9])
    np.testing.assert_allclose(s.initial_weights(), [0.1, 0.0, 0.9])
    assert s.describe()["transfer"]["average"] == "average_weights"


def test_old_summary_falls_back_to_the_trajectory_mean(tmp_path: Path) -> None:
    s = _static(tmp_path)
    np.testing.assert_allclose(s.initial_weights(), [0.5, 0.0, 0.5])
    assert s.describe()["transfer"]["average"].startswith("trajectory mean")


def test_final_weights_ignore_average_weights(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(
        json.dumps(
            {"domains": ["a", "b", "c"], "weights_trajectory": TRAJ, "average_weights": [1, 1, 1]}
        )
    )
    s = Static(from_summary=str(path))
    s.setup(CTX)
    np.testing.assert_allclose(s.initial_weights(), [0, 0, 1])
    assert "average" not in s.describe()["transfer"]


@pytest.mark.parametrize("average", [True, False])
def test_damaged_average_weights_name_the_file_and_the_field(tmp_path: Path, average: bool) -> None:
    """``average_weights`` of the wrong length is refused whichever weights are chosen."""
    path = tmp_path / "summary.json"
    summary = {"domains": ["a", "b", "c"], "weights_trajectory": TRAJ, "average_weights": [1, 0]}
    path.write_text(json.dumps(summary))
    msg = (
        f"strategy.from_summary='{path}': average_weights has 2 weights for 3 domains "
        "['a', 'b', 'c']: the file is damaged or was edited; point strategy.from_summary at a "
        "summary.json written by rnb-train"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        s = Static(from_summary=str(path), average=average)
        s.setup(CTX)
        s.initial_weights()
