"""A real Skill-It run, pinned end to end: eval losses from the probe, weights from Alg. 1.

A recording subclass of :class:`~rnb.balance.strategies.skillit.SkillIt` (given through
``strategy._target_``) keeps what each round hands the strategy (``RoundStats.extra
["eval_loss"]``, the previous weights) and what it returns; a test callback keeps a copy of
the model at the start and at every round end. Then, independently of the service:

- every round's ``eval_loss`` is the per-domain mean, over the whole eval split (the probe:
  ``balance.probe.eval_size`` exceeds it), of each example's token-mean next-token loss,
  computed example by example from the model copy with a hand-written log-softmax;
- every mixture is ``p ∝ exp(η · A · Σ_{last w} L)`` (baselines.md), written out in NumPy
  from the loaded skills graph and the recorded losses, ``L_0`` included;
- the run's ``weights_trajectory`` is those mixtures, each round starting from the last.

This pins the callback's wiring of the ``eval_loss`` service (the trainer, the model and the
reduction it is handed; the domain order of its result) and Skill-It's window and graph
orientation in one fast run. The graph is a planted asymmetric ``.npy`` (no estimation
runs), so ``A`` and ``Aᵀ`` give different mixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.balance.detour_plan import DetourResult
from rnb.balance.strategies.base import RoundStats
from rnb.balance.strategies.skillit import SkillIt
from rnb.config import compose
from rnb.train import train

#: what the strategy was handed and returned, in call order
CALLS: list[dict[str, Any]] = []

K = 4  # balance.steps_per_round
ETA, WINDOW = 0.5, 2


class RecordingSkillIt(SkillIt):
    """Skill-It that records its inputs and outputs (behaviour unchanged)."""

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> np.ndarray:
        out = super().detours_done(results, weights)
        CALLS.append({"step": 0, "loss": np.array(results[0].before), "out": out.copy()})
        return out

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        out = super().update(stats, weights)
        loss = stats.extra["eval_loss"]
        assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64, loss
        CALLS.append(
            {
                "step": stats.step,
                "round": stats.round,
                "loss": loss.numpy().copy(),
                "counts": stats.extra["eval_counts"].numpy().copy(),
                "previous": weights.copy(),
                "out": out.copy(),
            }
        )
        return out


class ModelCopies(L.Callback):
    """The model's parameters at the start and at every round end (step % K == 0)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def _keep(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module
        self.split = trainer.datamodule.eval_data
        state = pl_module.state_dict()
        self.states[trainer.global_step] = {k: v.detach().clone() for k, v in state.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if trainer.global_step % K == 0:
            self._keep(trainer, pl_module)


def brute_force_eval_loss(
    model: L.LightningModule, split: Any, m: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Per-domain mean over ``split`` (or its ``rows``) of each example's token-mean loss,
    one example at a time.

    Each example is cut to its real length (no padding) and its loss written out:
    ``−log softmax(logits[t])[label[t+1]]`` averaged over the positions whose next label counts.
    """
    sums, counts = np.zeros(m), np.zeros(m)
    model.eval()
    with torch.no_grad():
        for i in range(len(split)) if rows is None else rows:
            n = int(np.asarray(split.attention_mask[i]).sum())
            ids = torch.as_tensor(np.asarray(split.input_ids[i][:n]))[None]
            labels = np.asarray(split.labels[i][:n])
            logits = model(ids, torch.ones_like(ids))[0].double()
            logp = (logits - torch.logsumexp(logits, dim=-1, keepdim=True)).numpy()
            counted = np.flatnonzero(labels[1:] != -100)  # positions t whose label t+1 counts
            losses = -logp[counted, labels[counted + 1]]
            d = int(split.domain[i])
            sums[d] += losses.mean() if counted.size else 0.0
            counts[d] += 1
    return sums / counts


def skillit_formula(A: np.ndarray, history: list[np.ndarray], eta: float) -> np.ndarray:
    """baselines.md: ``p_i ∝ exp(η Σ_j A_ij S_j)``, ``S`` the sum of the window's losses."""
    m = len(A)
    S = [sum(float(L[j]) for L in history) for j in range(m)]
    score = [eta * sum(A[i][j] * S[j] for j in range(m)) for i in range(m)]
    e = [np.exp(s - max(score)) for s in score]
    return np.array([x / sum(e) for x in e])


def test_skillit_rounds_follow_the_probe_losses_and_the_formula(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    m = 6
    rng = np.random.default_rng(3)
    A = rng.uniform(0.0, 1.0, size=(m, m)) + np.eye(m)  # asymmetric: A and Aᵀ differ
    np.save(tmp_path / "graph.npy", A)
    copies = ModelCopies()
    over = [
        *tiny_overrides,
        "strategy=skillit",
        f"strategy._target_={__name__}.RecordingSkillIt",
        f"strategy.graph={tmp_path / 'graph.npy'}",
        f"strategy.eta={ETA}",
        f"strategy.window={WINDOW}",
        "strategy.save_graph=false",
        f"balance.steps_per_round={K}",
        "trainer.max_steps=12",
        "initial_eval=false",
        "logger=none",
        f"output_dir={tmp_path / 'run'}",
    ]
    CALLS.clear()
    summary = train(compose("train", over), callbacks=[copies])
    calls = list(CALLS)
    assert summary["domains"] and len(summary["domains"]) == m
    # L_0 (the initial evaluation), then one update per round, at the round's last step
    assert [c["step"] for c in calls] == [0, 4, 8, 12]
    assert [c.get("round") for c in calls] == [None, 0, 1, 2]
    assert sorted(copies.states) == [0, 4, 8, 12]

    split = copies.split
    n_eval = len(split)
    assert n_eval < 256  # balance.probe.eval_size: the probe is the whole eval split
    per_domain = np.bincount(np.asarray(split.domain), minlength=m).astype(float)
    assert (per_domain > 0).all()
    for c in calls:
        copies.module.load_state_dict(copies.states[c["step"]])
        expected = brute_force_eval_loss(copies.module, split, m)
        np.testing.assert_allclose(c["loss"], expected, rtol=1e-5, err_msg=f"step {c['step']}")
        if "counts" in c:
            np.testing.assert_array_equal(c["counts"], per_domain)
    # the losses tell the domains apart (a permuted domain order would be seen) and training
    # lowered them (the copies are of different models)
    assert min(np.ptp(c["loss"]) for c in calls) > 1e-3
    assert (calls[-1]["loss"] < calls[0]["loss"]).all()

    # every mixture is Alg. 1 over the last WINDOW losses (L_0 included), from the file's A
    np.testing.assert_allclose(summary["strategy"]["skills_graph"], A)
    losses = [c["loss"] for c in calls]
    for t, c in enumerate(calls):
        expected = skillit_formula(A, losses[max(0, t - WINDOW + 1) : t + 1], ETA)
        np.testing.assert_allclose(c["out"], expected, rtol=1e-9, err_msg=f"step {c['step']}")
        if t > 0:  # each round is handed the mixture the previous call returned
            np.testing.assert_array_equal(c["previous"], calls[t - 1]["out"])
    assert np.abs(skillit_formula(A.T, losses[:1], ETA) - calls[0]["out"]).max() > 1e-2
    traj = summary["weights_trajectory"]
    assert [t["step"] for t in traj] == [0, 4, 8, 12]
    for t, c in zip(traj, calls, strict=True):
        np.testing.assert_allclose(t["weights"], c["out"], rtol=1e-12)
