"""`Sandbox.step`, `Sandbox.set_lr` and `draw_detour_batch` against hand-computed values.

The model is a linear regression whose per-example "loss sum" is the squared residual
``(x·w + b - t)²`` and whose token counts come from the split, so the sandbox's loss,
the mean over examples of ``loss_sum / max(tokens, 1)``, has a gradient written out in
float64 NumPy (:func:`reference_grads`). An SGD step without momentum or weight decay
moves each parameter by exactly ``-lr · grad``. A third parameter, ``unused``, is
trainable but the loss never reads it.
"""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

import rnb.balance.sandbox as sandbox_mod
from rnb.balance.sandbox import Sandbox, draw_detour_batch

LR = 0.1
# Eight examples; row 5 has one token and row 6 none (its loss sum still counts, over 1).
X = np.array(
    [[1, 2, 0], [0, 1, -1], [2, -1, 1], [1, 1, 1], [-1, 0, 2], [3, 1, 0], [0, -2, 1], [1, 0, 0]],
    dtype=np.float32,
)
T = np.array([1, -2, 0.5, 3, -1, 2, 1, 0], dtype=np.float32)
TOKENS = np.array([4, 3, 2, 5, 7, 1, 0, 6], dtype=np.int64)
ROWS = np.array([6, 5, 0, 3, 2])
SPLIT = SimpleNamespace(
    batch_keys=("features", "target", "tokens", "domain"),
    features=X,
    target=T,
    tokens=TOKENS,
    domain=np.zeros(len(X), dtype=np.int64),
)


class Reg(nn.Module):
    """``loss_sum = (x·w + b - t)²`` per example, computed in ``w``'s dtype."""

    def __init__(self, w_dtype: torch.dtype = torch.float32, b_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=w_dtype))
        self.b = nn.Parameter(torch.tensor([0.25], dtype=b_dtype))
        self.unused = nn.Parameter(torch.tensor([1.0, -2.0]))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.w.dtype
        r = batch["features"].to(dt) @ self.w + self.b.to(dt) - batch["target"].to(dt)
        return r.pow(2), batch["tokens"]


def reference_grads(w: np.ndarray, b: float, rows: np.ndarray) -> tuple[np.ndarray, float]:
    """d/d(w, b) of mean_i (x_i·w + b - t_i)² / max(tokens_i, 1), in float64."""
    x, t = X[rows].astype(np.float64), T[rows].astype(np.float64)
    c = 2 * (x @ w + b - t) / np.maximum(TOKENS[rows], 1)
    return (c[:, None] * x).mean(axis=0), float(c.mean())


def make_trainer(model: nn.Module, **kw: Any) -> SimpleNamespace:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    fields = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "world_size": 1}
    fields.update(kw)
    return SimpleNamespace(
        optimizers=[opt], precision_plugin=SimpleNamespace(forward_context=nullcontext), **fields
    )


def step_once(model: Reg, trainer: SimpleNamespace, reduce_fn: Any = None) -> dict[str, Any]:
    """One sandboxed step on ``ROWS``; what the parameters and gradients were right after it."""
    with Sandbox(trainer, model, reduce_fn, rng_seed=0) as box:
        positions = box.step(SPLIT, ROWS)
        after = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = [p.grad for p in model.parameters()]
    return {"positions": positions, "params": after, "grads": grads}


def expected_params(grad_w: np.ndarray, grad_b: float) -> tuple[np.ndarray, np.ndarray]:
    w0, b0 = np.array([0.5, -1.0, 2.0]), np.array([0.25])
    return w0 - LR * grad_w, b0 - LR * np.array([grad_b])


def assert_params(got: dict[str, torch.Tensor], grad_w: np.ndarray, grad_b: float) -> None:
    w, b = expected_params(grad_w, grad_b)
    np.testing.assert_allclose(got["w"].double().numpy(), w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["b"].double().numpy(), b, rtol=1e-6, atol=1e-6)
    # Trainable but not in the loss: a zero gradient, so plain SGD leaves it exactly as it was.
    assert torch.equal(got["unused"], torch.tensor([1.0, -2.0]))


