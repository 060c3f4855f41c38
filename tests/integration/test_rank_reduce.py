"""The callback's cross-rank sums, in one process: a strategy that plays two identical ranks.

The DDP integration tests (``-m ddp``) run real gloo ranks in subprocesses, which mutation
testing cannot see. Here `TwoIdenticalRanks` reports a world of 2 and sums a tensor "over the
ranks" by doubling it (rank 1 is rank 0's copy), so a real R&B run must show every sum the
callback owes: the round statistics and the end-of-run tail (draws and tokens doubled), the
Gram accumulators and their counts (one SUM each per round, on the right shapes), and one
rank-agreement check per round. Runs of strategies that use signal services (recording
subclasses given through ``strategy._target_``) show each service's sums: DoReMi's reference
sums (tokens doubled, as the callback's), DGA's gradient probe (rows summed then halved: one
rank's brute-force gradient) and Skill-It's probe evaluation (rank 0's half of the probe,
counts doubled, losses its brute-force mean).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from rnb.balance.services.probe_eval import LM_KEYS
from rnb.balance.strategies.base import MixingStrategy, RoundStats
from rnb.balance.strategies.dga import DGA
from rnb.balance.strategies.doremi import DoReMi
from rnb.balance.strategies.skillit import SkillIt
from rnb.config import compose
from rnb.train import train
from tests.conftest import TINY
from tests.integration.test_skillit_train import ModelCopies, brute_force_eval_loss

#: (shape, dtype) of every tensor summed over the ranks during the run under test
REDUCED: list[tuple[tuple[int, ...], torch.dtype]] = []


class TwoIdenticalRanks(SingleDeviceStrategy):
    """Rank 0 of a two-rank world whose other rank holds the same tensors."""

    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"))

    @property
    def world_size(self) -> int:
        return 2

    @world_size.setter
    def world_size(self, value: int) -> None:  # Lightning assigns it; the world stays 2
        pass

    def reduce(self, tensor, *args, reduce_op="mean", **kwargs):
        if not isinstance(tensor, torch.Tensor):
            return tensor
        assert reduce_op == "sum", reduce_op  # the callback's sums must be sums
        REDUCED.append((tuple(tensor.shape), tensor.dtype))
        return tensor * 2

    def all_gather(self, tensor, group=None, sync_grads=False):
        return torch.stack([tensor, tensor])


#: the training overrides of every run here (two rounds of 4 steps and a 2-step tail)
OVER = [
    *TINY, "initial_eval=false", "logger=none", "trainer.max_steps=10",
    "balance.steps_per_round=4", "data.batch_size=4", "checkpoint.every_n_train_steps=100",
]  # fmt: skip
TWO_RANKS = f"+trainer.strategy._target_={__name__}.TwoIdenticalRanks"


def _run(tmp: Path, over: list[str], callbacks: list[L.Callback] | None = None) -> dict:
    """One training run; its summary."""
    return train(compose("train", [*OVER, *over, f"output_dir={tmp}"]), callbacks=callbacks)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A one-process stratified run (its summary and dir): nothing is summed over ranks.
    It is also the DoReMi reference below."""
    out = tmp_path_factory.mktemp("one") / "run"
    cache = tmp_path_factory.getbasetemp() / "rnb_cache"  # the autouse fixture's cache
    REDUCED.clear()
    summary = _run(out, ["strategy=stratified", f"data.cache_dir={cache}"])
    assert not REDUCED  # one process: nothing is summed
    return summary, out


