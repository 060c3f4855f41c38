"""The gradient probe's signal as the alignment strategies read it: mask types, finiteness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from rnb.balance.strategies.alignment import GradSignal, read_grad_signal
from rnb.balance.strategies.base import RoundStats
from rnb.balance.strategies.dga import DGA

GRADS = [[3.0, 4.0], [6.0, 8.0], [0.0, 1.0]]
TARGET = [0.0, 2.0]
W0 = np.array([0.2, 0.3, 0.5])


def _stats(present: Any, grads: Any = GRADS, lr: float = 0.1) -> RoundStats:
    extra: dict[str, Any] = {
        "domain_grads": torch.tensor(grads, dtype=torch.float32),
        "target_grad": torch.tensor(TARGET, dtype=torch.float32),
        "grad_present": present,
        "lr": lr,
    }
    return RoundStats(step=4, round=0, counts=torch.ones(3), loss_sum=torch.ones(3), extra=extra)


@pytest.mark.parametrize(
    "present",
    [
        torch.tensor([1, 0, 1]),
        torch.tensor([1.0, 0.0, 1.0]),
        torch.tensor([1, 0, 1], dtype=torch.uint8),
        [1, 0, 1],
        np.array([1.0, 0.0, 1.0]),
    ],
    ids=["int64", "float32", "uint8", "list", "numpy"],
)
def test_a_zero_one_presence_mask_reads_as_bool(present: Any) -> None:
    """A service may hand ``grad_present`` as 0/1 numbers: it is read as a bool mask (not as
    indices), so the DGA step is the one of the bool mask (domain 1 absent keeps 0.3)."""
    sig = read_grad_signal(_stats(present), True, "DGA")
    assert sig.present.dtype == np.bool_
    np.testing.assert_array_equal(sig.present, [True, False, True])
    ref = DGA(eta=0.1, lr_scaled=False).update(_stats(torch.tensor([True, False, True])), W0)
    new = DGA(eta=0.1, lr_scaled=False).update(_stats(present), W0)
    np.testing.assert_array_equal(new, ref)
    # <g_i, t> = (8, 16, 2); domains 0 and 2 share their mass 0.7
    e = W0[[0, 2]] * np.exp(0.1 * np.array([8.0, 2.0]))
    np.testing.assert_allclose(new, [0.7 * e[0] / e.sum(), 0.3, 0.7 * e[1] / e.sum()], rtol=1e-6)


def _signal(gram: Any = None, target: Any = None, target_sq: Any = 4.0, lr: float = 0.1) -> Any:
    return GradSignal(
        np.eye(2) if gram is None else np.asarray(gram, dtype=np.float64),
        np.array([1.0, 2.0]) if target is None else np.asarray(target, dtype=np.float64),
        target_sq,
        np.array([True, True]),
        lr,
    )


def test_finite_checks_every_product_and_the_lr_with_a_target() -> None:
    """With a target gradient, a non-finite domain product or learning rate still makes the
    round non-finite (the target's products are checked on top, not instead)."""
    inf, nan = float("inf"), float("nan")
    assert _signal().finite()
    assert not _signal(gram=[[1.0, nan], [nan, 1.0]]).finite()
    assert not _signal(gram=[[inf, 0.0], [0.0, 1.0]]).finite()
    assert not _signal(lr=nan).finite()
    assert not _signal(target=[1.0, inf]).finite()
    assert not _signal(target_sq=nan).finite()
    no_target = GradSignal(np.eye(2), None, None, np.array([True, True]), 0.1)
    assert no_target.finite()
    no_target.gram[0, 1] = inf
    assert not no_target.finite()


def test_dga_skips_a_round_whose_domain_products_overflow() -> None:
    """|g_0|² = 1e40 overflows fp32 while every <g_i, g_tgt> is finite (0, 2): DGA must skip
    the round on the gram's inf alone."""
    strat = DGA()
    new = strat.update(
        _stats(torch.tensor([True] * 3), grads=[[1e20, 0.0], [0.0, 1.0], [0.0, 1.0]]), W0
    )
    np.testing.assert_array_equal(new, W0)
    assert strat.skipped_rounds == 1
