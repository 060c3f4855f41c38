"""What every run reports per domain: draws, tokens, epochs, ᾱ; the loss-weights hook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import pandas as pd
import pytest

from rnb.balance.strategies.base import MixingStrategy, RoundStats
from rnb.config import compose
from rnb.models.lm import CausalLMModule
from rnb.train import train


class FixedLossWeights(MixingStrategy):
    """Test strategy: samples uniformly and re-weights the loss with a fixed α."""

    needs: ClassVar[frozenset[str]] = frozenset({"loss_weights"})

    def initial_weights(self) -> np.ndarray:
        m = self.ctx.num_domains
        w = np.arange(1, m + 1, dtype=np.float64)
        return w / w.sum()

    def apply(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return np.full(weights.size, 1.0 / weights.size), weights

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return weights


class _Grab(L.Callback):
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module, self.sampler_p = pl_module, trainer.datamodule.sampler.weights.copy()


def test_summary_reports_draws_tokens_epochs(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, "strategy=natural", "trainer.max_steps=10", "initial_eval=false"]
    over.append(f"output_dir={tmp_path}")
    summary = train(compose("train", over))
    names, sizes = summary["domains"], np.asarray(summary["domain_sizes"])
    examples = np.array([summary["examples_per_domain"][n] for n in names])
    tokens = np.array([summary["tokens_per_domain"][n] for n in names])
    assert examples.sum() == 10 * 8  # steps x batch size, the unfinished round included
    assert (tokens >= examples).all() and tokens.sum() > examples.sum()
    np.testing.assert_allclose(
        [summary["epochs_per_domain"][n] for n in names], examples / sizes, rtol=1e-12
    )
    assert summary["steps_per_round"] == 4 and summary["starved_domains"] == []
    np.testing.assert_allclose(summary["average_weights"], sizes / sizes.sum())
    # rounds log the tokens actually drawn; they add up to the summary's (minus the tail)
    logged = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    cols = [f"balance/tokens/{n}" for n in names]
    rows = logged.dropna(subset=cols[:1])
    assert rows["step"].tolist() == [4, 8]
    assert (rows[cols].to_numpy().sum(axis=0) <= tokens).all()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["tokens_per_domain"] == summary["tokens_per_domain"]


def test_loss_weights_reach_the_model_and_the_sampler_keeps_its_own(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    target = f"{__name__}.FixedLossWeights"
    over = [
        *tiny_overrides,
        f"strategy._target_={target}",
        "initial_eval=false",
        f"output_dir={tmp_path}",
    ]
    grab = _Grab()
    summary = train(compose("train", over), callbacks=[grab])
    m = len(summary["domains"])
    alpha = np.arange(1, m + 1) / np.arange(1, m + 1).sum()
    np.testing.assert_allclose(grab.module.domain_loss_weights.numpy(), alpha)
    np.testing.assert_allclose(grab.sampler_p, np.full(m, 1.0 / m))
    np.testing.assert_allclose(summary["final_weights"], alpha)


class NoHookLM(CausalLMModule):
    """A model that does not implement the loss re-weighting hook."""

    set_domain_loss_weights = None


def test_loss_weights_need_a_model_with_the_hook(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [
        *tiny_overrides,
        f"strategy._target_={__name__}.FixedLossWeights",
        f"model._target_={__name__}.NoHookLM",
        "initial_eval=false",
        f"output_dir={tmp_path}",
    ]
    with pytest.raises(ValueError, match="set_domain_loss_weights.*DomainLossWeighting"):
        train(compose("train", over))
