"""Gradient probe: per-domain and target gradients of the model on extra batches (DoGE, DGA).

Once per round (at its end, on the model the next round starts from) the probe draws one
batch of ``balance.probe.batch_size`` training examples per domain, and, when the strategy
needs ``"target_grad"``, one batch of the target set: the eval probe subset
(:func:`~rnb.balance.services.probe_set.stratified_probe` of the eval split) or the user's
file ``balance.probe.target_path`` (the DGA paper's "specific" set), read and tokenised like
the training data. For each batch it takes the gradient of the model's mean loss (mean over
examples of their token-mean loss, the training loss of :mod:`rnb.models.lm`) with
:func:`torch.autograd.grad` and writes it, flattened, into one preallocated fp32 matrix:
rows ``0..m-1`` the domains, row ``m`` the target (only when the target is needed).

What the probe leaves alone: it never writes ``.grad`` (``autograd.grad`` returns the
gradients instead of accumulating them), never touches the optimizer or the parameters,
and draws from its own generators (``numpy`` seeded by ``(balance.probe.seed, rank, probe
number)``), so the training trajectory does not depend on whether a probe ran.

Train or eval mode: the probe runs in **eval mode** (dropout off; every submodule's mode
restored after). DoGE's reference code takes its per-domain gradients in training mode;
with dropout the two differ, but a train-mode probe would draw dropout masks from the
global torch RNG, shifting the training run's own masks and breaking exact resume (the
RNG state is not checkpointed). rnb's models use no dropout by default, where both agree.

DDP: rank ``r`` draws its own batch (seed stream ``r``); the matrix is summed over ranks
and divided by the world size, so every rank holds the same gradients, those of a batch
``world_size`` times larger.

Which parameters are probed, and the mode they are probed in, is
:mod:`rnb.balance.services.probe_params` (``select_parameters`` is re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn, SignalService
from rnb.balance.services.probe_eval import batch_positions, batch_rows
from rnb.balance.services.probe_params import probing, select_parameters
from rnb.balance.services.probe_set import stratified_probe

__all__ = ["GradientProbe", "select_parameters"]

log = logging.getLogger(__name__)


class GradientProbe(SignalService):
    """Per-domain gradients (``domain_grads``) and a target gradient (``target_grad``).

    ``collect`` returns ``{"domain_grads": [m, P] fp32, "target_grad": [P] fp32 (when the
    strategy needs it), "grad_present": [m] bool}`` on the model's device; the tensors are
    views of the service's buffer, valid until the next round's probe. A domain without
    training examples gets a zero row and ``grad_present`` False.

    Args:
        batch_size: examples per probe batch (``balance.probe.batch_size``), per rank.
        eval_size: size of the eval probe subset (``balance.probe.eval_size``).
        params: ``fnmatch`` patterns of the probed parameters (``balance.probe.params``).
        target_path: file of the target set (``balance.probe.target_path``).
        seed: ``balance.probe.seed``.
        target: ``None`` (no target gradient), ``"eval"`` (eval probe subset) or
            ``"file"`` (``target_path``); from the strategy's ``target`` and ``needs``.
    """

    provides: ClassVar[frozenset[str]] = frozenset({"domain_grads", "target_grad"})

    def __init__(
        self,
        batch_size: int = 16,
        eval_size: int = 256,
        params: str | Sequence[str] | None = None,
        target_path: str | None = None,
        seed: int = 0,
        target: str | None = "eval",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"balance.probe.batch_size must be >= 1, got {batch_size}")
        if target not in (None, "eval", "file"):
            raise ValueError(f"strategy.target='{target}': choose one of train, eval, file")
        if target == "file" and not target_path:
            raise ValueError("strategy.target=file needs balance.probe.target_path (a file)")
        # Checked here, at build time, so a typo fails before data prep and the initial
        # evaluation rather than leaving a failed run dir behind (hf: names load later).
        local = target == "file" and not str(target_path).startswith("hf:")
        if local and not Path(str(target_path)).expanduser().exists():
            raise FileNotFoundError(
                f"balance.probe.target_path='{target_path}' does not exist (needed by "
                "strategy.target=file): give an existing .jsonl/.json/.parquet/.csv file, "
                "a save_to_disk directory or hf:<name>"
            )
        if target != "file" and target_path:  # a set key that would do nothing
            used = "the eval probe set" if target == "eval" else "no target batch"
            raise ValueError(
                f"balance.probe.target_path='{target_path}' is set but strategy.target="
                f"{target or 'train'} uses {used}: set strategy.target=file to use the file, "
                "or unset balance.probe.target_path"
            )
        self.batch_size = int(batch_size)
        self.eval_size = int(eval_size)
        self.params = params
        self.target_path = target_path
        self.seed = int(seed)
        self.target = target
        #: probes run so far (seeds the next draw; saved for exact resume)
        self.probes = 0
        self.rows = 0
        self.matrix: torch.Tensor | None = None

    @classmethod
    def from_config(cls, probe: dict[str, Any], strategy: Any) -> GradientProbe:
        """Build from ``balance.probe``; the target comes from ``strategy.target``."""
        wants_target = "target_grad" in strategy.needs
        target = getattr(strategy, "target", "eval") if wants_target else None
        if target == "train":  # DoGE's "target = the training mix" needs no target batch
            target = None
        return cls(
            batch_size=probe.get("batch_size", 16),
            eval_size=probe.get("eval_size", 256),
            params=probe.get("params"),
            target_path=probe.get("target_path"),
            seed=probe.get("seed", 0),
            target=target,
        )

    # ------------------------------------------------------------------ setup
    def setup(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: Any,
        meter: OverheadMeter,
    ) -> None:
        """Pick the parameters, index the domains and the target set, allocate the matrix."""
        self.meter = meter
        self.rank = int(getattr(trainer, "global_rank", 0))
        self.world_size = int(getattr(trainer, "world_size", 1))
        self._trainer = trainer
        self.named = select_parameters(pl_module, self.params)
        self.num_probed = sum(p.numel() for _, p in self.named)
        self.num_params = int(pl_module.num_parameters())
        m = len(datamodule.domain_names)
        self.train_split = datamodule.train_data
        train_domain = np.asarray(self.train_split.domain)
        self.domain_index = [np.flatnonzero(train_domain == i) for i in range(m)]
        self.present = torch.tensor([ix.size > 0 for ix in self.domain_index])
        self.target_split: Any = None
        self.target_index = np.zeros(0, dtype=np.int64)
        if self.target == "eval":
            self.target_split = datamodule.eval_data
            labels = np.asarray(datamodule.eval_data.domain)
            self.target_index = stratified_probe(labels, self.eval_size, m, self.seed)
        elif self.target == "file":
            assert self.target_path is not None
            self.target_split = datamodule.encode_file(
                self.target_path, "balance.probe.target_path"
            )
            self.target_index = np.arange(len(self.target_split), dtype=np.int64)
        self.rows = m + (1 if self.target is not None else 0)
        matrix = self._buffer()
        log.info(
            "gradient probe: %d x %d fp32 matrix (%.1f MiB) over %d of %d parameters",
            self.rows,
            self.num_probed,
            matrix.numel() * 4 / 2**20,
            self.num_probed,
            self.num_params,
        )

    def _buffer(self) -> torch.Tensor:
        """The ``[rows, P]`` fp32 matrix on the parameters' device, allocated once.

        Reallocated only when the model moved after :meth:`setup` (Lightning moves it to the
        accelerator after the callbacks' ``setup``) or after :meth:`teardown`.
        """
        device = self.named[0][1].device
        if self.matrix is None or self.matrix.device != device:
            self.matrix = None  # free the old buffer before allocating the new one
            self.matrix = torch.zeros(
                self.rows, self.num_probed, dtype=torch.float32, device=device
            )
        return self.matrix

    # ------------------------------------------------------------------ probing
    def draw(self, probe: int) -> list[np.ndarray]:
        """Example indices of probe number ``probe`` on this rank: ``m`` domain batches,
        then the target batch when a target is configured.

        Each batch is ``batch_size`` examples drawn without replacement (all of them when
        the set is smaller), from ``numpy`` generators seeded by ``(seed, rank, probe,
        row)``: a pure function of the probe number, so a resumed run redraws them.
        """
        sets = [*self.domain_index]
        if self.target is not None:
            sets.append(self.target_index)
        out = []
        for row, ix in enumerate(sets):
            if ix.size <= self.batch_size:
                out.append(ix)
                continue
            rng = np.random.default_rng([self.seed, self.rank, probe, row])
            out.append(np.sort(rng.choice(ix, size=self.batch_size, replace=False)))
        return out

    def _grad_row(
        self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor], row: torch.Tensor
    ) -> None:
        """Write the flattened gradient of the batch's mean loss into ``row``."""
        loss_sum, tokens = pl_module.example_losses(batch)
        loss = (loss_sum / tokens.clamp_min(1)).mean()
        params = [p for _, p in self.named]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = p.numel()
            if g is None:  # a parameter this loss does not reach
                row[offset : offset + n].zero_()
            else:
                row[offset : offset + n].copy_(g.reshape(-1))
            offset += n
        self.meter.add_flops(6.0 * self.num_params * batch_positions(batch))

    def probe(self, pl_module: L.LightningModule) -> torch.Tensor:
        """Fill the matrix for the current model (this rank only; no reduction).

        Returns:
            The ``[rows, P]`` matrix.
        """
        matrix = self._buffer()
        device = matrix.device
        batches = self.draw(self.probes)
        plugin = getattr(getattr(self, "_trainer", None), "precision_plugin", None)
        context = plugin.forward_context() if plugin is not None else nullcontext()
        with probing(pl_module), context:
            for row, idx in enumerate(batches):
                if idx.size == 0:
                    matrix[row].zero_()
                    continue
                split = self.train_split if row < len(self.domain_index) else self.target_split
                self._grad_row(pl_module, batch_rows(split, idx, device), matrix[row])
        self.probes += 1
        return matrix

    def collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> dict[str, Any]:
        """Probe the current model; average the matrix over ranks."""
        matrix = self.probe(pl_module)
        if reduce_fn is not None and self.world_size > 1:
            # Row by row: a reduction may need a copy of its input, and one row of |θ| fits
            # where a second (m+1) x |θ| matrix may not.
            for row in matrix:
                row.copy_(reduce_fn(row.clone())).div_(self.world_size)
        m = len(self.domain_index)
        out: dict[str, Any] = {
            "domain_grads": matrix[:m],
            "grad_present": self.present.clone(),
        }
        if self.target is not None:
            out["target_grad"] = matrix[m]
        return out

    # ------------------------------------------------------------------ state
    def teardown(self) -> None:
        """Free the matrix."""
        self.matrix = None

    def state_dict(self) -> dict[str, Any]:
        """The probe counter (the draws are a function of it)."""
        return {"probes": self.probes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.probes = int(state.get("probes", 0))
