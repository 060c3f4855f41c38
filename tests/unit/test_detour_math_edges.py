"""Edges of Aioli's and Skill-It's detour maths left by mutation testing: the perturbation
matrix's bounds and error text, un-mixing's default and errors, the graph normalisation of
a non-negative matrix, a detour result's float64 round trip and the graph-file error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnb.balance.aioli_math import normalize_graph, perturbation_matrix, unmix
from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.skills_graph import graph_path


def test_perturbation_matrix_bounds_and_message() -> None:
    np.testing.assert_array_equal(perturbation_matrix(1, 0.3), [[1.0]])  # one domain: [1]
    np.testing.assert_allclose(perturbation_matrix(3, 1.0), np.eye(3))
    for f in (1.5, 1 / 3, 0.2):
        with pytest.raises(ValueError) as err:
            perturbation_matrix(3, f)
        assert str(err.value) == (
            f"strategy.one_hot_factor must be in (1/m, 1] = (0.3333, 1], got {f}"
        )


def test_unmix_defaults_to_the_exact_solve_and_names_the_key() -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    D = A @ perturbation_matrix(3, 0.6).T
    np.testing.assert_allclose(unmix(D, 0.6), A, atol=1e-12)  # mode="solve" by default
    np.testing.assert_array_equal(unmix(D, 1.0), D)  # f = 1: no un-mixing
    with pytest.raises(ValueError) as err:
        unmix(D, 0.6, mode="inverse")
    assert str(err.value) == "strategy.unmix must be 'solve' or 'diagonal', got 'inverse'"


def test_unmix_at_f_one_is_a_copy_and_f_two_is_refused() -> None:
    D = np.arange(4.0).reshape(2, 2)
    out = unmix(D, 1.0)
    assert out is not D
    with pytest.raises(ValueError, match="one_hot_factor"):
        unmix(D, 2.0)


def test_a_non_negative_graph_is_only_divided_by_its_sum() -> None:
    A = np.array([[0.5, 1.0], [2.0, 0.5]])  # min 0.5 > 0: no shift
    np.testing.assert_allclose(normalize_graph(A), A / 4.0)
    np.testing.assert_allclose(normalize_graph(A - 1.0), (A - 0.5) / 2.0)  # shifted by -min


def test_detour_result_round_trip_is_float64() -> None:
    res = DetourResult(Detour(steps=2, domain=1), np.array([1, 2]), np.array([3, 4]), 5)
    back = DetourResult.from_dict({**res.to_dict(), "before": [1, 2], "after": [3, 4]})
    assert back.before.dtype == back.after.dtype == np.float64
    np.testing.assert_array_equal(back.after - back.before, [2.0, 2.0])
    assert back.step == 5 and back.detour == res.detour


def test_a_missing_graph_file_names_the_key_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        graph_path(str(tmp_path / "nope.npy"))
    assert str(err.value) == (
        f"strategy.graph={str(tmp_path / 'nope.npy')!r}: no such file; use 'estimate', "
        "'identity' or the path of an [m, m] .npy (e.g. another run's skills_graph.npy)"
    )
