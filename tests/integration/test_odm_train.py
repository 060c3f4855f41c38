"""ODM and UniMax through ``rnb.train.train`` on a planted testbed.

Four predefined domains: three fixed sentences, learned within a few steps, and ``noise``
(random letters, unlearnable), whose training loss stays the highest. ODM rewards a domain
by its training loss, so it must raise ``noise`` above uniform.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnb.config import compose
from rnb.train import train
from tests.data_files import FILES
from tests.helpers import full_and_resumed

EASY = {
    "cat": "the cat sat on the mat",
    "count": "one two three four five",
    "colour": "red green blue red green",
}


def planted_file(tmp: Path, n: int = 120, small: int | None = None) -> Path:
    """``n`` rows per easy domain and of ``noise`` (``small`` rows of it if given)."""
    rng = random.Random(0)
    rows = [{"text": t, "source": d} for _ in range(n) for d, t in EASY.items()]
    letters = "abcdefghijklmnopqrstuvwxyz "
    rows += [
        {"text": "".join(rng.choice(letters) for _ in range(40)), "source": "noise"}
        for _ in range(n if small is None else small)
    ]
    rng.shuffle(rows)
    path = tmp / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _odm(tmp: Path, *extra: str) -> list[str]:
    return [
        *FILES,
        f"data.train_path={planted_file(tmp)}",
        "strategy=odm",
        "strategy.warmup_steps=0",
        "balance.steps_per_round=null",  # the strategy's default: every step
        "model.lr=2e-2",  # the easy domains are learned within the run
        "initial_eval=false",
        *extra,
    ]


@pytest.mark.parametrize("reward", ["importance", pytest.param("smoothed", marks=pytest.mark.slow)])
def test_odm_raises_the_domain_with_the_highest_training_loss(tmp_path: Path, reward: str) -> None:
    over = _odm(tmp_path, f"strategy.reward={reward}", "trainer.max_steps=40")
    summary = train(compose("train", [*over, f"output_dir={tmp_path / 'run'}"]))
    names = summary["domains"]
    assert summary["steps_per_round"] == 1 and summary["rounds"] == 40
    # the planted premise: noise has the highest training loss (logged per round)
    logged = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    mean_loss = {d: logged[f"balance/train_loss/{d}"].iloc[10:].mean() for d in names}
    assert max(mean_loss, key=mean_loss.get) == "noise"
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)
    assert (traj >= 0).all()
    noise = names.index("noise")
    avg, final = np.array(summary["average_weights"]), traj[-1]
    # measured: importance 0.35 / 0.48, smoothed 0.52 / 0.63 (average / final)
    assert avg.argmax() == noise and avg[noise] > 0.3
    assert final.argmax() == noise and final[noise] > 0.4
    assert summary["strategy"]["name"] == "ODM" and summary["strategy"]["updates"] == 40
    assert summary["starved_domains"] == []  # per-step rounds are judged over >= 100 draws


@pytest.mark.slow
def test_odm_resume_mid_round_is_exact(tmp_path: Path) -> None:
    over = _odm(
        tmp_path,
        "strategy.reward=importance",
        "balance.steps_per_round=3",
        "trainer.max_steps=15",
        "checkpoint.every_n_train_steps=5",
        "logger=none",
    )
    full, resumed = full_and_resumed(
        over, tmp_path, crash_at=11
    )  # last checkpoint at step 10: one step into round 4 (9..12)
    a = np.array([t["weights"] for t in full["weights_trajectory"]])
    b = np.array([t["weights"] for t in resumed["weights_trajectory"]])
    assert a.shape == (6, 4) and np.abs(a[-1] - 0.25).max() > 1e-3  # it moved
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-5)


def test_unimax_caps_the_small_domain(tmp_path: Path) -> None:
    over = [
        *FILES,
        f"data.train_path={planted_file(tmp_path, n=60, small=8)}",
        "strategy=unimax",
        "strategy.unit=examples",
        "trainer.max_steps=20",  # 80 examples: noise (~6 train rows) is capped at 1 epoch
        "initial_eval=false",
        "logger=none",
        f"output_dir={tmp_path / 'run'}",
    ]
    summary = train(compose("train", over))
    names, strat = summary["domains"], summary["strategy"]
    assert strat["name"] == "UniMax" and strat["capped"] == ["noise"]
    alloc = np.array(strat["allocation"])
    noise = names.index("noise")
    others = [i for i in range(len(names)) if i != noise]
    assert sum(alloc) == pytest.approx(80)
    np.testing.assert_allclose(alloc[others], (80 - alloc[noise]) / 3)  # the excess, evenly
    expected = alloc / alloc.sum()
    for t in summary["weights_trajectory"]:  # static: the same mixture from the first step
        np.testing.assert_allclose(t["weights"], expected, rtol=1e-12)
    assert summary["overhead"]["flops_pct"] == 0  # zero-cost strategy
