"""Sandboxed detours' cross-rank sums, in one process (`TwoIdenticalRanks`: rank 1 is rank
0's copy, a sum over the ranks doubles a tensor).

A real run of a recording `SandboxedNoop` (three 1-step sandboxed detours per boundary) must
show every sum a sandboxed detour owes: the start evaluation, then per detour the sandbox's
flat gradient (summed, then halved: one rank's gradient), the evaluation after it and the
detour's tokens (float64: a float32 sum loses token counts above 2**24). Against brute
force: rank 0 evaluates every other probe example, so each result's losses are the mean
over that half of the probe, before and (for the first boundary, where AdamW's moments are
fresh) after one step written out by hand on the rows rank 0 trained on; and the FLOPs meter
counts both ranks' sandboxed tokens (``6·N``) and evaluated tokens (``2·N``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnb.balance.detour_plan import DetourResult
from rnb.balance.sandbox import Sandbox
from rnb.config import compose
from tests.detour_strategies import SandboxedNoop
from tests.integration.test_rank_reduce import (
    OVER,
    REDUCED,
    TWO_RANKS,
    _brute_force_grad,
    _run,
)
from tests.integration.test_skillit_train import ModelCopies, brute_force_eval_loss

#: the results each boundary's plan handed the recording strategy
RESULTS: list[list[DetourResult]] = []


class RecordingSandboxedNoop(SandboxedNoop):
    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> None:
        RESULTS.append(list(results))
        return super().detours_done(results, weights)


def _adamw_first_step(
    model: torch.nn.Module, split: Any, rows: np.ndarray, lr: float, decay: float, clip: float
) -> None:
    """In place: one AdamW step from fresh moments on the mean token-mean loss of ``rows``.

    With fresh moments AdamW's bias-corrected step is ``lr · g / (|g| + eps)`` after the
    decoupled decay ``p ← p (1 − lr · wd)`` (wd only on matrices outside the norms, as
    ``rnb.models.optim`` groups them); the gradient is first clipped to norm ``clip``.
    """
    g = _brute_force_grad(model, split, rows).double()
    g = g * min(1.0, clip / (float(g.norm()) + 1e-6))
    at = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            gp = g[at : at + p.numel()].view_as(p)
            at += p.numel()
            wd = 0.0 if p.ndim < 2 or "norm" in name or "ln_" in name else decay
            step = p.double() * (1.0 - lr * wd) - lr * gp / (gp.abs() + 1e-8)
            p.copy_(step.to(p.dtype))
    assert at == g.numel()


def test_sandboxed_detours_are_summed_over_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three boundaries of three 1-step sandboxed detours: the sums, in order and dtype; the
    losses before and after against brute force; the FLOPs of both ranks."""
    trained: list[np.ndarray] = []  # the rows each sandboxed step trained on (this rank's)
    real_step = Sandbox.step

    def spy(self: Sandbox, split: Any, rows: np.ndarray) -> int:
        trained.append(np.array(rows))
        return real_step(self, split, rows)

    monkeypatch.setattr(Sandbox, "step", spy)
    copies = ModelCopies()
    REDUCED.clear()
    RESULTS.clear()
    target = f"strategy._target_={__name__}.{RecordingSandboxedNoop.__name__}"
    over = [target, "+strategy.steps=1", TWO_RANKS]
    summary = _run(tmp_path, over, [copies])
    reduced = [r for r in REDUCED if r[0] != ()]  # scalars are Lightning's logging
    results = list(RESULTS)
    REDUCED.clear()
    RESULTS.clear()

    m, n = len(summary["domains"]), summary["num_parameters"]
    probe, stats = ((2 * m + 1,), torch.float64), ((4, m), torch.float64)
    flat, tokens = ((n,), torch.float32), ((1,), torch.float64)
    # a boundary: the start evaluation; per detour its step, the evaluation after, its tokens
    boundary = [probe, *[flat, probe, tokens] * 3]
    # boundaries at steps 0, 4, 8 (rounds end at 4, 8); the tail; last.ckpt
    assert reduced == [*boundary, stats, *boundary, stats, *boundary, stats, stats], reduced
    assert summary["detours"] == {"evaluations": 12, "sandboxed_steps": 9, "inline_steps": 0}

    cfg = compose("train", OVER)
    batch, length = int(cfg.data.batch_size), int(cfg.data.max_length)
    split, train_split = copies.split, copies.module.trainer.datamodule.train_data
    assert len(split) < int(cfg.balance.probe.eval_size)  # the probe: the whole eval split
    mine = np.arange(len(split))[0::2]  # rank 0's half of the probe
    # both ranks' tokens: 9 sandboxed steps of a batch each, 12 evaluations of the probe
    flops = 6 * n * 9 * (2 * batch) * length + 2 * n * 12 * (2 * len(mine)) * length
    assert summary["overhead"]["extra_flops"] == pytest.approx(flops, rel=1e-12)

    assert [[r.step for r in rs] for rs in results] == [[0] * 3, [4] * 3, [8] * 3]
    domain = np.asarray(train_split.domain)
    assert len(trained) == 9
    for rows, d in zip(trained, [0, m - 1, None] * 3, strict=True):
        assert rows.shape == (batch,)  # this rank's share of the global batch
        if d is not None:
            assert (domain[rows] == d).all()
    for rs in results:
        copies.module.load_state_dict(copies.states[rs[0].step])
        want = brute_force_eval_loss(copies.module, split, m, mine)
        for r in rs:
            np.testing.assert_allclose(r.before, want, rtol=1e-6)
            assert np.abs(r.after - r.before).max() > 1e-4  # one step trained the model
    # the first boundary's detours, stepped by hand (fresh AdamW moments)
    model = cfg.model
    current = float(model.lr) / int(model.warmup_steps)  # the warm-up's first rate
    clip = float(cfg.trainer.gradient_clip_val)
    for r, rows, lr in zip(results[0], trained[:3], [current, 1e-2, current], strict=True):
        copies.module.load_state_dict(copies.states[0])
        _adamw_first_step(copies.module, train_split, rows, lr, float(model.weight_decay), clip)
        want = brute_force_eval_loss(copies.module, split, m, mine)
        np.testing.assert_allclose(r.after, want, rtol=1e-6)