def test_step_is_sgd_on_the_mean_of_token_mean_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """One- and zero-token examples divide by 1; an unused parameter gets a zero gradient;
    the batch is built on the module's device; every ``.grad`` is cleared (None) after."""
    devices: list[Any] = []
    real_batch_rows = sandbox_mod.batch_rows

    def recording_batch_rows(split: Any, rows: np.ndarray, device: Any) -> Any:
        devices.append(device)
        return real_batch_rows(split, rows, device)

    monkeypatch.setattr(sandbox_mod, "batch_rows", recording_batch_rows)
    model = Reg()
    got = step_once(model, make_trainer(model))
    assert devices == [torch.device("cpu")]
    assert got["positions"] == len(ROWS)  # a feature batch: one position per example
    assert_params(got["params"], *reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS))
    assert got["grads"] == [None, None, None]


@pytest.mark.parametrize("clip", [None, 0, 0.0])
def test_no_clip_value_means_no_clipping(clip: float | None) -> None:
    model = Reg()
    got = step_once(
        model, make_trainer(model, gradient_clip_val=clip, gradient_clip_algorithm="value")
    )
    assert_params(got["params"], *reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS))


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradients_are_clipped_as_the_trainer_clips(algorithm: str) -> None:
    """Clip value 0.5 binds for both algorithms (the gradient's norm is ~3.9, entries reach
    ~2.6, and some lie inside ±0.5); reference: the clipping written out by hand."""
    clip = 0.5
    gw, gb = reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS)
    flat = np.concatenate([gw, [gb], [0.0, 0.0]])  # unused's zero gradient counts in the norm
    assert np.linalg.norm(flat) > 3 * clip and (np.abs(flat) > clip).sum() >= 2
    assert ((np.abs(flat) < clip) & (flat != 0)).any()
    if algorithm == "value":
        flat = np.clip(flat, -clip, clip)
    else:  # torch's clip_grad_norm_: scale by max_norm / (norm + 1e-6), never up
        flat = flat * min(1.0, clip / (np.linalg.norm(flat) + 1e-6))
    model = Reg()
    trainer = make_trainer(model, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
    got = step_once(model, trainer)
    assert_params(got["params"], flat[:3], float(flat[3]))


def test_a_lightning_value_clip_algorithm_clips_by_value() -> None:
    """What ``L.Trainer(gradient_clip_algorithm="value")`` stores: the enum, not the string
    (a bug: ``str()`` of it never equalled ``"value"``, so the sandbox clipped by norm)."""
    real = L.Trainer(
        gradient_clip_val=0.5, gradient_clip_algorithm="value", logger=False, barebones=True
    )
    assert real.gradient_clip_algorithm is GradClipAlgorithmType.VALUE
    clip = 0.5
    gw, gb = reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS)
    flat = np.clip(np.concatenate([gw, [gb]]), -clip, clip)
    model = Reg()
    algo = GradClipAlgorithmType("value")
    got = step_once(
        model, make_trainer(model, gradient_clip_val=clip, gradient_clip_algorithm=algo)
    )
    assert_params(got["params"], flat[:3], float(flat[3]))


def test_two_identical_ranks_take_the_single_rank_step() -> None:
    """The ranks' sum of the flat gradient divided by the world size: a second rank with the
    same gradient (the sum doubles it) gives bit for bit the single-rank update."""
    summed: list[tuple[tuple[int, ...], torch.dtype]] = []

    def reduce(t: torch.Tensor) -> torch.Tensor:
        summed.append((tuple(t.shape), t.dtype))
        return t + t

    one, two = Reg(), Reg()
    single = step_once(one, make_trainer(one))
    double = step_once(two, make_trainer(two, world_size=2), reduce_fn=reduce)
    assert summed == [((3 + 1 + 2,), torch.float32)]  # one flat vector, unused's zeros too
    for name, p in single["params"].items():
        assert torch.equal(double["params"][name], p), name


