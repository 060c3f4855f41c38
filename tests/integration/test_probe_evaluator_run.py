"""``ProbeEvaluator`` inside a real run: with the whole eval split as the probe, each round's
``eval_loss`` equals the run's own validation losses per domain at that step; the round's
index, draws and target tokens reach the strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, RoundStats
from rnb.config import compose
from rnb.train import train
from tests.conftest import TINY


class EvalLossRecorder(MixingStrategy):
    """Keeps the mixture; records what the probe evaluator hands over each round."""

    needs: ClassVar[frozenset[str]] = frozenset({"eval_loss"})
    seen: ClassVar[list[dict[str, Any]]] = []
    stats: ClassVar[list[RoundStats]] = []
    planned: ClassVar[list[RoundStats | None]] = []

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        extra = stats.extra
        EvalLossRecorder.seen.append(
            {
                "step": stats.step,
                "round": stats.round,
                "loss": extra["eval_loss"].numpy(),
                "n": extra["eval_counts"],
                "tokens": stats.tokens.numpy().copy(),
                "counts": stats.counts.numpy().copy(),
            }
        )
        EvalLossRecorder.stats.append(stats)
        return weights

    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list:
        EvalLossRecorder.planned.append(stats)  # the boundary's statistics (None before step 0)
        return []


def test_probe_losses_equal_validation_losses(tmp_path: Path) -> None:
    for kept in (EvalLossRecorder.seen, EvalLossRecorder.stats, EvalLossRecorder.planned):
        kept.clear()
    over = [
        *TINY,
        "initial_eval=false",
        "logger=none",
        f"strategy._target_={__name__}.EvalLossRecorder",
        "balance.steps_per_round=6",  # rounds end where validation runs (steps 6 and 12)
        "balance.probe.eval_size=0",  # the whole eval split
        f"output_dir={tmp_path}",
    ]
    s = train(compose("train", over))
    assert [r["step"] for r in EvalLossRecorder.seen] == [6, 12]
    assert [r["round"] for r in EvalLossRecorder.seen] == [0, 1]
    # each boundary plans its detours from the round that just ended (none before step 0)
    assert EvalLossRecorder.planned[0] is None
    assert len(EvalLossRecorder.planned) == 3
    rounds = zip(EvalLossRecorder.planned[1:], EvalLossRecorder.stats, strict=True)
    assert all(planned is updated for planned, updated in rounds)
    # the rounds' draws and target tokens (the run ends on a round boundary: no tail)
    names = s["domains"]
    np.testing.assert_array_equal(
        sum(r["tokens"] for r in EvalLossRecorder.seen),
        [s["tokens_per_domain"][n] for n in names],
    )
    np.testing.assert_array_equal(
        sum(r["counts"] for r in EvalLossRecorder.seen),
        [s["examples_per_domain"][n] for n in names],
    )
    assert all(r["counts"].sum() == 6 * 8 for r in EvalLossRecorder.seen)  # K x batch size
    last = EvalLossRecorder.seen[-1]
    assert int(last["n"].sum()) == 160  # data.synthetic.n_eval: every eval example, once
    val = s["eval_loss_per_domain"]  # validation at step 12 (same weights, same examples)
    np.testing.assert_allclose(last["loss"], [val[d] for d in s["domains"]], rtol=1e-5)
    first = EvalLossRecorder.seen[0]["loss"]
    assert np.abs(first - last["loss"]).min() > 1e-4  # measured on the current model
    assert s["overhead"]["flops_pct"] > 0  # the probe's forward passes are metered
