"""``ProbeEvaluator``: per-domain probe losses equal a brute-force loop over the probe set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rnb.accounting import OverheadMeter
from rnb.balance.services.evaluator import ProbeEvaluator
from rnb.balance.services.probe_set import stratified_probe
from rnb.models.lm import per_example_loss
from tests.service_stubs import batch, datamodule, tiny_model, trainer

# 14 eval examples: domain 0 has 8, domain 1 has 6, domain 2 none.
EVAL_DOMAINS = [0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1]


def _evaluator(model, dm, size: int = 9, rank: int = 0, world: int = 1, meter=None):
    ev = ProbeEvaluator.from_config({"eval_size": size, "seed": 3, "batch_size": 99}, None)
    ev.setup(trainer(rank, world), model, dm, meter or OverheadMeter())
    return ev


def brute_force(model, dm, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain mean of per-example token-mean losses, one example at a time."""
    sums, counts = np.zeros(3), np.zeros(3)
    model.eval()
    with torch.no_grad():
        for i in indices:
            b = batch(dm.eval_data, [i])
            logits = model(b["input_ids"], b["attention_mask"])
            loss_sum, tokens = per_example_loss(logits, b["labels"])
            d = int(b["domain"][0])
            sums[d] += float(loss_sum[0]) / max(1, int(tokens[0]))
            counts[d] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts, counts


def test_equals_brute_force_on_the_probe_subset() -> None:
    model, dm = tiny_model(), datamodule(EVAL_DOMAINS)
    meter = OverheadMeter()
    ev = _evaluator(model, dm, meter=meter)
    probe = stratified_probe(np.asarray(EVAL_DOMAINS), 9, 3, 3)
    np.testing.assert_array_equal(ev.indices, probe)
    assert len(probe) == 9 and len(probe) < len(EVAL_DOMAINS)  # a real subset
    out = ev.collect(trainer(), model, None)
    want, counts = brute_force(model, dm, probe)
    assert out["eval_loss"].dtype == torch.float64
    np.testing.assert_allclose(out["eval_loss"][:2].numpy(), want[:2], rtol=1e-5)
    np.testing.assert_array_equal(out["eval_counts"].numpy(), counts)
    assert torch.isnan(out["eval_loss"][2]) and out["eval_counts"][2] == 0  # no probe example
    # 2·N per input position (3 batches of 3 rows × 12 positions)
    assert meter.extra_flops == pytest.approx(2.0 * model.num_parameters() * 9 * 12)


def test_train_mode_restored_and_no_grad() -> None:
    model, dm = tiny_model(), datamodule(EVAL_DOMAINS)
    model.train()
    ev = _evaluator(model, dm)
    seen: list[bool] = []
    handle = model.model.register_forward_hook(
        lambda mod, inp, out: seen.append(mod.training or torch.is_grad_enabled())
    )
    ev.collect(trainer(), model, None)
    handle.remove()
    assert seen and not any(seen)  # eval mode, no_grad during the probe
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    ev.collect(trainer(), model, None)
    assert not model.training  # a module in eval mode stays in eval mode


def test_not_weighted_by_the_mixture() -> None:
    """Loss multipliers set for training leave the probe's per-domain losses unchanged."""
    model, dm = tiny_model(), datamodule(EVAL_DOMAINS)
    ev = _evaluator(model, dm)
    plain = ev.collect(trainer(), model, None)["eval_loss"]
    model.set_domain_loss_weights(np.array([10.0, 0.0, 1.0]))
    weighted = ev.collect(trainer(), model, None)["eval_loss"]
    torch.testing.assert_close(plain, weighted, equal_nan=True)


def test_ranks_share_the_probe_and_sum_to_the_whole() -> None:
    """Two ranks evaluate disjoint strided halves; their summed sums/counts = one process."""
    from rnb.balance.services.probe_eval import probe_losses

    model, dm = tiny_model(), datamodule(EVAL_DOMAINS)
    one = _evaluator(model, dm)
    kw = {"batch_size": 7, "num_domains": one.m}
    parts = [
        probe_losses(model, dm.eval_data, one.indices, rank=r, world_size=2, **kw) for r in (0, 1)
    ]
    sums, counts = parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]
    assert 0 < parts[0][1].sum() < counts.sum()  # each rank did a share, not all of it

    class Reduce:  # reduce_fn of rank 0: adds rank 1's share (what a gloo sum does)
        def __call__(self, t: torch.Tensor) -> torch.Tensor:
            other = torch.cat([parts[1][0], parts[1][1]]).to(t)
            return t + torch.cat([other, t[-1:] * 0])

    mine = probe_losses(
        model, dm.eval_data, one.indices, rank=0, world_size=2, reduce_fn=Reduce(), **kw
    )
    torch.testing.assert_close(mine[0], sums)
    torch.testing.assert_close(mine[1], counts)
    ref = one.collect(trainer(), model, None)
    torch.testing.assert_close(
        torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan),
        ref["eval_loss"],
        equal_nan=True,
    )


def test_whole_split_when_eval_size_is_zero() -> None:
    model, dm = tiny_model(), datamodule(EVAL_DOMAINS)
    ev = _evaluator(model, dm, size=0)
    assert ev.indices.tolist() == list(range(len(EVAL_DOMAINS)))
    out = ev.collect(trainer(), model, None)
    want, _ = brute_force(model, dm, ev.indices)
    np.testing.assert_allclose(out["eval_loss"][:2].numpy(), want[:2], rtol=1e-5)


def test_probe_keys_and_defaults() -> None:
    """``balance.probe.eval_size``/``seed`` reach the evaluator; missing keys take the
    constructor's defaults, the same as ``conf/train.yaml``'s eval_size."""
    given = ProbeEvaluator.from_config({"eval_size": 7, "seed": 3}, None)
    assert (given.eval_size, given.seed) == (7, 3)
    default, bare = ProbeEvaluator.from_config({}, None), ProbeEvaluator()
    assert (default.eval_size, default.seed) == (bare.eval_size, bare.seed) == (256, 0)
    conf = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "train.yaml")
    assert default.eval_size == conf.balance.probe.eval_size
