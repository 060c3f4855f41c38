"""`BalanceCallback`'s constructor and per-batch hooks: defaults, errors, and what each hook
hands to the services, the gradient capture, the detours and the round.

A real callback over a real strategy, with recording stand-ins for the collaborators that
`setup` would build (so what is pinned is the wiring: the module, the batch and the
cross-rank reduction reach each of them).
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from rnb.balance.callback import BalanceCallback
from rnb.balance.strategies.rnb import RnB
from rnb.balance.strategies.stratified import Stratified
from rnb.config import compose


def test_defaults_equal_the_train_yaml() -> None:
    cfg = compose("train", []).balance
    params = inspect.signature(BalanceCallback).parameters
    for key in ("warmup_rounds", "save_gram", "exact_limit_bytes"):
        assert params[key].default == cfg[key], key
    cb = BalanceCallback(RnB())
    assert cb.warmup_rounds == 0 and cb.gram_signal is not None and cb.gram_signal.save_gram
    assert cb.steps_per_round == RnB.default_steps_per_round
    assert not BalanceCallback(RnB(), save_gram=False).gram_signal.save_gram


def test_invalid_round_settings_are_refused_naming_the_key() -> None:
    with pytest.raises(ValueError) as err:
        BalanceCallback(Stratified(), steps_per_round=0)
    assert str(err.value) == "balance.steps_per_round must be >= 1, got 0"
    with pytest.raises(ValueError) as err:
        BalanceCallback(Stratified(), warmup_rounds=-1)
    assert str(err.value) == "balance.warmup_rounds must be >= 0, got -1"


def test_starvation_and_probe_settings_are_kept() -> None:
    cb = BalanceCallback(
        Stratified(),
        starvation={"starve_share": 0.2, "starve_rounds": 5},
        probe={"eval_size": 8},
    )
    assert cb.starvation_cfg == {"starve_share": 0.2, "starve_rounds": 5}
    assert cb.probe_cfg == {"eval_size": 8}
    assert BalanceCallback(Stratified()).starvation_cfg == {}


class _Recorder:
    """Records every call made on it as ``(name, args)``; returns ``ret`` from each."""

    def __init__(self, ret: Any = None, **attrs: Any) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.keywords: list[dict[str, Any]] = []
        self.ret = ret
        self.__dict__.update(attrs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kw: (
            self.calls.append((name, args)),
            self.keywords.append(kw),
            self.ret,
        )[2]


def _wired(
    world_size: int = 1, active: bool = True, strategy: Any = None
) -> tuple[BalanceCallback, SimpleNamespace]:
    cb = BalanceCallback(strategy or RnB(), steps_per_round=2)
    cb.stats = _Recorder()
    cb.services = [_Recorder()]
    cb.gram_signal = _Recorder()
    cb.detours = _Recorder(ret=True, active=active)
    rounds: list[tuple] = []
    done: list[tuple] = []
    cb._end_round = lambda trainer, module, step: rounds.append((trainer, module, step))
    cb._detours_done = lambda trainer, module: done.append((trainer, module))
    reduced = SimpleNamespace(reduce=lambda t, reduce_op: t * world_size)
    trainer = SimpleNamespace(world_size=world_size, global_step=2, strategy=reduced)
    return cb, SimpleNamespace(trainer=trainer, rounds=rounds, done=done)


MODULE, BATCH = object(), {"domain": torch.tensor([0, 1])}
OUTPUTS = {"domain": torch.tensor([0, 1]), "example_loss": torch.tensor([1.0, 2.0])}


def test_batch_start_hands_the_module_and_batch_to_detours_and_capture() -> None:
    cb, w = _wired()
    cb.on_train_batch_start(w.trainer, MODULE, BATCH, 0)
    assert cb.detours.calls == [("before_batch", (0, w.trainer, MODULE, None))]
    assert cb.gram_signal.calls == [("on_train_batch_start", (w.trainer, MODULE, BATCH))]


def test_batch_end_hands_the_module_to_services_detours_and_the_round() -> None:
    cb, w = _wired()
    cb.on_train_batch_end(w.trainer, MODULE, OUTPUTS, BATCH, 0)
    assert [c[0] for c in cb.stats.calls] == ["update"]
    assert cb.services[0].calls == [("on_train_batch_end", (w.trainer, MODULE, BATCH, OUTPUTS))]
    assert cb.detours.calls == [("after_batch", (1, w.trainer, MODULE, None))]
    assert w.done == [(w.trainer, MODULE)]
    assert w.rounds == [(w.trainer, MODULE, 2)]  # step 2 ends a round of K = 2


def test_outputs_without_per_example_losses_are_not_counted() -> None:
    """A step whose `training_step` returned no dict (None: a skipped batch) or no
    `example_loss` adds nothing to the round's statistics and calls no service."""
    for outputs in (None, {"loss": torch.tensor(1.0)}):
        cb, w = _wired(active=False)
        cb.on_train_batch_end(w.trainer, MODULE, outputs, BATCH, 0)
        assert cb.stats.calls == [] and cb.services[0].calls == []
        assert cb.batches_seen == 1


