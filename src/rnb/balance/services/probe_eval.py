"""Per-domain mean loss of the current model on a fixed set of eval examples.

One function shared by everything that evaluates the model per domain during training:
the round-end probe evaluator (``eval_loss``) and the before/after evaluations of
detours (:mod:`rnb.balance.detours`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn, evaluating

__all__ = ["LM_KEYS", "batch_positions", "batch_rows", "probe_losses", "run_probe"]


#: Arrays of a tokenised split (:class:`~rnb.data.tokenize.TokenizedSplit`) a model reads.
LM_KEYS = ("input_ids", "attention_mask", "labels", "domain")


def batch_rows(split: Any, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch of ``rows`` of a split, on ``device``.

    Args:
        split: a split whose arrays ``split.batch_keys`` names (a feature split:
            ``features``, ``target``, ``domain``), else a
            :class:`~rnb.data.tokenize.TokenizedSplit` (``input_ids``, ``attention_mask``,
            ``labels``: ``[n, L]``, ``domain``: ``[n]``); a split with ``take(rows)`` (the
            token store's :class:`~rnb.data.store.StoreSplit`) is read row by row.
        rows: ``[b]`` int indices.
        device: where the model is.

    Returns:
        ``{key: [b, ...]}`` tensors, one per array.
    """
    keys = getattr(split, "batch_keys", LM_KEYS)
    take = getattr(split, "take", None)
    if take is not None:
        # A memory-mapped token store reads just these rows; its whole-split arrays would
        # materialise the corpus in RAM.
        got = take(np.asarray(rows))
        return {key: torch.as_tensor(got[key]).to(device) for key in keys}
    return {key: torch.as_tensor(np.asarray(getattr(split, key))[rows]).to(device) for key in keys}


def batch_positions(batch: dict[str, torch.Tensor]) -> int:
    """Positions a forward pass processes (FLOPs ``2·N`` each): tokens of an LM batch
    (``input_ids``, padding included), else one per example."""
    return int(batch["input_ids"].numel() if "input_ids" in batch else batch["domain"].numel())


def probe_losses(
    pl_module: L.LightningModule,
    split: Any,
    indices: np.ndarray,
    *,
    batch_size: int,
    num_domains: int,
    rank: int = 0,
    world_size: int = 1,
    reduce_fn: ReduceFn = None,
    forward_context: Callable[[], AbstractContextManager[Any]] | None = None,
    meter: OverheadMeter | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-domain sums of example losses and example counts over ``indices``.

    The loss of an example is its token-mean next-token loss (as ``val/loss/<domain>``),
    measured in eval mode under ``no_grad`` (:func:`evaluating`; the previous mode is
    restored). Rank ``r`` evaluates ``indices[r::world_size]`` and the sums are reduced
    over ranks, so every rank returns the result over all of ``indices``.

    Args:
        pl_module: the model (``example_losses(batch) -> (loss_sum [B], tokens [B])`` and
            ``num_parameters()``).
        split: the eval split (see :func:`batch_rows`).
        indices: ``[n]`` rows of ``split`` (the same on every rank).
        batch_size: examples per forward pass.
        num_domains: ``m``.
        rank: this process's rank.
        world_size: number of ranks sharing the work.
        reduce_fn: sums a tensor over ranks (``None`` in single-process runs).
        forward_context: the trainer's precision context (``precision_plugin.forward_context``).
        meter: receives the forward FLOPs ``2·N·tokens`` of all ranks (padded tokens).

    Returns:
        ``(loss_sum [m], counts [m])`` float64 on the CPU; ``loss_sum / counts`` is the
        per-domain mean (a domain without examples has count 0).
    """
    device = pl_module.device
    mine = np.asarray(indices, dtype=np.int64)[rank :: max(1, world_size)]
    # [loss sums (m) | counts (m) | tokens evaluated (1)]: one reduction for all of them.
    acc = torch.zeros(2 * num_domains + 1, dtype=torch.float64, device=device)
    context = forward_context or nullcontext
    with evaluating(pl_module):
        for start in range(0, len(mine), max(1, int(batch_size))):
            batch = batch_rows(split, mine[start : start + batch_size], device)
            with context():
                loss_sum, tokens = pl_module.example_losses(batch)
            per_example = loss_sum.double() / tokens.clamp_min(1).double()
            acc[:num_domains].index_add_(0, batch["domain"], per_example)
            acc[num_domains : 2 * num_domains].index_add_(
                0, batch["domain"], torch.ones_like(per_example)
            )
            acc[-1] += float(batch_positions(batch))
    if reduce_fn is not None:
        acc = reduce_fn(acc)
    acc = acc.double().cpu()
    if meter is not None:
        meter.add_flops(2.0 * float(pl_module.num_parameters()) * float(acc[-1]))
    return acc[:num_domains].clone(), acc[num_domains : 2 * num_domains].clone()


def run_probe(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    split: Any,
    indices: np.ndarray,
    *,
    batch_size: int,
    num_domains: int,
    reduce_fn: ReduceFn,
    meter: OverheadMeter | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`probe_losses` inside a running fit (ranks and precision from ``trainer``).

    Returns:
        ``(mean loss [m], counts [m])`` float64 on the CPU, ``nan`` where a domain has no
        example in ``indices``.
    """
    sums, counts = probe_losses(
        pl_module,
        split,
        indices,
        batch_size=batch_size,
        num_domains=num_domains,
        rank=trainer.global_rank,
        world_size=trainer.world_size,
        reduce_fn=reduce_fn,
        forward_context=trainer.precision_plugin.forward_context,
        meter=meter,
    )
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan), counts
