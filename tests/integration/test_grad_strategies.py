"""DoGE and DGA through ``rnb.train``: a planted target, exact resume, DDP agreement.

The planted testbed: four domains whose texts use disjoint letters (``d0``: a–e, ``d1``: f–j,
``d2``: k–o, ``d3``: p–t), and a target set of ``d2``-style texts. A domain's gradient then
aligns with the target's only through shared generic directions, except ``d2``'s, so a
correct gradient-alignment strategy must raise ``d2`` above uniform.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.config import compose
from rnb.train import train
from tests.data_files import FILES
from tests.helpers import full_and_resumed
from tests.integration.test_ddp import _rnb_train

LETTERS = ("abcde", "fghij", "klmno", "pqrst")
TARGET = 2  # d2


def _texts(rng: np.random.Generator, d: int, n: int) -> list[str]:
    def word() -> str:
        return "".join(rng.choice(list(LETTERS[d]), size=int(rng.integers(2, 5))))

    return [" ".join(word() for _ in range(int(rng.integers(8, 14)))) for _ in range(n)]


def _planted(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {
        "train": [{"text": t, "source": f"d{d}"} for d in range(4) for t in _texts(rng, d, 100)],
        "target": [{"text": t} for t in _texts(rng, TARGET, 40)],
        "eval": [{"text": t, "source": f"d{TARGET}"} for t in _texts(rng, TARGET, 40)],
    }
    paths = {}
    for name, rows in files.items():
        paths[name] = tmp / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def _overrides(tmp: Path, strategy: str) -> list[str]:
    p = _planted(tmp)
    over = [*FILES, f"data.train_path={p['train']}", "initial_eval=false", "logger=none"]
    if strategy == "dga":  # target = the eval probe subset (all d2)
        return [*over, "strategy=dga", f"data.eval_path={p['eval']}"]
    return [  # DoGE, target = a user file of the specific set
        *over,
        "strategy=doge",
        "strategy.target=file",
        f"balance.probe.target_path={p['target']}",
    ]


@pytest.mark.parametrize("strategy", ["dga", "doge"])
def test_planted_target_domain_gains_weight(tmp_path: Path, strategy: str) -> None:
    summary = train(compose("train", [*_overrides(tmp_path, strategy), f"output_dir={tmp_path}"]))
    assert summary["domains"] == ["d0", "d1", "d2", "d3"]
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    assert traj.shape == (4, 4)  # p0 + 3 rounds of 4 steps
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)
    assert (traj >= 0).all()
    assert (traj[1:, TARGET] > 0.25 + 0.05).all()  # above uniform from the first round on
    assert (traj[1:, TARGET] == traj[1:].max(axis=1)).all()  # and the largest weight
    # cost: one probe batch of 16 examples (x max_length tokens) per domain + target per round
    tokens = 3 * 5 * 16 * 32
    assert summary["overhead"]["extra_flops"] == 6.0 * summary["num_parameters"] * tokens
    assert summary["strategy"]["name"] == {"dga": "DGA", "doge": "DoGE"}[strategy]
    assert summary["strategy"]["skipped_rounds"] == 0


def _resume_is_exact(tmp_path: Path, strategy: str) -> None:
    over = [
        *_overrides(tmp_path, strategy),
        "trainer.max_steps=16",
        "checkpoint.every_n_train_steps=3",
    ]
    full, resumed = full_and_resumed(
        over, tmp_path, crash_at=10
    )  # last checkpoint at step 9: one step into round 3
    a = np.array([t["weights"] for t in full["weights_trajectory"]])
    b = np.array([t["weights"] for t in resumed["weights_trajectory"]])
    assert a.shape == (5, 4)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-5)


def test_doge_resume_mid_round_is_exact(tmp_path: Path) -> None:
    _resume_is_exact(tmp_path, "doge")


@pytest.mark.slow
def test_dga_resume_mid_round_is_exact(tmp_path: Path) -> None:
    _resume_is_exact(tmp_path, "dga")


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["dga", "doge"])
def test_ddp_ranks_hold_the_same_weights(tmp_path: Path, strategy: str) -> None:
    over = [o for o in _overrides(tmp_path, strategy) if not o.startswith("data.batch_size")]
    ddp = _rnb_train(tmp_path / "ddp", [*over, "trainer=ddp_cpu", "data.batch_size=2"])
    assert ddp["rank_weight_spread"] == 0.0
    assert ddp["rank_checks"] == ddp["rounds"] == 3
    traj = np.array([t["weights"] for t in ddp["weights_trajectory"]])
    assert (traj[1:, TARGET] > 0.25).all()
