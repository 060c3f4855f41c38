"""Strategy state survives a checkpoint (Aioli, Skill-It, DoReMi, DGA, DoGE).

A resumed run rebuilds the strategy from its config, calls ``setup`` and then
``load_state_dict`` with what ``state_dict`` returned into the Lightning checkpoint. At every
point of a short scripted run (before the first call, between a plan and its results, after
each update) the state is saved through ``torch.save`` / ``torch.load(weights_only=True)``
(plain Python types only, as a checkpoint holds them) into a fresh instance, which must then
hold exactly the attributes of the original (values, ``None`` s and array dtypes) and answer
the next call with bit-identical weights / plans.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.strategies.aioli import Aioli
from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats
from rnb.balance.strategies.dga import DGA
from rnb.balance.strategies.doge import DoGE
from rnb.balance.strategies.doremi import DoReMi
from rnb.balance.strategies.skillit import SkillIt

M = 3
CTX = MixtureContext([f"d{i}" for i in range(M)], np.array([10, 20, 30]), np.full(M, 1 / M), 7)

#: One call of a scripted run: ``(strategy, current weights) -> weights, a plan or None``.
Op = Callable[[MixingStrategy, np.ndarray], Any]


def _checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` after a trip through a checkpoint file (plain types only, or it fails)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _same(a: Any, b: Any, where: str = "strategy") -> None:
    """Assert ``a`` and ``b`` hold the same values, types and array dtypes, recursively."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{where}: {a} != {b}"
    elif dataclasses.is_dataclass(a) or hasattr(a, "__dict__"):
        _same(vars(a), vars(b), where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _stats(r: int, extra: dict[str, Any]) -> RoundStats:
    return RoundStats(4 * (r + 1), r, torch.ones(M), torch.ones(M), extra={"lr": 0.05, **extra})


def _losses(r: int, n: int) -> list[DetourResult]:
    """``n`` detour results of round ``r`` (seeded, domain 2 without probe examples in r 1)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([r, i])
        before = rng.uniform(2.0, 3.0, M)
        after = before - rng.uniform(-0.05, 0.2, M)
        if r == 1:
            before[2] = after[2] = np.nan
        out.append(DetourResult(Detour(1, "inline", mixture=[1.0] * M), before, after, 0))
    return out


def _aioli_ops(n_results: int) -> list[Op]:
    ops: list[Op] = []
    for r in range(3):
        stats = None if r == 0 else _stats(r - 1, {})
        ops.append(lambda s, w, stats=stats: s.plan_detours(stats, w))
        ops.append(lambda s, w, r=r: s.detours_done(_losses(r, n_results), w))
    return ops


def _eval_loss(r: int) -> dict[str, Any]:
    return {"eval_loss": torch.tensor([2.0 - 0.1 * r, 1.5, 3.0 + 0.2 * r], dtype=torch.float64)}


def _graph_runs() -> list[DetourResult]:
    """One single-domain run per domain from the same start (Skill-It's graph estimation)."""
    start = np.array([2.0, 2.5, 3.0])
    drops = np.array([[0.4, 0.1, 0.0], [0.0, 0.3, 0.2], [0.1, -0.1, 0.5]])
    return [DetourResult(Detour(2, domain=i), start, start - drops[i], 0) for i in range(M)]


SKILLIT_OPS: list[Op] = [
    lambda s, w: s.plan_detours(None, w),
    lambda s, w: s.detours_done(_graph_runs(), w),
    *[lambda s, w, r=r: s.update(_stats(r, _eval_loss(r)), w) for r in range(3)],
]


def _excess(r: int) -> dict[str, Any]:
    """Round ``r``'s excess losses; domain 1 has no tokens before round 2, domain 0 in round 2."""
    tokens = [[4.0, 0.0, 2.0], [3.0, 0.0, 5.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0]][r]
    clipped = [0.3 + 0.1 * r, 0.2, 0.1 * r]
    clipped = [c if t > 0 else math.nan for c, t in zip(clipped, tokens, strict=True)]
    ex = {"clipped": clipped, "mean": clipped, "tokens": tokens, "vocab_size": 50}
    return {"excess_loss": {k: torch.tensor(v, dtype=torch.float64) for k, v in ex.items()}}


DOREMI_OPS: list[Op] = [lambda s, w, r=r: s.update(_stats(r, _excess(r)), w) for r in range(4)]


def _grads(r: int) -> dict[str, Any]:
    """Round ``r``'s probe gradients; round 1's are not finite (the round is skipped)."""
    g = torch.tensor([[1.0, 0.5 * r], [0.2, 1.0], [-0.3, 0.4 + r]], dtype=torch.float32)
    if r == 1:
        g[0, 0] = math.inf
    return {
        "domain_grads": g,
        "grad_present": torch.tensor([True, True, r != 2]),
        "target_grad": torch.tensor([0.5, 1.0 - 0.2 * r]),
    }


GRAD_OPS: list[Op] = [lambda s, w, r=r: s.update(_stats(r, _grads(r)), w) for r in range(4)]

#: id -> (a fresh instance before ``setup``, its scripted run)
CASES: dict[str, tuple[Callable[[], MixingStrategy], list[Op]]] = {
    "aioli_ema": (lambda: Aioli(lp_rounds=2, lp_steps=1, ema=0.3, eta=2.0), _aioli_ops(2 * M)),
    "aioli_cumulative": (
        lambda: Aioli(lp_rounds=1, lp_steps=1, normalize=False, eta=3.0, unmix="diagonal"),
        _aioli_ops(M),
    ),
    "aioli_prior": (
        lambda: Aioli(lp_rounds=1, lp_steps=1, prior={"weights": [1, 2, 1]}, prior_steps=4),
        # the first boundary is inside the prior: no detours, so no results to hand back
        [op for i, op in enumerate(_aioli_ops(M)) if i != 1],
    ),
    "skillit_estimate": (
        lambda: SkillIt(graph="estimate", window=2, save_graph=False),
        SKILLIT_OPS,
    ),
    "skillit_identity": (lambda: SkillIt(graph="identity", window=2, eta=1.0), SKILLIT_OPS),
    "doremi": (lambda: DoReMi(eta=2.0, smoothing=0.01), DOREMI_OPS),
    "doremi_log_vocab": (lambda: DoReMi(initial_score="log_vocab", mode="resample"), DOREMI_OPS),
    "dga": (lambda: DGA(eta=0.5, mu=0.01, ema=0.2), GRAD_OPS),
    "doge_train": (lambda: DoGE(target="train", mu=0.5), GRAD_OPS),
    "doge_eval": (lambda: DoGE(target="eval", mu=0.5, mode="resample"), GRAD_OPS),
}


def _fresh(make: Callable[[], MixingStrategy]) -> MixingStrategy:
    """A strategy as the callback builds it on (re)start: ``setup``, then ``initial_weights``."""
    s = make()
    s.setup(CTX)
    s.initial_weights()
    return s


@pytest.mark.parametrize("case", list(CASES))
def test_state_round_trip_restores_everything_at_every_point(case: str) -> None:
    make, ops = CASES[case]
    run = _fresh(make)
    w = run.initial_weights()
    changed = 0
    for i, op in enumerate([*ops, None]):
        resumed = _fresh(make)
        resumed.load_state_dict(_checkpoint(run.state_dict()))
        _same(vars(run), vars(resumed), f"{case} after {i} calls")
        _same(run.state_dict(), resumed.state_dict(), f"{case} state_dict after {i} calls")
        _same(run.describe(), resumed.describe(), f"{case} describe() after {i} calls")
        if op is None:
            break
        out, out_resumed = op(run, w.copy()), op(resumed, w.copy())
        _same(out, out_resumed, f"{case} call {i}")
        if isinstance(out, np.ndarray):
            changed += not np.array_equal(out, w)
            w = out
    assert changed >= 1, "the script never moved the weights: it would pin no state"


@pytest.mark.parametrize("case", ["dga", "doge_train", "doremi", "skillit_identity"])
def test_state_saved_before_its_keys_existed_loads_as_fresh(case: str) -> None:
    """An empty strategy state (a checkpoint written before the keys existed) resumes the
    counters from zero, the last signals from nothing (Skill-It: its configured graph)."""
    make, ops = CASES[case]
    used = _fresh(make)
    w = used.initial_weights()
    for op in ops:
        w = op(used, w)
    assert used.state_dict() != _fresh(make).state_dict()
    used.load_state_dict({})
    _same(vars(used), vars(_fresh(make)))