def test_mixed_dtype_parameters_get_gradients_in_their_own_dtype() -> None:
    """A float64 weight beside float32 parameters: the flat gradient is promoted to float64,
    and each piece is cast back to its parameter's dtype before the optimizer step."""
    model = Reg(w_dtype=torch.float64)
    got = step_once(model, make_trainer(model))
    assert [p.dtype for p in model.parameters()] == [torch.float64, torch.float32, torch.float32]
    assert got["params"]["w"].dtype == torch.float64
    assert_params(got["params"], *reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS))


def test_a_float64_model_steps_in_float64() -> None:
    model = Reg(w_dtype=torch.float64, b_dtype=torch.float64).double()
    got = step_once(model, make_trainer(model))
    assert all(p.dtype == torch.float64 for p in got["params"].values())
    assert_params(got["params"], *reference_grads(np.array([0.5, -1.0, 2.0]), 0.25, ROWS))


def two_group_optimizer() -> torch.optim.SGD:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a], "lr": 0.2}, {"params": [b], "lr": 0.4}], lr=0.2)


def lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in opt.param_groups]


def sandbox_for(opt: torch.optim.Optimizer) -> Sandbox:
    return Sandbox(SimpleNamespace(optimizers=[opt]), Reg(), None, rng_seed=0)


@pytest.mark.parametrize(
    ("scheduled", "script"),
    [
        # a scheduler records ``initial_lr`` per group: "peak" restores it, a number
        # overrides it, "current" keeps the scheduled rate
        (True, [("current", [0.1, 0.2]), (0.05, [0.05, 0.05]), ("peak", [0.2, 0.4])]),
        # no scheduler, no ``initial_lr``: the rate the optimizer has is its peak
        (False, [("peak", [0.2, 0.4]), (0.3, [0.3, 0.3]), ("current", [0.3, 0.3])]),
    ],
)
def test_set_lr(scheduled: bool, script: list[tuple[float | str, list[float]]]) -> None:
    opt = two_group_optimizer()
    if scheduled:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
        opt.step()  # no gradients: nothing moves, but the scheduler expects this order
        sched.step()
    else:
        assert "initial_lr" not in opt.param_groups[0]
    box = sandbox_for(opt)
    for lr, expected in script:
        box.set_lr(lr)
        assert lrs(opt) == expected, lr


DOMAINS = [np.arange(100, 120), np.arange(200, 205)]


def test_detour_batch_weights_need_not_be_normalised() -> None:
    idx, doms = draw_detour_batch(DOMAINS, np.array([1.0, 3.0]), 16, [7, 1])
    same_idx, same_doms = draw_detour_batch(DOMAINS, np.array([0.25, 0.75]), 16, [7, 1])
    assert np.array_equal(idx, same_idx) and np.array_equal(doms, same_doms)
    assert set(doms.tolist()) == {0, 1}


def test_detour_batch_rows_are_int64_indices_of_their_domain() -> None:
    idx, doms = draw_detour_batch(DOMAINS, np.array([1.0, 1.0]), 12, [3])
    assert idx.dtype == np.int64 and idx.shape == (12,)
    for d, pool in enumerate(DOMAINS):
        assert np.isin(idx[doms == d], pool).all()


@pytest.mark.parametrize("seed", range(5))
def test_detour_batch_draws_without_replacement_while_the_domain_suffices(seed: int) -> None:
    """Exactly as many rows as the domain has: a permutation of it; more: repeats."""
    pool = [np.arange(100, 120)]
    idx, _ = draw_detour_batch(pool, np.array([1.0]), 20, [seed])
    assert sorted(idx.tolist()) == list(range(100, 120))
    idx, _ = draw_detour_batch(pool, np.array([1.0]), 21, [seed])
    assert np.isin(idx, pool[0]).all() and len(set(idx.tolist())) < 21
