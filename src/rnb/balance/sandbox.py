"""Sandboxed training: a few optimizer steps on the real model, then everything restored.

Used by sandboxed detours (:mod:`rnb.balance.detours`), e.g. Skill-It's skills-graph
estimation (Chen et al. 2023, §3.2 / App. C.2: short single-skill runs from the current
model). :class:`Sandbox` snapshots parameters and buffers, the optimizer state (AdamW
moments, step counts, learning rates), the LR scheduler, the gradients and the torch RNG;
:meth:`Sandbox.train` takes steps; leaving the context restores all of it, so the run
continues bit for bit as if the sandbox never ran.

Steps use ``torch.autograd.grad`` (no ``.grad`` accumulation, so DDP's gradient hooks do
not fire) and average the gradients over ranks explicitly: under DDP every rank trains on
its share of the same global batch and takes the identical step. The loss is the mean of
per-example token-mean losses, as in ``training_step`` (without per-domain loss weights),
and gradients are clipped by norm to ``trainer.gradient_clip_val`` when it is set.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.balance.services.base import ReduceFn
from rnb.balance.services.probe_eval import batch_positions, batch_rows

__all__ = ["Sandbox", "draw_detour_batch"]


def draw_detour_batch(
    domains: list[np.ndarray], weights: np.ndarray, size: int, seed: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A global batch of ``size`` training indices for a sandboxed step (own generator).

    Domains are drawn from ``weights``, then examples uniformly within each domain
    (without replacement when the domain is large enough). A pure function of ``seed``,
    so a resumed run redraws the same batches and the run's sampler is untouched.

    Returns:
        ``(indices [size], domain ids [size])``.
    """
    rng = np.random.default_rng(seed)
    doms = rng.choice(len(domains), size=size, p=weights / weights.sum())
    idx = np.empty(size, dtype=np.int64)
    for d in np.unique(doms):
        pos = np.flatnonzero(doms == d)
        pool = domains[int(d)]
        idx[pos] = rng.choice(pool, size=pos.size, replace=pos.size > pool.size)
    return idx, doms


class Sandbox:
    """Context manager: train the real model, then restore model, optimizer, scheduler, RNG.

    Args:
        trainer: the running trainer (optimizer, scheduler, precision, clipping, ranks).
        pl_module: the model (``example_losses``, ``num_parameters``).
        reduce_fn: sums a tensor over ranks (``None`` single-process).
        rng_seed: seeds torch's RNG inside the sandbox (dropout), so it is reproducible.
    """

    def __init__(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        reduce_fn: ReduceFn,
        rng_seed: int,
    ) -> None:
        self.trainer = trainer
        self.pl_module = pl_module
        self.reduce_fn = reduce_fn
        self.rng_seed = int(rng_seed)
        self.params = [p for p in pl_module.parameters() if p.requires_grad]
        self.optimizer = trainer.optimizers[0]
        self._rng: AbstractContextManager[Any] = nullcontext()

    def __enter__(self) -> Sandbox:
        self._model = {k: v.detach().clone() for k, v in self.pl_module.state_dict().items()}
        self._optim = copy.deepcopy(self.optimizer.state_dict())
        self._grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        configs = getattr(self.trainer, "lr_scheduler_configs", None) or []
        self._scheds = [(c.scheduler, copy.deepcopy(c.scheduler.state_dict())) for c in configs]
        devices = [self.pl_module.device] if self.pl_module.device.type == "cuda" else []
        self._rng = torch.random.fork_rng(devices=devices)
        self._rng.__enter__()
        torch.manual_seed(self.rng_seed)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._rng.__exit__(exc_type, exc, tb)
        self.pl_module.load_state_dict(self._model)
        self.optimizer.load_state_dict(self._optim)
        for sched, state in self._scheds:
            sched.load_state_dict(state)
        for p, g in zip(self.params, self._grads, strict=True):
            p.grad = g

    def set_lr(self, lr: float | str) -> None:
        """``"current"`` keeps the run's rate, ``"peak"`` the base rate, a number sets it."""
        if lr == "current":
            return
        for group in self.optimizer.param_groups:
            group["lr"] = float(group.get("initial_lr", group["lr"]) if lr == "peak" else lr)

    def step(self, split: Any, rows: np.ndarray) -> int:
        """One optimizer step on this rank's ``rows`` of ``split`` (averaged over ranks).

        Returns:
            Tokens (padded) this rank's forward pass processed.
        """
        batch = batch_rows(split, rows, self.pl_module.device)
        forward_context: Callable[[], AbstractContextManager[Any]] = (
            self.trainer.precision_plugin.forward_context
        )
        with torch.enable_grad():
            with forward_context():
                loss_sum, tokens = self.pl_module.example_losses(batch)
            loss = (loss_sum.float() / tokens.clamp_min(1)).mean()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        flat = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1)
                for p, g in zip(self.params, grads, strict=True)
            ]
        )
        if self.reduce_fn is not None:  # DDP: the mean over the global batch
            flat = self.reduce_fn(flat) / self.trainer.world_size
        at = 0
        for p in self.params:
            p.grad = flat[at : at + p.numel()].view_as(p).to(p.dtype)
            at += p.numel()
        clip = self.trainer.gradient_clip_val
        if clip:  # as the trainer clips its own steps
            # Lightning stores a str enum: compare it, never its str() ("GradClipAlgorithmType.VALUE")
            if self.trainer.gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(self.params, float(clip))
            else:
                torch.nn.utils.clip_grad_norm_(self.params, float(clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return batch_positions(batch)
