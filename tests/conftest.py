"""Shared fixtures: isolated caches and a tiny composed config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Overrides that shrink the default run to a few seconds (tiny data, model and steps).
TINY = [
    "data.synthetic.n_train=800",
    "data.synthetic.n_eval=160",
    "data.batch_size=8",
    "data.eval_batch_size=80",
    "data.max_length=48",
    "data.tokenizer.vocab_size=1000",
    "model.arch.hidden_size=32",
    "model.arch.num_layers=1",
    "model.arch.num_heads=2",
    "model.arch.intermediate_size=64",
    "model.warmup_steps=2",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2",
    "balance.steps_per_round=4",
    "checkpoint.every_n_train_steps=4",
]

#: Overrides that shrink ``experiment=digits`` to a few seconds (40 steps, rounds of 10).
DIGITS_TINY = [
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=5",
    "balance.steps_per_round=10",
    "checkpoint.every_n_train_steps=10",
    "threads=1",
]


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    cache = tmp_path_factory.getbasetemp() / "rnb_cache"
    monkeypatch.setenv("RNB_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
