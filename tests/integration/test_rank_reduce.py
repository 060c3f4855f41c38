"""The callback's cross-rank sums, in one process: a strategy that plays two identical ranks.

The DDP integration tests (``-m ddp``) run real gloo ranks in subprocesses, which mutation
testing cannot see. Here `TwoIdenticalRanks` reports a world of 2 and sums a tensor "over the
ranks" by doubling it (rank 1 is rank 0's copy), so a real R&B run must show every sum the
callback owes: the round statistics and the end-of-run tail (draws and tokens doubled), the
Gram accumulators and their counts (one SUM each per round, on the right shapes), and one
rank-agreement check per round.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from rnb.config import compose
from rnb.train import train

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


def _run(tmp: Path, over: list[str]) -> dict:
    """One training run; its summary."""
    return train(compose("train", [*over, f"output_dir={tmp}"]))


def test_round_statistics_gram_and_tail_are_summed_over_ranks(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides, "strategy=rnb", "initial_eval=false", "logger=none",
        "trainer.max_steps=10", "balance.steps_per_round=4", "data.batch_size=4",
        "checkpoint.every_n_train_steps=100",
    ]  # fmt: skip
    REDUCED.clear()
    two = _run(
        tmp_path / "two",
        [*over, f"+trainer.strategy._target_={__name__}.TwoIdenticalRanks"],
    )
    reduced = list(REDUCED)
    REDUCED.clear()
    # one process, and a static strategy (its draws are counted outside the meter)
    one = _run(tmp_path / "one", [*over, "strategy=stratified"])
    assert not REDUCED  # one process: nothing is summed
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
