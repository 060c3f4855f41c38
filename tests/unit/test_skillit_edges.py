"""Skill-It edges: exact error texts, boundary values, large scores, nan in the window, a
loaded graph's binary_off_diagonal, the eval loss's and L_0's types."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.strategies.base import MixtureContext, RoundStats
from rnb.balance.strategies.skillit import SkillIt, skillit_weights

NAMES = ["a", "b", "c"]
U = np.full(3, 1 / 3)
NAN = float("nan")
INF = float("inf")


def _identity(eta: float = 1.0, window: int = 3) -> SkillIt:
    s = SkillIt(graph="identity", eta=eta, window=window, save_graph=False)
    s.setup(MixtureContext(NAMES, np.full(3, 10), U.copy()))
    return s


def _stats(loss: object, rnd: int = 0) -> RoundStats:
    return RoundStats(4 * (rnd + 1), rnd, torch.ones(3), torch.ones(3), extra={"eval_loss": loss})


def _initial(before: object) -> list[DetourResult]:
    return [DetourResult(Detour(0, domain=0), before, before, 0)]  # type: ignore[arg-type]


def _softmax(x: list[float]) -> np.ndarray:
    z = np.exp(np.asarray(x, dtype=np.float64) - max(x))
    return z / z.sum()


def _diverged(domain: str, when: str) -> str:
    """The whole text of the error for an infinite probe loss, as a ``match`` pattern."""
    return re.escape(
        f"skillit: probe eval loss of domain {domain!r} is inf at {when}; the model diverged "
        "(lower model.lr) or the probe is empty (balance.probe.eval_size)"
    )


def test_infinite_loss_error_text_at_the_start_and_in_a_round() -> None:
    """The message names the domain, the value, when (the initial model or the round) and
    both remedies with their config keys, word for word."""
    s = _identity()
    with pytest.raises(ValueError, match=f"^{_diverged('c', 'the initial model')}$"):
        s.detours_done(_initial(np.array([1.0, 2.0, INF])), U)
    assert s.state_dict()["history"] == []  # refused: nothing enters the window
    s.detours_done(_initial(np.array([1.0, 2.0, 3.0])), U)
    with pytest.raises(ValueError, match=f"^{_diverged('a', 'round 4')}$"):
        s.update(_stats(torch.tensor([INF, 1.0, 1.0]), rnd=4), U)


def test_update_before_the_graph_is_estimated_is_a_clear_error() -> None:
    """``graph: estimate`` has no ``A`` until the graph runs are delivered to detours_done."""
    s = SkillIt(graph="estimate", save_graph=False)
    s.setup(MixtureContext(NAMES, np.full(3, 10), U.copy()))
    want = "skillit: no skills graph yet (graph estimation did not run)"
    with pytest.raises(RuntimeError, match=f"^{re.escape(want)}$"):
        s.update(_stats(torch.tensor([1.0, 1.0, 1.0])), U)


def test_nan_rounds_count_as_zero_in_the_window_sum() -> None:
    """A domain without probe examples in some round (nan) adds 0 to its window sum, and the
    other rounds still count: the sum is over the rounds where it was measured."""
    s = _identity(eta=1.0, window=3)
    p0 = s.detours_done(_initial(np.array([1.0, NAN, 2.0])), U)
    np.testing.assert_allclose(p0, _softmax([1.0, 0.0, 2.0]), rtol=1e-12)
    p1 = s.update(_stats(torch.tensor([NAN, 1.0, 1.0], dtype=torch.float64)), p0)
    # window sums: a = 1 + 0, b = 0 + 1, c = 2 + 1
    np.testing.assert_allclose(p1, _softmax([1.0, 1.0, 3.0]), rtol=1e-12)
    p2 = s.update(_stats(torch.tensor([0.5, NAN, NAN], dtype=torch.float64), 1), p1)
    np.testing.assert_allclose(p2, _softmax([1.5, 1.0, 3.0]), rtol=1e-12)
    assert np.isnan(s.state_dict()["history"][0][1])  # the window keeps nan, not a 0


def test_eval_loss_types_give_the_float64_mixture() -> None:
    """The eval loss may come as a torch tensor (any float dtype, bfloat16 included), a NumPy
    array or a list: each gives the mixture of its exact float64 widening."""
    values = [1.25, 0.3, 2.7]
    inputs = {
        "torch float64": torch.tensor(values, dtype=torch.float64),
        "torch float32": torch.tensor(values, dtype=torch.float32),
        "torch bfloat16": torch.tensor(values, dtype=torch.bfloat16),
        "numpy float64": np.array(values),
        "numpy float32": np.array(values, dtype=np.float32),
        "numpy int": np.array([1, 0, 3]),
        "list": values,
        "list of ints": [1, 0, 3],
    }
    start = [1.0, 2.0, 0.5]
    for name, loss in inputs.items():
        widened = (
            loss.double().numpy()
            if isinstance(loss, torch.Tensor)
            else np.asarray(loss).astype(np.float64)
        )
        if name in ("torch float32", "torch bfloat16", "numpy float32"):
            assert widened.tolist() != values, name  # the rounded values are the ones used
        s = _identity(eta=0.5)
        s.detours_done(_initial(np.array(start)), U)
        p = s.update(_stats(loss), U)
        assert p.dtype == np.float64, name
        np.testing.assert_allclose(p, _softmax(list(0.5 * (start + widened))), rtol=1e-12)
        assert s.state_dict()["history"][1] == widened.tolist(), name


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.float32, np.longdouble])
def test_initial_losses_of_any_dtype_give_a_float64_mixture(dtype: type) -> None:
    """``L_0`` is widened (or rounded, for long double) to float64 before anything else: the
    mixture handed to the sampler is float64 whatever dtype the probe evaluation used."""
    before = np.array([3, 1, 2] if dtype is np.int64 else [1.5, 0.5, 1.0], dtype=dtype)
    s = _identity(eta=1.0)
    p0 = s.detours_done(_initial(before), U)
    assert p0.dtype == np.float64
    np.testing.assert_allclose(p0, _softmax(before.astype(np.float64).tolist()), rtol=1e-12)
    assert s.state_dict()["history"] == [before.astype(np.float64).tolist()]


def test_large_scores_give_the_exact_softmax() -> None:
    """``η·A·L`` of several hundred (a long window of large losses, or a large ``η``) is shifted
    by its maximum before ``exp``: no overflow to inf/inf and no underflow to 0/0. The
    reference is the softmax of the scores shifted by hand, in exact float64 arithmetic."""
    A = np.eye(3)
    for losses in ([400.0, 399.0, 390.0], [-400.0, -401.0, -420.0], [800.0, 0.0, -800.0]):
        p = skillit_weights(A, np.array(losses), eta=1.0)
        assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0, abs=1e-15), losses
        np.testing.assert_allclose(p, _softmax(losses), rtol=1e-12)
    # 2 · 200 = 400: the same through a strategy's update
    s = _identity(eta=2.0, window=1)
    p0 = s.detours_done(_initial(np.array([200.0, 199.5, 150.0])), U)
    np.testing.assert_allclose(p0, _softmax([400.0, 399.0, 300.0]), rtol=1e-12)


def test_one_step_graph_runs_and_a_window_of_one_are_accepted() -> None:
    """``graph_steps`` and ``window`` are ``>= 1``: 1 is the smallest accepted value. A window
    of one uses only the latest round's losses (each round forgets the previous ones)."""
    s = SkillIt(graph="estimate", graph_steps=1, save_graph=False)
    s.setup(MixtureContext(NAMES, np.full(3, 10), U.copy()))
    assert [d.steps for d in s.plan_detours(None, U)] == [1, 1, 1]
    s = _identity(eta=1.0, window=1)
    p0 = s.detours_done(_initial(np.array([3.0, 1.0, 2.0])), U)
    np.testing.assert_allclose(p0, _softmax([3.0, 1.0, 2.0]), rtol=1e-12)
    p1 = s.update(_stats(torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)), p0)
    np.testing.assert_allclose(p1, _softmax([0.0, 2.0, 1.0]), rtol=1e-12)  # L_0 forgotten
    p2 = s.update(_stats(torch.tensor([1.0, 0.0, 4.0], dtype=torch.float64), 1), p1)
    np.testing.assert_allclose(p2, _softmax([1.0, 0.0, 4.0]), rtol=1e-12)
    assert s.state_dict()["history"] == [[1.0, 0.0, 4.0]]


