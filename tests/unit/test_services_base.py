"""Signal-service registry and probe helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.balance.services.base import build_services, evaluating
from rnb.balance.services.probe_set import stratified_probe
from rnb.balance.strategies.stratified import Stratified


def test_unknown_need_names_strategy_and_known_signals() -> None:
    with pytest.raises(ValueError, match=r"Stratified.needs names \['telepathy'\].*eval_loss"):
        build_services(frozenset({"telepathy"}), {}, Stratified())


def test_built_in_needs_build_no_service() -> None:
    assert build_services(frozenset({"gram", "loss_weights"}), {}, Stratified()) == []


def test_evaluating_restores_train_mode_and_blocks_grad() -> None:
    mod = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    mod.train()
    with evaluating(mod):
        assert not mod.training and not torch.is_grad_enabled()
    assert mod.training and torch.is_grad_enabled()
    mod.eval()
    with evaluating(mod):
        pass
    assert not mod.training


def test_stratified_probe_keeps_small_domains_and_is_seeded() -> None:
    labels = np.r_[np.zeros(990, dtype=int), np.ones(7, dtype=int), np.full(3, 2)]
    idx = stratified_probe(labels, 100, 4, seed=1)
    counts = np.bincount(labels[idx], minlength=4)
    assert counts[0] == 99 and counts[1] == 1 and counts[2] == 1 and counts[3] == 0
    np.testing.assert_array_equal(idx, stratified_probe(labels, 100, 4, seed=1))
    assert not np.array_equal(idx, stratified_probe(labels, 100, 4, seed=2))
    np.testing.assert_array_equal(stratified_probe(labels, 0, 4, 0), np.arange(1000))
    np.testing.assert_array_equal(stratified_probe(labels, 5000, 4, 0), np.arange(1000))
