"""Starvation is judged over windows of at least ``1 / starve_share`` draws."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

from rnb.balance.ledger import DomainLedger


def test_small_rounds_are_merged_before_judging() -> None:
    # ODM / DoReMi update every step: 8 draws a round. Domain b is at ~10 % and, by chance,
    # missing from 3 steps in a row — not starved (a 1 % share needs >= 100 draws to see).
    led = DomainLedger(["a", "b"], [100, 100])
    for r in range(3):
        led.add_round(r, np.array([8.0, 0.0]), np.zeros(2))
    assert led.starved == {} and led.window.tolist() == [24.0, 0.0]
    for r in range(3, 13):  # b back at 1 in 8: window 1 (rounds 0..12, 104 draws) is fine
        led.add_round(r, np.array([7.0, 1.0]), np.zeros(2))
    assert led.starved == {} and led.window.sum() == 0 and led.streak.tolist() == [0, 0]


def test_large_rounds_each_count(caplog: pytest.LogCaptureFixture) -> None:
    led = DomainLedger(["a", "b"], [100, 100])
    with caplog.at_level(logging.WARNING, logger="rnb.balance.ledger"):
        for r in range(3):
            led.add_round(r, np.array([640.0, 0.0]), np.zeros(2))
    assert led.starved == {"b": 2}
    assert "domain 'b' got under 1.0% of the draws for 3 rounds in a row (round 2)" in caplog.text


def test_window_is_checkpointed() -> None:
    led = DomainLedger(["a", "b"], [100, 100])
    led.add_round(0, np.array([30.0, 2.0]), np.zeros(2))
    buf = io.BytesIO()
    torch.save(led.state_dict(), buf)
    buf.seek(0)
    other = DomainLedger(["a", "b"], [100, 100])
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.window.tolist() == [30.0, 2.0]
