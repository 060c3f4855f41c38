"""`BalanceCallback.setup`: what it refuses (with the text), and what it binds from the
DataModule and the trainer — the run dir, the mixture context, the ledger's sizes and
starvation settings, warm-up's uniform start, the detours' gradient accumulation — once.

Stand-ins for the trainer and DataModule carry exactly the attributes setup reads, so a
missing or misrouted one shows as a wrong value or an error here.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import rnb.balance.callback as callback_mod
from rnb.balance.callback import BalanceCallback
from rnb.balance.strategies.natural import Natural
from rnb.balance.strategies.stratified import Stratified


class _Sampler:
    def __init__(self) -> None:
        self.weights: list[np.ndarray] = []

    def set_weights(self, p: np.ndarray) -> None:
        self.weights.append(np.asarray(p))


class _Recording(Natural):
    """Natural mixing (p ∝ sizes: not uniform) that records the contexts it is set up with."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[Any] = []

    def setup(self, ctx: Any) -> None:
        self.contexts.append(ctx)
        super().setup(ctx)


def _dm(tmp: Path) -> SimpleNamespace:
    return SimpleNamespace(
        sampler=_Sampler(), domain_names=["a", "b"], domain_sizes=[10, 30],
        eval_proportions=[0.5, 0.5], seed=0, batch_size=2, eval_batch_size=2,
        output_dir=tmp / "run", eval_data=None, train_data=None,
        labels=SimpleNamespace(train=np.array([0] * 10 + [1] * 30), eval=np.array([0, 1])),
    )  # fmt: skip


def _trainer(dm: Any, tmp: Path) -> SimpleNamespace:
    return SimpleNamespace(
        datamodule=dm, global_rank=0, default_root_dir=str(tmp / "root"), max_steps=10,
        world_size=1, strategy=object(), accumulate_grad_batches=2,
    )  # fmt: skip


MODULE = SimpleNamespace(device=torch.device("cpu"))


def test_setup_binds_the_run_from_the_datamodule_once(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple] = []
    monkeypatch.setattr(callback_mod, "check_sharding_support", lambda *a: seen.append(a))
    strategy = _Recording()
    cb = BalanceCallback(strategy, starvation={"starve_share": 0.2, "starve_rounds": 5})
    dm = _dm(tmp_path)
    trainer = _trainer(dm, tmp_path)
    cb.setup(trainer, MODULE, "fit")
    assert cb.output_dir == tmp_path / "run"  # the DataModule's run dir, not the trainer's
    (ctx,) = strategy.contexts
    assert ctx.output_dir == tmp_path / "run" and ctx.example_budget == 10 * 2
    np.testing.assert_allclose(cb.weights, [0.25, 0.75])  # Natural: ∝ sizes
    assert cb.weights.dtype == np.float64
    np.testing.assert_allclose(dm.sampler.weights[-1], [0.25, 0.75])
    np.testing.assert_array_equal(cb.ledger.sizes, [10.0, 30.0])
    assert (cb.ledger.starve_share, cb.ledger.starve_rounds) == (0.2, 5)
    assert cb.detours.accumulate == 2
    assert seen == [(trainer, strategy, cb.services)]
    cb.setup(trainer, MODULE, "fit")  # Lightning may call it again: nothing is redone
    assert len(strategy.contexts) == 1 and len(dm.sampler.weights) == 1


def test_warmup_starts_uniform(tmp_path: Path) -> None:
    cb = BalanceCallback(_Recording(), warmup_rounds=1)
    cb.setup(_trainer(_dm(tmp_path), tmp_path), MODULE, "fit")
    np.testing.assert_array_equal(cb.weights, [0.5, 0.5])


def test_setup_outside_fit_does_nothing(tmp_path: Path) -> None:
    cb = BalanceCallback(Stratified())
    cb.setup(SimpleNamespace(), MODULE, "validate")  # would fail on the bare trainer
    assert cb.weights is None


@pytest.mark.parametrize("dm", [None, SimpleNamespace(domain_names=["a"])])
def test_setup_without_a_mixture_datamodule_is_refused(dm: Any) -> None:
    with pytest.raises(ValueError) as err:
        BalanceCallback(Stratified()).setup(
            SimpleNamespace(datamodule=dm, global_rank=0), MODULE, "fit"
        )
    assert str(err.value) == "BalanceCallback needs an RnBDataModule (with a mixture sampler)"


class _LossWeighted(Stratified):
    needs = frozenset({"loss_weights"})


def test_a_loss_reweighting_strategy_needs_the_models_hook(tmp_path: Path) -> None:
    cb = BalanceCallback(_LossWeighted())
    with pytest.raises(ValueError) as err:
        cb.setup(_trainer(_dm(tmp_path), tmp_path), MODULE, "fit")
    assert str(err.value) == (
        "strategy _LossWeighted re-weights the training loss, but the model (SimpleNamespace, "
        "model._target_) has no set_domain_loss_weights: inherit "
        "rnb.models.weighting.DomainLossWeighting"
    )
    got: list = []
    hooked = SimpleNamespace(device=torch.device("cpu"), set_domain_loss_weights=got.append)
    BalanceCallback(_LossWeighted()).setup(_trainer(_dm(tmp_path), tmp_path), hooked, "fit")
    assert got == [None]  # the strategy's loss weights (none for Stratified's own), applied