def test_round_statistics_gram_and_tail_are_summed_over_ranks(
    tmp_path: Path, one_process: tuple[dict, Path]
) -> None:
    REDUCED.clear()
    two = _run(tmp_path / "two", ["strategy=rnb", TWO_RANKS])
    reduced = list(REDUCED)
    one = one_process[0]
    # a static strategy (its draws are counted outside the meter)
    assert "Stratified" in str(one["strategy"]) and "RnB" in str(two["strategy"])
    assert min(one["tokens_per_domain"].values()) > 0
    # every draw counted twice: rounds (2 x 4 steps) and the 2-step tail, 4 examples a rank
    drawn = sum(two["examples_per_domain"].values())
    assert drawn == 2 * 10 * 4, two["examples_per_domain"]
    assert sum(one["examples_per_domain"].values()) == 10 * 4
    assert sum(two["tokens_per_domain"].values()) > 1.5 * sum(one["tokens_per_domain"].values())
    assert two["rounds"] == 2 and two["rank_checks"] == 2 and two["rank_weight_spread"] == 0.0
    m = len(two["domains"])
    stats, acc, counts = ((4, m), torch.float64), ((m, 32000), torch.float32), ((m,), torch.float64)
    per_round = [stats, acc, counts]  # round statistics, then the Gram's accumulators + n_i
    checkpoint = [stats, acc, counts]  # last.ckpt holds the sums (rank 0 saves them)
    tensors = [r for r in reduced if r[0] != ()]  # scalars are Lightning's logging
    assert tensors == [*per_round, *per_round, stats, *checkpoint], tensors
    json.dumps(two)  # the summary stays serialisable


# ----------------------------------------------------------------------- signal services
#: the RoundStats each update of a recording strategy below was handed (deep copies: the
#: gradient probe hands out views of a buffer it overwrites next round)
ROUNDS: list[RoundStats] = []


class RecordingDoReMi(DoReMi):
    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        ROUNDS.append(copy.deepcopy(stats))
        return super().update(stats, weights)


class RecordingDGA(DGA):
    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        ROUNDS.append(copy.deepcopy(stats))
        return super().update(stats, weights)


class RecordingSkillIt(SkillIt):
    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        ROUNDS.append(copy.deepcopy(stats))
        return super().update(stats, weights)


def _two_ranks(
    tmp: Path,
    strategy: type[MixingStrategy],
    over: list[str],
    callbacks: list[L.Callback] | None = None,
) -> tuple[dict, list[tuple[tuple[int, ...], torch.dtype]], list[RoundStats]]:
    """A run of a recording strategy on two identical ranks: its summary, the tensors summed
    over ranks (scalars, Lightning's logging, left out) and the rounds' statistics."""
    REDUCED.clear()
    ROUNDS.clear()
    target = f"strategy._target_={__name__}.{strategy.__name__}"
    summary = _run(tmp, [*over, target, TWO_RANKS], callbacks)
    reduced = [r for r in REDUCED if r[0] != ()]
    rounds = list(ROUNDS)
    REDUCED.clear()
    ROUNDS.clear()
    assert [r.step for r in rounds] == [4, 8] and summary["rounds"] == 2
    return summary, reduced, rounds


def test_reference_sums_are_summed_over_ranks(
    tmp_path: Path, one_process: tuple[dict, Path]
) -> None:
    """DoReMi's reference service: per round its three per-domain sums (clipped and plain
    excess loss, tokens) are summed, and so are the mid-round sums a checkpoint holds."""
    over = ["strategy=doremi", f"strategy.reference={one_process[1]}"]
    summary, reduced, rounds = _two_ranks(tmp_path, RecordingDoReMi, over)
    names = summary["domains"]
    m = len(names)
    stats, sums = ((4, m), torch.float64), ((m,), torch.float64)
    ref = [sums, sums, sums]  # clipped, excess, tokens
    # each round: the statistics, then the reference sums; the tail; last.ckpt: both again
    assert reduced == [stats, *ref, stats, *ref, stats, stats, *ref], reduced
    for r in rounds:
        ex = r.extra["excess_loss"]
        # the service's loss-bearing tokens and the callback's are one quantity, both summed
        # over the ranks (unsummed, the service's would be half the callback's)
        assert ex["tokens"].dtype == torch.float64
        torch.testing.assert_close(ex["tokens"], r.tokens, rtol=0, atol=0)
        assert r.tokens.sum() > 0
        assert torch.equal(ex["mean"].isnan(), r.tokens == 0)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "BalanceCallback" in k)
    # the checkpoint's sums are the 2-step tail's, over both ranks: all tokens minus the rounds'
    total = torch.tensor([summary["tokens_per_domain"][d] for d in names], dtype=torch.float64)
    tail = total - sum(r.tokens for r in rounds)
    assert tail.sum() > 0
    torch.testing.assert_close(state["services"][0]["sums"]["tokens"], tail, rtol=0, atol=0)


