"""UniMax allocation against hand-computed cases and a brute-force water level."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from rnb.balance.strategies.base import MixtureContext
from rnb.balance.strategies.unimax import UniMax, unimax_allocation


def brute_force(sizes, budget, n, cost=None) -> np.ndarray:
    """Bisection on the common level ``L``: ``Σ min(L, N s_i) c_i = B`` (or every cap)."""
    sizes = np.asarray(sizes, dtype=float)
    cost = np.ones_like(sizes) if cost is None else np.asarray(cost, dtype=float)
    caps = n * sizes
    if (caps * cost).sum() <= budget:
        return caps
    lo, hi = 0.0, float(caps.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (np.minimum(mid, caps) * cost).sum() < budget else (lo, mid)
    return np.minimum(0.5 * (lo + hi), caps)


def _unimax(sizes, tokens=None, ctx_budget=None, **kw) -> UniMax:
    s = UniMax(**kw)
    m = len(sizes)
    s.setup(
        MixtureContext(
            [f"d{i}" for i in range(m)], np.asarray(sizes), np.full(m, 1.0 / m),
            domain_tokens=None if tokens is None else np.asarray(tokens, dtype=float),
            example_budget=ctx_budget,
        )
    )  # fmt: skip
    return s


def test_all_domains_large_gives_uniform() -> None:
    s = _unimax([100, 200, 300], ctx_budget=60, unit="examples")
    np.testing.assert_allclose(s.initial_weights(), np.full(3, 1 / 3))
    assert s.capped == []


def test_small_domain_capped_and_excess_redistributed() -> None:
    s = _unimax([10, 200, 300], ctx_budget=120, unit="examples", max_epochs=2)
    # d0 is capped at 2 epochs = 20 examples; the other 100 split evenly
    np.testing.assert_allclose(s.initial_weights(), np.array([20, 50, 50]) / 120)
    assert s.capped == ["d0"] and s.allocation == pytest.approx([20, 50, 50])


def test_budget_smaller_than_every_domain() -> None:
    s = _unimax([10, 20, 30], ctx_budget=3, unit="examples")
    np.testing.assert_allclose(s.initial_weights(), np.full(3, 1 / 3))


def test_budget_beyond_every_cap_follows_the_caps(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rnb.balance.strategies.unimax"):
        s = _unimax([10, 20, 30], ctx_budget=1000, unit="examples")
    np.testing.assert_allclose(s.initial_weights(), np.array([10, 20, 30]) / 60)
    assert [r.getMessage() for r in caplog.records] == [
        "strategy=unimax: the budget (1000 examples) exceeds 1 epochs of every domain; "
        "p follows the caps and domains repeat more than strategy.max_epochs=1 times"
    ]
    assert s.capped == ["d0", "d1", "d2"]


def test_token_unit_equalises_tokens_not_examples() -> None:
    # d0: 10 examples of 10 tokens; d1: 100 examples of 1 token; budget 55 examples
    s = _unimax([10, 100], tokens=[100, 100], ctx_budget=55, unit="tokens")
    # level L tokens each: L/10 + L/1 = 55 -> L = 50 (under both caps of 100 tokens)
    np.testing.assert_allclose(s.initial_weights(), np.array([5, 50]) / 55)
    ex = _unimax([10, 100], tokens=[100, 100], ctx_budget=55, unit="examples")
    np.testing.assert_allclose(ex.initial_weights(), np.array([10, 45]) / 55)  # d0 capped


def test_token_cap_in_tokens() -> None:
    # d0: 4 examples x 5 tokens = 20 tokens, capped at N=1; d1, d2 large with 2 tokens/example
    s = _unimax([4, 500, 500], tokens=[20, 1000, 1000], ctx_budget=104, unit="tokens")
    # d0 takes its 20 tokens = 4 examples; the 100 examples left buy d1, d2 100 tokens each
    np.testing.assert_allclose(s.initial_weights(), np.array([4, 50, 50]) / 104)
    assert s.capped == ["d0"]


@pytest.mark.parametrize("seed", range(6))
def test_allocation_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 9))
    sizes = rng.integers(1, 500, m).astype(float)
    cost = rng.uniform(0.05, 1.0, m)
    budget = float(rng.uniform(1, 1.2 * (sizes * cost).sum() * 2))
    n = float(rng.choice([0.5, 1.0, 2.0, 4.0]))
    got = unimax_allocation(sizes, budget, n, cost)
    np.testing.assert_allclose(got, brute_force(sizes, budget, n, cost), rtol=1e-9, atol=1e-9)
    assert (got <= n * sizes + 1e-9).all()


def test_static_weights_never_change() -> None:
    s = _unimax([10, 200, 300], ctx_budget=120, unit="examples", max_epochs=2)
    assert UniMax.static
    np.testing.assert_array_equal(s.update(None, np.full(3, 1 / 3)), s.initial_weights())


def test_budget_key_overrides_the_run_budget() -> None:
    s = _unimax([10, 200, 300], ctx_budget=10**6, unit="examples", max_epochs=2, budget=120)
    np.testing.assert_allclose(s.initial_weights(), np.array([20, 50, 50]) / 120)


def test_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"trainer\.max_steps .* strategy\.budget"):
        _unimax([10, 20], unit="examples")
    with pytest.raises(ValueError, match=r"strategy\.unit=examples"):
        _unimax([10, 20], tokens=None, ctx_budget=10, unit="tokens")
    with pytest.raises(ValueError, match=r"strategy\.max_epochs"):
        UniMax(max_epochs=0)
    with pytest.raises(ValueError, match=r"strategy\.unit"):
        UniMax(unit="chars")
    with pytest.raises(ValueError, match=r"strategy\.budget"):
        UniMax(budget=0)


def test_smallest_positive_sizes_and_budget_are_accepted() -> None:
    # one example in d0 (capped at N=2 epochs), a budget of a single example
    s = _unimax([1, 30], ctx_budget=10, unit="examples", max_epochs=2)
    np.testing.assert_allclose(s.initial_weights(), [0.2, 0.8])  # allocations 2 and 8
    assert s.capped == ["d0"]
    one = _unimax([10, 20], unit="examples", budget=1)
    assert one.budget == 1 and one.allocation == pytest.approx([0.5, 0.5])
    # one loss-bearing token in d0: its cap is 1 token = 1 example; d1 (2 tokens per
    # example) buys the other 3 examples = 6 tokens
    tok = _unimax([1, 5], tokens=[1, 10], ctx_budget=4, unit="tokens")
    np.testing.assert_allclose(tok.initial_weights(), [0.25, 0.75])
    assert tok.allocation == pytest.approx([1, 6]) and tok.capped == ["d0"]


def test_empty_domain_is_refused_by_name() -> None:
    msg = "strategy=unimax: domains without training examples: ['d1']"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        _unimax([1, 0, 30], ctx_budget=10, unit="examples")


def test_domain_without_tokens_is_refused_naming_the_key() -> None:
    msg = (
        "strategy.unit=tokens needs loss-bearing token counts per domain, which this "
        "DataModule does not give (or a domain has none): set strategy.unit=examples"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        _unimax([5, 5], tokens=[10, 0], ctx_budget=4, unit="tokens")


def test_summary_record_of_a_run_that_failed_in_setup() -> None:
    # train.py writes describe() into summary.json even when setup raised (no budget here)
    s = UniMax(unit="examples")
    with pytest.raises(ValueError, match="trainer.max_steps"):
        s.setup(MixtureContext(["a", "b"], np.array([3, 4]), np.full(2, 0.5)))
    assert s.describe() == {
        "name": "UniMax", "max_epochs": 1.0, "unit": "examples", "budget": None,
        "allocation": [], "capped": [],
    }  # fmt: skip


def test_allocation_of_integer_sizes_without_cost() -> None:
    # sizes as counts (ints) and the default cost 1: a third of the budget each, not rounded
    np.testing.assert_allclose(unimax_allocation([10, 20, 30], 10, 1.0), [10 / 3] * 3)
    np.testing.assert_allclose(unimax_allocation([1, 20, 30], 10, 2.0), [2, 4, 4])


def test_allocation_just_below_the_cap_is_not_capped(caplog: pytest.LogCaptureFixture) -> None:
    # 199999 examples over two domains of 100000: 99999.5 each, 5e-6 below the cap
    with caplog.at_level(logging.WARNING, logger="rnb.balance.strategies.unimax"):
        s = _unimax([100000, 100000], ctx_budget=199999, unit="examples")
    assert s.capped == [] and s.allocation == [99999.5, 99999.5]
    assert caplog.records == []