def test_detour_hooks_get_the_cross_rank_sum_under_ddp() -> None:
    cb, w = _wired(world_size=2)
    cb.on_train_batch_start(w.trainer, MODULE, BATCH, 0)
    cb.on_train_batch_end(w.trainer, MODULE, OUTPUTS, BATCH, 0)
    (_, before), (_, after) = cb.detours.calls
    for reduce_fn in (before[3], after[3]):
        assert float(reduce_fn(torch.tensor(3.0))) == 6.0  # SUM over the two ranks
    assert before[:3] == (0, w.trainer, MODULE) and after[:3] == (1, w.trainer, MODULE)


class _LossWeighted(Stratified):
    needs = frozenset({"loss_weights"})


@pytest.mark.parametrize("active", [False, True])
def test_train_start_reapplies_restored_loss_weights(active: bool) -> None:
    """After a restore, a loss-reweighting strategy's mixture reaches the loss again (the
    sampler too, unless its restored schedule holds queued in-line detours)."""
    cb = BalanceCallback(_LossWeighted())
    cb.trajectory = [{"step": 4, "weights": [0.5, 0.5]}]  # restored: not a fresh start
    cb.detours = SimpleNamespace(active=active)
    applied: list = []
    cb._apply = lambda module, sampler=True: applied.append((module, sampler))
    cb.on_train_start(SimpleNamespace(global_step=4), MODULE)
    assert applied == [(MODULE, not active)] and cb._last_step == 4
    plain = BalanceCallback(Stratified())
    plain.trajectory, plain.detours = cb.trajectory, cb.detours
    plain._apply = lambda module, sampler=True: applied.append("plain")
    plain.on_train_start(SimpleNamespace(global_step=4), MODULE)
    assert applied == [(MODULE, not active)]  # a sampling-only strategy re-applies nothing


def test_a_round_ending_inside_an_inline_detour_is_refused() -> None:
    cb = BalanceCallback(Stratified())
    cb.round, cb.detours = 3, SimpleNamespace(active=True)
    with pytest.raises(RuntimeError) as err:
        cb._boundary(SimpleNamespace(), MODULE, None)
    assert str(err.value) == (
        "round 3 ended inside an in-line detour: raise balance.steps_per_round or shorten "
        "the strategy's detours"
    )


def test_boundary_hands_the_plan_its_mixture_and_the_next_round_boundary() -> None:
    cb = BalanceCallback(Stratified(), steps_per_round=5)
    cb.weights, cb.batches_seen, cb.round = np.array([0.25, 0.75]), 7, 1
    planned: list = []

    def plan_detours(stats, weights):
        planned.append(weights.copy())
        weights[:] = 0.0  # scribbling on its copy must not reach the callback
        return ["detour"]

    cb.strategy.plan_detours = plan_detours
    cb.sampler = SimpleNamespace(weights=np.array([0.25, 0.75]))
    cb.detours = _Recorder(ret=True, active=False, accumulate=2)
    done: list = []
    cb._detours_done = lambda trainer, module: done.append((trainer, module))
    trainer = SimpleNamespace(world_size=1)
    cb._boundary(trainer, MODULE, None)
    np.testing.assert_array_equal(planned[0], [0.25, 0.75])
    np.testing.assert_array_equal(cb.weights, [0.25, 0.75])
    ((name, args),) = cb.detours.calls
    assert name == "start" and args[0] == ["detour"] and args[2] is MODULE
    assert cb.detours.keywords[0] == {"next_boundary": 7 + 5 * 2, "reduce_fn": None}
    assert done == [(trainer, MODULE)]


def test_a_static_strategy_ends_its_rounds_with_the_module_too() -> None:
    """Static mixtures skip the meter, not the round: `_end_round` gets the same arguments."""
    cb, w = _wired(active=False, strategy=Stratified())
    cb.on_train_batch_end(w.trainer, MODULE, OUTPUTS, BATCH, 0)
    assert [c[0] for c in cb.stats.calls] == ["update"]
    assert w.rounds == [(w.trainer, MODULE, 2)]
