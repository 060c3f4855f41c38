"""`DetourRunner`'s settings: ``balance.probe.eval_size``/``seed`` (defaults as in
``conf/train.yaml``), the probe subset and per-domain pools `setup` binds, and the gradient
accumulation it reads from the trainer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from rnb.balance.detours import DetourRunner
from rnb.balance.services.probe_set import stratified_probe

CONF = Path(__file__).resolve().parents[2] / "conf" / "train.yaml"


def test_probe_keys_and_their_defaults() -> None:
    r = DetourRunner({"eval_size": 5, "seed": 9}, seed=1)
    assert (r.eval_size, r.probe_seed, r.seed) == (5, 9, 1)
    default = DetourRunner({}, seed=3)  # no balance.probe keys: the documented defaults
    assert (default.eval_size, default.probe_seed) == (256, 3)  # the probe follows the run seed
    assert default.eval_size == OmegaConf.load(CONF).balance.probe.eval_size


def _datamodule(eval_labels: np.ndarray, train_labels: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(
        domain_names=["a", "b", "c"],
        eval_data="eval",
        train_data="train",
        eval_batch_size=4,
        batch_size=2,
        labels=SimpleNamespace(eval=eval_labels, train=train_labels),
    )


@pytest.mark.parametrize(("accumulate", "expected"), [(3, 3), (1, 1), (None, 1), (0, 1)])
def test_setup_binds_the_probe_the_pools_and_accumulation(
    accumulate: int | None, expected: int
) -> None:
    rng = np.random.default_rng(0)
    eval_labels = rng.integers(0, 3, 60)
    train_labels = np.array([2, 0, 0, 1, 2, 2, 0])
    r = DetourRunner({"eval_size": 7, "seed": 11}, seed=4)
    trainer = SimpleNamespace(accumulate_grad_batches=accumulate)
    r.setup(trainer, _datamodule(eval_labels, train_labels), meter="meter")  # type: ignore[arg-type]
    # the same seeded, stratified subset as the eval_loss service's (eval_size 7, seed 11, m 3)
    np.testing.assert_array_equal(r.probe, stratified_probe(eval_labels, 7, 3, 11))
    assert not np.array_equal(r.probe, stratified_probe(eval_labels, 7, 3, 4))  # not the run seed
    assert [d.tolist() for d in r.domains] == [[1, 2, 6], [3], [0, 4, 5]]
    assert (r.m, r.eval_split, r.train_split, r.eval_batch_size, r.batch_size) == (
        3,
        "eval",
        "train",
        4,
        2,
    )
    assert r.accumulate == expected


def test_a_trainer_without_accumulation_counts_one_batch_per_step() -> None:
    r = DetourRunner({}, seed=0)
    r.setup(SimpleNamespace(), _datamodule(np.zeros(4, int), np.zeros(3, int)), meter="meter")  # type: ignore[arg-type]
    assert r.accumulate == 1
