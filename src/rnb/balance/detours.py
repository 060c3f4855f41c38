"""The detour runner: executes the detours a strategy plans at round boundaries.

The :class:`~rnb.balance.callback.BalanceCallback` conducts; this module does the work.
At a boundary (before the first step and after each round's update) the strategy's
:meth:`~rnb.balance.strategies.base.MixingStrategy.plan_detours` returns a list of
:class:`~rnb.balance.detour_plan.Detour`. Sandboxed detours run at once, inside the hook
(:class:`~rnb.balance.sandbox.Sandbox`; batches from a generator seeded by
``(seed, boundary step, detour index, step)``). In-line detours are queued in the
sampler's recorded schedule (:meth:`~rnb.data.sampler.MixtureBatchSampler.schedule_segments`),
back to back from the first batch not drawn yet; the runner evaluates before the first
batch of each and after its last one (the "after" of one is the "before" of the next).
When every detour of the plan is done the results go to
:meth:`~rnb.balance.strategies.base.MixingStrategy.detours_done`, in plan order.

Exact resume: sandboxed detours finish inside one hook (a kill inside one leaves no
checkpoint after it, and the resumed run replays it from the same seed and state);
in-line detours are sampler schedule entries plus the runner's :meth:`state_dict` (the plan,
its batch offsets, the results so far), saved in every checkpoint. DDP: every rank plans
and runs the same detours; evaluations and sandbox gradients are reduced over ranks.
Overhead: evaluations (``2·N`` FLOPs per token) and all sandboxed training (``6·N`` per
token), over all ranks, go to the callback's meter; the caller times the hooks.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.sandbox import Sandbox, draw_detour_batch
from rnb.balance.services.base import ReduceFn
from rnb.balance.services.probe_eval import run_probe
from rnb.balance.services.probe_set import stratified_probe

__all__ = ["DetourRunner"]


class DetourRunner:
    """Runs sandboxed detours in a hook and tracks in-line detours across steps.

    Args:
        probe: ``balance.probe`` (``eval_size``, ``seed``): the detours' evaluations use the
            same fixed stratified probe subset as the ``eval_loss`` service.
        seed: seed of the sandboxed detours' batches.
    """

    def __init__(self, probe: dict[str, Any], seed: int) -> None:
        self.eval_size = int(probe.get("eval_size", 256))
        self.probe_seed = int(probe.get("seed", seed))
        self.seed = int(seed)
        self.plan: list[Detour] = []
        self.results: list[DetourResult | None] = []
        self.starts: list[int] = []  # in-line: first global batch of each (-1: sandboxed)
        self.pending_before: np.ndarray | None = None
        self.evaluations = 0
        self.sandboxed_steps = 0
        self.inline_steps = 0

    def setup(self, trainer: L.Trainer, datamodule: Any, meter: OverheadMeter) -> None:
        """Bind the data (probe subset, per-domain training indices) and the meter."""
        self.meter = meter
        self.m = len(datamodule.domain_names)
        self.eval_split = datamodule.eval_data
        self.train_split = datamodule.train_data
        self.eval_batch_size = int(datamodule.eval_batch_size)
        self.batch_size = int(datamodule.batch_size)
        self.probe = stratified_probe(
            datamodule.labels.eval, self.eval_size, self.m, self.probe_seed
        )
        labels = np.asarray(datamodule.labels.train)
        self.domains = [np.flatnonzero(labels == i) for i in range(self.m)]
        self.accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)

    # ------------------------------------------------------------------ queries
    @property
    def active(self) -> bool:
        """A plan is under way (some in-line detour not finished)."""
        return bool(self.plan)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> np.ndarray:
        """Per-domain mean probe loss ``[m]`` of the model now (all ranks; metered FLOPs)."""
        loss, _ = run_probe(
            trainer,
            pl_module,
            self.eval_split,
            self.probe,
            batch_size=self.eval_batch_size,
            num_domains=self.m,
            reduce_fn=reduce_fn,
            meter=self.meter,
        )
        self.evaluations += 1
        return loss.numpy()

    # ------------------------------------------------------------------ planning
    def start(
        self,
        detours: list[Detour],
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        sampler: Any,
        weights: np.ndarray,
        next_boundary: int,
        reduce_fn: ReduceFn,
    ) -> bool:
        """Run the sandboxed detours now and queue the in-line ones.

        Args:
            detours: the strategy's plan.
            sampler: the run's :class:`~rnb.data.sampler.MixtureBatchSampler`.
            weights: the mixture in force (the sampler returns to it after the detours).
            next_boundary: global batch number of the next round boundary; in-line
                detours must end by then.

        Returns:
            True when the plan is complete already (nothing in-line): call :meth:`finish`.

        Raises:
            ValueError: in-line detours that do not fit before the next round boundary.
        """
        self.plan = list(detours)
        self.results = [None] * len(self.plan)
        self.starts = [-1] * len(self.plan)
        step = int(trainer.global_step)
        start_eval: np.ndarray | None = None
        for j, d in enumerate(self.plan):
            if d.kind == "sandboxed":
                if start_eval is None:  # every sandboxed detour starts from this state
                    start_eval = self.evaluate(trainer, pl_module, reduce_fn)
                after = self._sandboxed(d, j, trainer, pl_module, reduce_fn, start_eval)
                self.results[j] = DetourResult(d, start_eval.copy(), after, step)
        inline = [(j, d) for j, d in enumerate(self.plan) if d.kind == "inline"]
        if not inline:
            return True
        segments = [(d.steps * self.accumulate, d.weights(self.m)) for _, d in inline]
        at = sampler.schedule_segments(segments, weights)
        for j, d in inline:
            self.starts[j] = at
            at += d.steps * self.accumulate
        if at > next_boundary:
            raise ValueError(
                f"in-line detours of {sum(d.steps for _, d in inline)} steps (starting at "
                f"batch {self.starts[inline[0][0]]}) end after the next round boundary (batch "
                f"{next_boundary}): raise balance.steps_per_round or shorten the detours "
                "(the strategy's detour steps / sweeps)"
            )
        return False

    def _sandboxed(
        self,
        d: Detour,
        j: int,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        reduce_fn: ReduceFn,
        start_eval: np.ndarray,
    ) -> np.ndarray:
        if d.steps == 0:
            return start_eval.copy()
        step = int(trainer.global_step)
        world, rank = trainer.world_size, trainer.global_rank
        weights = d.weights(self.m)
        tokens = 0
        with Sandbox(trainer, pl_module, reduce_fn, rng_seed=self.seed + 7919 * j + step) as box:
            box.set_lr(d.lr)
            for k in range(d.steps):
                rows, _ = draw_detour_batch(
                    self.domains, weights, self.batch_size * world, [self.seed, 3, step, j, k]
                )
                tokens += box.step(self.train_split, rows[rank::world])
            after = self.evaluate(trainer, pl_module, reduce_fn)
        total = torch.tensor([float(tokens)], dtype=torch.float64, device=pl_module.device)
        if reduce_fn is not None:
            total = reduce_fn(total)
        self.meter.add_flops(6.0 * float(pl_module.num_parameters()) * float(total.item()))
        self.sandboxed_steps += d.steps
        return after

    # ------------------------------------------------------------------ per batch
    def before_batch(
        self, batch: int, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> None:
        """Evaluate before an in-line detour that starts with global batch ``batch``."""
        for j, s in enumerate(self.starts):
            if s == batch and self.results[j] is None and self.pending_before is None:
                self.pending_before = self.evaluate(trainer, pl_module, reduce_fn)

    def after_batch(
        self, consumed: int, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> bool:
        """Evaluate after an in-line detour whose last batch was just trained.

        Returns:
            True when this completed the plan (call :meth:`finish`).
        """
        for j, (s, d) in enumerate(zip(self.starts, self.plan, strict=True)):
            if s >= 0 and s + d.steps * self.accumulate == consumed and self.results[j] is None:
                assert self.pending_before is not None, "in-line detour without its evaluation"
                after = self.evaluate(trainer, pl_module, reduce_fn)
                step = int(trainer.global_step)
                self.results[j] = DetourResult(d, self.pending_before, after, step)
                self.inline_steps += d.steps
                # Back to back: the next detour starts from this model, already evaluated.
                nxt = [k for k, t in enumerate(self.starts) if t == consumed]
                self.pending_before = after.copy() if nxt else None
        return self.active and all(r is not None for r in self.results)

    def finish(self) -> list[DetourResult]:
        """The plan's results in plan order; the runner is idle again."""
        out = [r for r in self.results if r is not None]
        self.plan, self.results, self.starts, self.pending_before = [], [], [], None
        return out

    # ------------------------------------------------------------------ state
    def summary(self) -> dict[str, int]:
        """Counts for ``summary.json`` ``detours``."""
        return {
            "evaluations": self.evaluations,
            "sandboxed_steps": self.sandboxed_steps,
            "inline_steps": self.inline_steps,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain types only (``weights_only``-loadable)."""
        return {
            "plan": [d.to_dict() for d in self.plan],
            "results": [None if r is None else r.to_dict() for r in self.results],
            "starts": list(self.starts),
            "pending_before": None
            if self.pending_before is None
            else [float(x) for x in self.pending_before],
            **self.summary(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.plan = [Detour(**d) for d in state.get("plan", [])]
        self.results = [
            None if r is None else DetourResult.from_dict(r) for r in state.get("results", [])
        ]
        self.starts = [int(s) for s in state.get("starts", [])]
        pending = state.get("pending_before")
        self.pending_before = None if pending is None else np.asarray(pending, dtype=np.float64)
        self.evaluations = int(state.get("evaluations", 0))
        self.sandboxed_steps = int(state.get("sandboxed_steps", 0))
        self.inline_steps = int(state.get("inline_steps", 0))
