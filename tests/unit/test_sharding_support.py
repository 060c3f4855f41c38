"""Under FSDP, strategies that run the model outside the training step are refused at setup."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from rnb.balance.sharding import check_sharding_support
from rnb.balance.strategies.rnb import RnB
from rnb.balance.strategies.skillit import SkillIt
from rnb.balance.strategies.stratified import Stratified
from rnb.run.fsdp import FSDPStrategy as RnbFSDP


class GradientProbe:  # a stand-in service: only its class name is reported
    pass


def _trainer(strategy: object) -> SimpleNamespace:
    return SimpleNamespace(strategy=strategy)


@pytest.mark.parametrize("fsdp", [FSDPStrategy, RnbFSDP])
def test_services_and_detours_are_refused_under_fsdp(fsdp: type) -> None:
    trainer = _trainer(fsdp())
    with pytest.raises(ValueError, match=r"strategy RnB needs GradientProbe, which run the model"):
        check_sharding_support(trainer, RnB(), [GradientProbe()])
    with pytest.raises(ValueError, match=r"SkillIt needs detours .*Use trainer=gpu \(DDP\)"):
        check_sharding_support(trainer, SkillIt(graph="identity"), [])


def test_capture_only_strategies_pass_under_fsdp_and_anything_under_ddp() -> None:
    check_sharding_support(_trainer(FSDPStrategy()), RnB(), [])
    check_sharding_support(_trainer(FSDPStrategy()), Stratified(), [])
    check_sharding_support(_trainer(DDPStrategy()), SkillIt(graph="identity"), [GradientProbe()])
