"""Skill-It's skills graph at its edges: which evidence counts, which result sets are refused,
and what `save_graph` writes (Chen et al. 2023, §3.2: ``A_ij = (L_j(start) − L_j(end_i)) /
L_j(start)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.skills_graph import estimate_graph, save_graph

NAN = float("nan")


def _result(domain: int | None, before: list[float], after: list[float]) -> DetourResult:
    detour = Detour(1, domain=domain) if domain is not None else Detour(1, mixture=[0.5, 0.5])
    return DetourResult(detour, np.array(before), np.array(after), 0)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([2.0, 3.0], [1.0, NAN]),  # the end loss is missing: no evidence
        ([2.0, NAN], [1.0, 1.5]),  # the start loss is missing
        ([2.0, 0.0], [1.0, 0.5]),  # a zero start loss: the relative drop is undefined
        ([2.0, -1.0], [1.0, -2.0]),  # a negative start loss is no loss: refused as evidence
    ],
)
def test_only_finite_positive_start_losses_count(before: list[float], after: list[float]) -> None:
    res = [_result(0, before, after), _result(1, [2.0, 4.0], [2.0, 3.0])]
    A = estimate_graph(res, 2)
    assert np.isfinite(A).all()
    # row 0: domain 0 dropped from 2 to 1 (0.5); domain 1 has no usable evidence (0)
    np.testing.assert_array_equal(A, [[0.5, 0.0], [0.0, 0.25]])


@pytest.mark.parametrize(
    "extra", [_result(0, [1.0, 1.0], [1.0, 1.0]), _result(None, [1.0, 1.0], [0.5, 0.5])]
)
def test_a_result_beyond_one_per_domain_is_refused(extra: DetourResult) -> None:
    res = [_result(0, [2.0, 2.0], [1.0, 1.0]), _result(1, [2.0, 2.0], [1.0, 1.0]), extra]
    with pytest.raises(ValueError, match=r"domains \[0, 1\] in 3 results"):
        estimate_graph(res, 2)


def test_save_graph_creates_missing_parents_and_sizes_the_heat_map(tmp_path: Path) -> None:
    A = np.array([[0.5, -0.25, 0.0], [0.0, 0.5, 0.125], [0.25, 0.0, 0.5]])
    out = tmp_path / "a" / "b"  # neither exists yet
    npy, png = save_graph(A, ["x", "y", "z"], out)
    assert (npy, png) == (out / "skills_graph.npy", out / "skills_graph.png")
    np.testing.assert_array_equal(np.load(npy), A)
    # 100 dpi, figsize (1.2 + 0.55 m, 1.0 + 0.5 m) inches: the map grows with the domains
    assert imread(png).shape[:2] == (250, 285)
    assert sorted(p.name for p in out.iterdir()) == ["skills_graph.npy", "skills_graph.png"]
