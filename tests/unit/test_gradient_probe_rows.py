"""`GradientProbe` rows against a float64 gradient written out by hand.

The model is a linear regression (as in ``test_sandbox_step``) whose per-example "loss sum"
is the squared residual ``(x·w + b - t)²`` and whose token counts come from the split, so a
probe row is the gradient of the mean over examples of ``loss_sum / max(tokens, 1)``
(:func:`reference_row`). Domain 0 holds an example of one token and one of none: both
divide by 1. ``unused`` is trainable and probed but the loss never reads it, and it sits
between ``w`` and ``b`` so that its slice's offset matters; ``extra`` is read only while
``reads_extra`` is set (a parameter some rounds reach and others do not).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rnb.accounting import OverheadMeter
from rnb.balance.services.gradient_probe import GradientProbe

X = np.array(
    [[1, 2, 0], [0, 1, -1], [2, -1, 1], [1, 1, 1], [-1, 0, 2], [3, 1, 0], [0, -2, 1], [1, 0, 0]],
    dtype=np.float32,
)
T = np.array([1, -2, 0.5, 3, -1, 2, 1, 0], dtype=np.float32)
# Domain 0 = rows 0-3 (row 1: one token, row 2: none), domain 1 = rows 4-7.
TOKENS = np.array([4, 1, 0, 5, 7, 3, 2, 6], dtype=np.int64)
DOMAIN = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.int64)
BATCHES = [np.arange(4), np.arange(4, 8)]  # each domain whole, in index order
W0, B0, EXTRA0 = np.array([0.5, -1.0, 2.0]), 0.25, 0.75


class Reg(nn.Module):
    """``loss_sum = (x·w + b [+ extra] - t)²`` per example; ``unused`` is never read."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(W0, dtype=torch.float32))
        self.unused = nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
        self.b = nn.Parameter(torch.tensor([B0], dtype=torch.float32))
        self.extra = nn.Parameter(torch.tensor([EXTRA0], dtype=torch.float32))
        self.reads_extra = False
        self.seen: list[torch.device] = []  # the device of every batch handed in

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(batch["features"].device)
        r = batch["features"] @ self.w + self.b - batch["target"]
        if self.reads_extra:
            r = r + self.extra
        return r.pow(2), batch["tokens"]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def datamodule() -> SimpleNamespace:
    split = SimpleNamespace(
        batch_keys=("features", "target", "tokens", "domain"),
        features=X,
        target=T,
        tokens=TOKENS,
        domain=DOMAIN,
    )
    return SimpleNamespace(domain_names=["a", "b"], train_data=split, eval_data=split)


def set_up(model: Reg, params: Any = None) -> GradientProbe:
    """A probe whose batches are whole domains (4 examples each, drawn in index order)."""
    svc = GradientProbe(batch_size=4, target=None, params=params)
    svc.setup(SimpleNamespace(), model, datamodule(), OverheadMeter())  # type: ignore[arg-type]
    return svc


def reference_row(rows: np.ndarray, names: list[str], extra: bool = False) -> np.ndarray:
    """d/dθ of mean_i (x_i·w + b [+ extra] - t_i)² / max(tokens_i, 1), in float64, flattened
    in the order of ``names``; a parameter the loss does not read has a zero gradient."""
    x, t = X[rows].astype(np.float64), T[rows].astype(np.float64)
    c = 2 * (x @ W0 + B0 + (EXTRA0 if extra else 0.0) - t) / np.maximum(TOKENS[rows], 1)
    grads = {
        "w": (c[:, None] * x).mean(axis=0),
        "unused": np.zeros(4),
        "b": np.array([c.mean()]),
        "extra": np.array([c.mean() if extra else 0.0]),
    }
    return np.concatenate([grads[n] for n in names])


@pytest.mark.parametrize(
    ("params", "names"),
    [(None, ["w", "unused", "b", "extra"]), (["b", "unused"], ["unused", "b"])],
)
def test_rows_are_the_gradient_of_the_mean_token_mean_loss(params: Any, names: list[str]) -> None:
    """Every probed parameter's slice is written, also over a buffer full of garbage: the
    one- and zero-token examples divide by 1, and the unread parameters' slices are exactly
    zero (not an error: autograd is told they may be unused)."""
    model = Reg()
    svc = set_up(model, params)
    assert [n for n, _ in svc.named] == names
    assert [b.tolist() for b in svc.draw(0)] == [b.tolist() for b in BATCHES]
    assert svc.matrix is not None
    svc.matrix.fill_(float("nan"))
    matrix = svc.probe(model)
    for row in range(2):
        ref = reference_row(BATCHES[row], names)
        np.testing.assert_allclose(matrix[row].double().numpy(), ref, rtol=1e-6, atol=1e-6)
    start = 3 if params is None else 0  # the unused slice: exactly zero, not merely small
    assert torch.equal(matrix[:, start : start + 4], torch.zeros(2, 4))
    assert svc.meter.extra_flops == 6.0 * 9 * 8  # 9 parameters, 2 batches of 4 examples


def test_a_parameter_the_loss_stops_reaching_gets_zeros_next_round() -> None:
    """The buffer is reused across rounds: a parameter read in one round's loss and not in
    the next has the old gradient overwritten by zeros."""
    model = Reg()
    svc = set_up(model)
    names = ["w", "unused", "b", "extra"]
    model.reads_extra = True
    first = svc.probe(model).clone()
    for d in range(2):
        ref = reference_row(BATCHES[d], names, extra=True)
        np.testing.assert_allclose(first[d].double().numpy(), ref, rtol=1e-6, atol=1e-6)
    assert bool((first[:, -1] != 0).all())  # the first round left values in extra's slice
    model.reads_extra = False
    second = svc.probe(model)
    for d in range(2):
        ref = reference_row(BATCHES[d], names)
        np.testing.assert_allclose(second[d].double().numpy(), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(second[:, -1], torch.zeros(2))


def test_batches_are_built_on_the_models_device() -> None:
    """The batch goes to the matrix's (the probed parameters') device, not the default one:
    ``meta`` stands in for an accelerator, and a CPU batch could not meet a meta model."""
    with torch.device("meta"):
        model = Reg()
    svc = set_up(model)
    matrix = svc.probe(model)
    assert model.seen == [torch.device("meta")] * 2
    assert matrix.device.type == "meta" and matrix.shape == (2, 9)
