"""Detours through Lightning: sandboxes leave no trace, overhead is metered, in-line detours
resume exactly, Skill-It estimates a planted skills graph."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rnb.balance.sandbox import Sandbox
from rnb.config import compose
from rnb.train import train
from tests.conftest import TINY
from tests.helpers import Crash, CrashAt, full_and_resumed

SANDBOXED = "strategy._target_=tests.detour_strategies.SandboxedNoop"
INLINE = "strategy._target_=tests.detour_strategies.InlineProbe"


def _traj(summary: dict) -> np.ndarray:
    return np.array([t["weights"] for t in summary["weights_trajectory"]])


def test_sandboxed_detours_leave_no_trace_and_are_metered(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "trainer.max_steps=8", "initial_eval=false", "logger=none"]
    plain = train(compose("train", [*over, f"output_dir={tmp_path / 'plain'}"]))
    box = train(compose("train", [*over, SANDBOXED, f"output_dir={tmp_path / 'box'}"]))
    # model, optimizer, LR schedule and RNG restored: the same run, bit for bit
    assert box["eval_loss"] == plain["eval_loss"]
    assert box["eval_loss_per_domain"] == plain["eval_loss_per_domain"]
    assert box["examples_per_domain"] == plain["examples_per_domain"]
    np.testing.assert_array_equal(_traj(box), _traj(plain))
    # 3 boundaries (start + 2 rounds) x 3 detours x 3 steps; 1 start + 3 after-evals each
    assert box["detours"] == {"evaluations": 12, "sandboxed_steps": 27, "inline_steps": 0}
    n, batch, length, probe = box["num_parameters"], 8, 48, 160  # probe: the whole eval split
    flops = 6 * n * 27 * batch * length + 2 * n * 12 * probe * length
    assert box["overhead"]["extra_flops"] == pytest.approx(flops, rel=1e-12)
    assert plain["overhead"]["extra_flops"] == 0
    assert box["overhead"]["mixing_s"] > 0
    # in-line detours on the run's own mixture: the same batches, evaluations in between
    inline = [SANDBOXED, "+strategy.kind=inline", "+strategy.steps=1"]
    same = train(compose("train", [*over, *inline, f"output_dir={tmp_path / 'inline'}"]))
    assert same["eval_loss"] == plain["eval_loss"]
    assert same["examples_per_domain"] == plain["examples_per_domain"]
    assert same["detours"] == {"evaluations": 8, "sandboxed_steps": 0, "inline_steps": 6}


@pytest.mark.slow
def test_inline_detours_resume_inside_a_detour_exactly(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides,
        INLINE,
        "balance.steps_per_round=6",
        "checkpoint.every_n_train_steps=4",
        "initial_eval=false",
        "logger=none",
    ]
    full = train(compose("train", [*over, f"output_dir={tmp_path / 'full'}"]))
    # start: 2 + 2 in-line steps; round 1 (step 6): 2 + 2 more; the boundary at 12 ends the run
    assert full["detours"]["inline_steps"] == 8
    assert full["detours"]["sandboxed_steps"] == 0
    steps = [t["step"] for t in full["weights_trajectory"]]
    # the mixture changes after each plan's last detour; the loader has one batch in flight
    # when a plan is made, so its detours run on batches 1-4 and 7-10 (new p at steps 5, 11)
    assert steps == [0, 5, 6, 11, 12], steps
    traj = _traj(full)
    assert np.abs(traj[1] - traj[0]).max() > 1e-3  # the drops moved the mixture
    part = [*over, f"output_dir={tmp_path / 'part'}"]
    with pytest.raises(Crash):  # last checkpoint at step 8: inside round 1's first detour
        train(compose("train", part), callbacks=[CrashAt(9)])
    resumed = train(compose("train", [*part, "resume=auto"]))
    assert [r["step"] for r in resumed["resumes"]] == [8]  # resumed inside the detour
    np.testing.assert_array_equal(_traj(resumed), traj)
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-6)
    assert resumed["examples_per_domain"] == full["examples_per_domain"]
    assert resumed["detours"] == full["detours"]


@pytest.mark.slow
def test_kill_inside_a_sandboxed_detour_resumes_exactly(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    over = [
        *tiny_overrides,
        INLINE,
        "+strategy.kind=sandboxed",
        "balance.steps_per_round=6",
        "checkpoint.every_n_train_steps=4",
        "initial_eval=false",
        "logger=none",
    ]
    full = train(compose("train", [*over, f"output_dir={tmp_path / 'full'}"]))
    assert full["detours"]["sandboxed_steps"] == 3 * 4  # boundaries 0, 6, 12
    part = [*over, f"output_dir={tmp_path / 'part'}"]
    real_step, calls = Sandbox.step, []

    def killed(self: Sandbox, split: object, rows: np.ndarray) -> int:
        calls.append(1)
        if len(calls) == 6:  # the 2nd sandboxed step of the step-6 boundary
            raise Crash("killed inside a sandboxed detour")
        return real_step(self, split, rows)

    monkeypatch.setattr(Sandbox, "step", killed)
    with pytest.raises(Crash):
        train(compose("train", part))
    monkeypatch.setattr(Sandbox, "step", real_step)
    resumed = train(compose("train", [*part, "resume=auto"]))
    assert [r["step"] for r in resumed["resumes"]] == [4]
    np.testing.assert_array_equal(_traj(resumed), _traj(full))
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-6)
    assert resumed["detours"] == full["detours"]


def test_inline_detours_longer_than_a_round_are_refused(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, INLINE, "+strategy.steps=3", "initial_eval=false", "logger=none"]
    with pytest.raises(ValueError, match="balance.steps_per_round"):
        train(compose("train", [*over, f"output_dir={tmp_path}"]))


@pytest.mark.slow
def test_skillit_resume_after_graph_estimation_is_exact(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides,
        "strategy=skillit",
        "strategy.graph_steps=2",
        "trainer.max_steps=12",
        "checkpoint.every_n_train_steps=3",
        "initial_eval=false",
        "logger=none",
    ]
    full, resumed = full_and_resumed(over, tmp_path, crash_at=7)  # checkpoint at step 6
    assert [r["step"] for r in resumed["resumes"]] == [6]
    np.testing.assert_array_equal(_traj(resumed), _traj(full))
    assert resumed["strategy"]["skills_graph"] == full["strategy"]["skills_graph"]
    assert resumed["detours"] == full["detours"]  # the graph runs were not repeated
    assert full["detours"]["sandboxed_steps"] == 6 * 2
    assert (tmp_path / "full" / "skills_graph.png").exists()
    A = np.load(tmp_path / "full" / "skills_graph.npy")
    np.testing.assert_allclose(A, full["strategy"]["skills_graph"])


def test_aioli_learnparams_are_training_steps_and_only_evaluations_cost(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides,
        "strategy=aioli",
        "strategy.lp_rounds=1",
        "strategy.lp_steps=1",
        "strategy.one_hot_factor=0.75",
        "balance.steps_per_round=8",
        "trainer.max_steps=16",
        "initial_eval=false",
        "logger=none",
        f"output_dir={tmp_path}",
    ]
    summary = train(compose("train", over))
    m = len(summary["domains"])
    # two complete LearnParams (start, step 8) of m one-step sweeps; the plan made at step 16
    # is queued but the run ends first. One evaluation before and one after each sweep step.
    assert summary["detours"] == {
        "evaluations": 2 * (m + 1),
        "sandboxed_steps": 0,
        "inline_steps": 2 * m,
    }
    assert [t["step"] for t in summary["weights_trajectory"]] == [0, m + 1, 8, 8 + m + 1, 16]
    traj = _traj(summary)
    assert np.abs(traj[1] - traj[0]).max() > 1e-3
    np.testing.assert_array_equal(traj[1], traj[2])  # update() keeps the LearnParams mixture
    # in-line steps are training steps: the only extra FLOPs are the probe evaluations
    n, length, probe = summary["num_parameters"], 48, 160
    assert summary["overhead"]["extra_flops"] == pytest.approx(
        2 * n * summary["detours"]["evaluations"] * probe * length, rel=1e-12
    )
    assert summary["strategy"]["last_A"] is not None
    assert sum(summary["examples_per_domain"].values()) == 16 * 8


# --------------------------------------------------------------------- planted skills graph
OBJ1 = ["apple", "lemon", "grape", "melon", "cherry", "banana", "plum", "peach"]
OBJ2 = ["car", "boat", "truck", "bike", "train", "plane", "tram", "bus"]
COLOURS = ["red", "yellow", "green", "blue", "black", "white", "pink", "brown"]


def _planted_rows(n: int, seed: int) -> list[dict]:
    """Domains a and b share the response template; c (sums) and d (upper case) share nothing."""
    r = random.Random(seed)

    def colour(prompt: str, objects: list[str]) -> tuple[str, str]:
        o = r.choice(objects)
        return prompt.format(o), f"the colour of {o} is {r.choice(COLOURS)}"

    def total() -> tuple[str, str]:
        x, y = r.randrange(100), r.randrange(100)
        return f"sum {x} {y}", f"= {x + y} ;"

    def upper() -> tuple[str, str]:
        w = "".join(r.choice("qwxzjkv") for _ in range(5))
        return f"upper {w}", w.upper()

    make = {
        "a": lambda: colour("colour of {}?", OBJ1),
        "b": lambda: colour("name the colour: {}", OBJ2),
        "c": total,
        "d": upper,
    }
    rows = []
    for i in range(n):
        source = "abcd"[i % 4]
        prompt, response = make[source]()
        rows.append({"prompt": prompt, "response": response, "source": source})
    return rows


@pytest.mark.slow
def test_skillit_estimates_a_planted_skills_graph(tmp_path: Path) -> None:
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _planted_rows(1200, 0)))
    over = [
        *(o for o in TINY if not o.startswith("data.")),
        "data=files",
        f"data.train_path={path}",
        "data.text_fields=[prompt,response]",
        "data.target_field=response",
        "data.domain_field=source",
        "data.eval_fraction=0.2",
        "data.eval_batch_size=64",
        "data.max_length=32",
        "data.tokenizer.vocab_size=400",
        "data.tokenizer.min_frequency=1",
        "strategy=skillit",
        "strategy.graph_steps=10",
        "trainer.max_steps=1",
        "initial_eval=false",
        "logger=none",
        f"output_dir={tmp_path / 'run'}",
    ]
    summary = train(compose("train", over))
    assert summary["domains"] == ["a", "b", "c", "d"]
    A = np.asarray(summary["strategy"]["skills_graph"])
    off = ~np.eye(4, dtype=bool)
    shared = np.zeros((4, 4), dtype=bool)
    shared[0, 1] = shared[1, 0] = True
    others = A[off & ~shared]
    # measured (seed 0, 10 steps): A_ab 0.148, A_ba 0.122, other off-diagonals in [-0.043, 0.019]
    assert min(A[0, 1], A[1, 0]) > 0.08, A
    assert min(A[0, 1], A[1, 0]) > 2 * np.abs(others).max(), A
    assert (np.diag(A) > 0.15).all() and (np.diag(A)[:, None] > A * off).all(), A