def _rank0_draw(ix: np.ndarray, seed: int, probe: int, row: int, size: int) -> np.ndarray:
    """Rank 0's probe batch (gradient_probe.py: ``(seed, rank, probe, row)``-seeded draw)."""
    if ix.size <= size:
        return ix
    rng = np.random.default_rng([seed, 0, probe, row])
    return np.sort(rng.choice(ix, size=size, replace=False))


def _brute_force_grad(model: L.LightningModule, split: Any, rows: np.ndarray) -> torch.Tensor:
    """Flat gradient of the batch's mean over examples of their token-mean loss (eval mode)."""
    batch = {k: torch.as_tensor(np.asarray(getattr(split, k))[rows]) for k in LM_KEYS}
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])[:, :-1].double()
        logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        labels = batch["labels"][:, 1:]
        valid = labels != -100
        picked = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0]
        loss = (-(picked * valid).sum(1) / valid.sum(1).clamp_min(1)).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return torch.cat([g.reshape(-1) for g in flat]).float()


def test_gradient_probe_rows_are_averaged_over_ranks(tmp_path: Path) -> None:
    """DGA's gradient probe: every row (m domains + the target) is summed over the ranks and
    divided by their number: two identical ranks give one rank's gradient, not twice it."""
    copies = ModelCopies()
    summary, reduced, rounds = _two_ranks(tmp_path, RecordingDGA, ["strategy=dga"], [copies])
    m = len(summary["domains"])
    n_params = summary["num_parameters"]
    stats, row = ((4, m), torch.float64), ((n_params,), torch.float32)
    rows = [row] * (m + 1)  # the domains, then the target
    assert reduced == [stats, *rows, stats, *rows, stats, stats], reduced
    cfg = compose("train", [*OVER, "strategy=dga"])
    seed, size = int(cfg.balance.probe.seed), int(cfg.balance.probe.batch_size)
    train_split = copies.module.trainer.datamodule.train_data
    eval_split = copies.split
    assert len(eval_split) < int(cfg.balance.probe.eval_size)  # target set: the whole split
    domain = np.asarray(train_split.domain)
    for probe, r in enumerate(rounds):
        copies.module.load_state_dict(copies.states[r.step])
        got = [*r.extra["domain_grads"], r.extra["target_grad"]]
        sets = [*(np.flatnonzero(domain == i) for i in range(m)), np.arange(len(eval_split))]
        for i, (ix, g) in enumerate(zip(sets, got, strict=True)):
            split = train_split if i < m else eval_split
            want = _brute_force_grad(copies.module, split, _rank0_draw(ix, seed, probe, i, size))
            scale = float(want.abs().max())
            assert scale > 0
            torch.testing.assert_close(g, want, rtol=1e-3, atol=1e-4 * scale)


def test_eval_probe_sums_are_summed_over_ranks(tmp_path: Path) -> None:
    """Skill-It's probe evaluator (and the initial evaluation): rank 0 evaluates every other
    probe example, and the per-domain sums and counts are summed over the ranks."""
    copies = ModelCopies()
    over = ["strategy=skillit", "strategy.graph=identity", "strategy.save_graph=false"]
    summary, reduced, rounds = _two_ranks(tmp_path, RecordingSkillIt, over, [copies])
    m = len(summary["domains"])
    stats, probe = ((4, m), torch.float64), ((2 * m + 1,), torch.float64)
    # L_0 (the initial evaluation); each round: statistics, then the probe; the tail; last.ckpt
    assert reduced == [probe, stats, probe, stats, probe, stats, stats], reduced
    split = copies.split
    assert len(split) < 256  # balance.probe.eval_size: the probe is the whole eval split
    mine = np.arange(len(split))[0::2]  # rank 0's share
    counts = np.bincount(np.asarray(split.domain)[mine], minlength=m)
    assert (counts > 0).all()
    for r in rounds:
        # both ranks' counts (rank 1 holds the same examples here): twice rank 0's
        np.testing.assert_array_equal(r.extra["eval_counts"].numpy(), 2 * counts)
        copies.module.load_state_dict(copies.states[r.step])
        want = brute_force_eval_loss(copies.module, split, m, mine)
        np.testing.assert_allclose(r.extra["eval_loss"].numpy(), want, rtol=1e-5)