@pytest.mark.parametrize("graph", ["", None, 5])
def test_a_graph_spec_that_is_not_a_nonempty_string_is_refused(graph: object) -> None:
    """An empty or non-string ``graph`` is refused by the spec check itself, word for word
    (not by the later file lookup, whose text would speak of a missing file)."""
    want = f"strategy.graph: 'estimate', 'identity' or a .npy path, got {graph!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        SkillIt(graph=graph)  # type: ignore[arg-type]


@pytest.mark.parametrize("graph", ["estimate", "identity"])
def test_binary_off_diagonal_needs_a_loaded_graph(graph: str) -> None:
    """``binary_off_diagonal`` rewrites a 0/1 file; with an estimated or identity graph there
    is nothing to rewrite, and the key is refused with the exact text."""
    want = "strategy.binary_off_diagonal applies to a loaded graph (a path)"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        SkillIt(graph=graph, binary_off_diagonal=0.5)


def test_binary_off_diagonal_reaches_the_loaded_graph(tmp_path: Path) -> None:
    """Set on the strategy, ``binary_off_diagonal`` is applied when the graph is loaded in
    ``setup``: the held graph, the saved ``skills_graph.npy`` and the mixture all use 0.5 for
    the file's off-diagonal ones (the diagonal ones stay 1)."""
    path = tmp_path / "binary.npy"
    np.save(path, np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]])
    out = tmp_path / "run"
    s = SkillIt(graph=str(path), binary_off_diagonal=0.5, eta=1.0)
    assert s.binary_off_diagonal == 0.5
    s.setup(MixtureContext(NAMES, np.full(3, 10), U.copy(), output_dir=out))
    np.testing.assert_array_equal(s.skills_graph, A)
    np.testing.assert_array_equal(np.load(out / "skills_graph.npy"), A)
    L0 = np.array([2.0, 1.0, 4.0])
    p0 = s.detours_done(_initial(L0), U)
    # A·L0 = (2 + 0.5, 1 + 2, 1 + 4) = (2.5, 3, 5)
    np.testing.assert_allclose(p0, _softmax([2.5, 3.0, 5.0]), rtol=1e-12)
