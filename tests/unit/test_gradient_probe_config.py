"""GradientProbe.from_config, collect's cross-rank reduction and load_state_dict, pinned.

``from_config`` is what Hydra's ``balance.probe`` block and the strategy reach the probe
through: every key must arrive, the defaults must be train.yaml's, and the target batch
follows the strategy (``target`` and ``needs``). The reduction is only a DDP step.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.gradient_probe import GradientProbe
from rnb.config import compose

BOTH = frozenset({"domain_grads", "target_grad"})


class _Linear(torch.nn.Module):
    """A feature model with the LM's ``example_losses`` contract (one "token" per example)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1)

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        err = self.lin(batch["features"]).squeeze(-1) - batch["target"]
        return err**2, torch.ones_like(err)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _toy(world_size: int) -> tuple[GradientProbe, _Linear]:
    """A probe set up on two domains of 4 feature examples each, no target batch."""
    rng = np.random.default_rng(0)
    split = SimpleNamespace(
        batch_keys=("features", "target", "domain"),
        features=rng.normal(size=(8, 3)).astype(np.float32),
        target=rng.normal(size=8).astype(np.float32),
        domain=np.repeat(np.arange(2), 4),
    )
    dm = SimpleNamespace(domain_names=["a", "b"], train_data=split, eval_data=split)
    model = _Linear()
    svc = GradientProbe(batch_size=4, target=None)
    trainer = SimpleNamespace(global_rank=0, world_size=world_size)
    svc.setup(trainer, model, dm, OverheadMeter())  # type: ignore[arg-type]
    return svc, model


def _built(probe: dict[str, Any], strategy: Any) -> GradientProbe:
    return GradientProbe.from_config(probe, strategy)


def test_every_probe_key_reaches_the_service(tmp_path: Any) -> None:
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "x"}\n')
    probe = {
        "batch_size": 5,
        "eval_size": 77,
        "params": ["*.h.1.*", "*.wte.*"],
        "target_path": str(target),
        "seed": 9,
    }
    svc = _built(probe, SimpleNamespace(needs=BOTH, target="file"))
    assert svc.batch_size == 5
    assert svc.eval_size == 77
    assert svc.params == ["*.h.1.*", "*.wte.*"]
    assert svc.target_path == str(target)
    assert svc.seed == 9
    assert svc.target == "file"


def test_defaults_equal_train_yaml() -> None:
    """An empty ``balance.probe`` builds the probe train.yaml's block would build."""
    cfg = compose("train", [])
    yaml = dict(cfg.balance.probe)
    strategy = SimpleNamespace(needs=BOTH, target="eval")
    svc = _built({}, strategy)
    assert (svc.batch_size, svc.eval_size, svc.seed) == (16, 256, 0)
    assert (svc.params, svc.target_path) == (None, None)
    ref = _built(yaml, strategy)
    for key in ("batch_size", "eval_size", "params", "target_path", "seed"):
        assert getattr(svc, key) == getattr(ref, key) == yaml[key], key


def test_strategy_without_target_attribute_probes_the_eval_set() -> None:
    svc = _built({}, SimpleNamespace(needs=BOTH))
    assert svc.target == "eval"


def test_target_train_means_no_target_batch() -> None:
    """DoGE's ``target: train`` (the training mix) needs no target batch, even from a
    strategy that names ``target_grad`` among its needs."""
    svc = _built({}, SimpleNamespace(needs=BOTH, target="train"))
    assert svc.target is None


@pytest.mark.parametrize("target", ["eval", "file", None])
def test_strategy_without_target_grad_gets_no_target(target: str | None) -> None:
    strategy = SimpleNamespace(needs=frozenset({"domain_grads"}))
    if target is not None:
        strategy.target = target
    svc = _built({}, strategy)
    assert svc.target is None


def test_collect_does_not_reduce_on_a_single_rank() -> None:
    svc, model = _toy(world_size=1)
    calls: list[torch.Tensor] = []

    def reduce_fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return t * 100.0

    local = svc.probe(model).clone()
    svc.probes = 0
    out = svc.collect(SimpleNamespace(), model, reduce_fn)  # type: ignore[arg-type]
    assert calls == []
    torch.testing.assert_close(out["domain_grads"], local, rtol=0, atol=0)
    assert float(local.abs().max()) > 0.0


def test_collect_without_reduce_fn_keeps_the_local_rows_on_many_ranks() -> None:
    """``reduce_fn=None`` (no process group) leaves this rank's rows, not divided."""
    svc, model = _toy(world_size=2)
    local = svc.probe(model).clone()
    svc.probes = 0
    out = svc.collect(SimpleNamespace(), model, None)  # type: ignore[arg-type]
    torch.testing.assert_close(out["domain_grads"], local, rtol=0, atol=0)


def test_collect_reduces_and_averages_on_many_ranks() -> None:
    svc, model = _toy(world_size=2)
    local = svc.probe(model).clone()
    svc.probes = 0
    out = svc.collect(SimpleNamespace(), model, lambda t: t * 3.0)  # type: ignore[arg-type]
    torch.testing.assert_close(out["domain_grads"], local * 1.5)


def test_load_state_dict_of_an_old_state_starts_at_zero() -> None:
    svc = GradientProbe(target=None)
    svc.probes = 5
    svc.load_state_dict({})
    assert svc.probes == 0
    svc.load_state_dict({"probes": 3})
    assert svc.probes == 3
