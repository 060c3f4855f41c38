"""Lightning's FSDP strategy with the two things an rnb run needs from it.

`FSDPStrategy` is ``lightning.pytorch.strategies.FSDPStrategy`` (FSDP1, every keyword of
it works: ``sharding_strategy``, ``auto_wrap_policy``, ``state_dict_type``, …) plus:

* **Gradient clipping by norm.** Lightning's ``FSDPPrecision.clip_grad_by_norm`` raises
  (``torch.nn.utils.clip_grad_norm_`` over local shards is wrong: each rank holds only part of
  every gradient), so ``trainer.gradient_clip_val`` would fail with FSDP. Here the precision
  plugin calls the root module's ``FullyShardedDataParallel.clip_grad_norm_``, which all-reduces
  the shards' squared norms: the same global norm as DDP's ``clip_grad_norm_``, so an FSDP run
  trains like the DDP run of the same config.
* **One root unit for every stage.** ``rnb-train`` evaluates before training
  (``trainer.validate``, then ``trainer.fit``); the first stage wraps the blocks in place. A
  later stage gets the root unit of the first back instead of a second wrapper over the
  root's already sharded parameters (Lightning 2.6.6's own strategy, read not run, skips
  wrapping a root whose children are wrapped: the root's parameters, embeddings and head,
  would belong to no FSDP unit and so get no gradient synchronisation).
* **32-true left as built.** ``FSDPPrecision`` casts the module to fp32 for ``32-true``, float64
  metric states included; here, as under DDP, a ``32-true`` module is not cast.
* **CPU processes (gloo).** Lightning 2.6 refuses ``accelerator=cpu`` for its FSDP strategy
  (a check on the exact class, from the days FSDP needed CUDA), while torch 2.13 shards on CPU
  with gloo. The check does not apply to a subclass, so ``trainer=fsdp_cpu`` runs the sharded
  path on CPU (a correctness check, not a way to train faster). Two more CPU gaps are closed
  here: Lightning passes ``device_id=None`` on CPU, which FSDP reads as "find an accelerator"
  (the CPU device itself is passed instead), and its full (one-file) checkpoints gather with
  ``offload_to_cpu=True``, which segfaults in torch 2.13 when the parameters already live on
  the CPU (measured: a 2-process gloo run, rank 0 in ``FSDP.state_dict``); on CPU they are
  gathered without the offload, which changes nothing there.

Gradient capture needs nothing from the strategy: the head's parameters are sharded, but
R&B's capture reads the head's input activations and output gradients (both whole on every
rank, for that rank's batch) and sums the accumulators across ranks, as under DDP.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy as _LightningFSDP
from torch import nn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    OptimStateKeyType,
    StateDictType,
)
from torch.optim import Optimizer

__all__ = ["FSDPStrategy", "ShardedClipPrecision"]


class ShardedClipPrecision(FSDPPrecision):
    """``FSDPPrecision`` whose clip-by-norm uses the root FSDP module (global norm).

    Args:
        precision: Lightning precision flag (``32-true``, ``bf16-mixed``, …).
        scaler: fp16 ``ShardedGradScaler`` (only for ``16-mixed``).
    """

    def __init__(self, precision: Any, scaler: Any = None) -> None:
        super().__init__(precision, scaler=scaler)
        self.root: nn.Module | None = None

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Leave a ``32-true`` module as built, as Lightning's plain precision plugin does under
        DDP; ``FSDPPrecision`` casts every floating tensor to fp32, float64 metric states
        included (rnb's per-domain eval loss sums in float64 and then fails to update)."""
        if self.precision == "32-true":
            return module
        return super().convert_module(module)

    def clip_grad_by_norm(self, optimizer: Optimizer, clip_val: int | float) -> None:
        """Scale all gradients so their global L2 norm is at most ``clip_val``.

        Raises:
            RuntimeError: called before the strategy wrapped the model.
        """
        if self.root is None:
            raise RuntimeError("ShardedClipPrecision: the FSDP root module is not set yet")
        # FullyShardedDataParallel.clip_grad_norm_: a collective, every rank calls it.
        self.root.clip_grad_norm_(float(clip_val))  # type: ignore[operator]


class FSDPStrategy(_LightningFSDP):
    """Lightning's ``FSDPStrategy`` with clip-by-norm and CPU (gloo) support; see the module
    docstring. Takes exactly Lightning's arguments."""

    def setup(self, trainer: Any) -> None:
        plugin = self.precision_plugin
        if not isinstance(plugin, ShardedClipPrecision):
            self.precision_plugin = ShardedClipPrecision(plugin.precision, scaler=plugin.scaler)
        super().setup(trainer)

    #: The root FSDP unit of the first stage, reused by later ones (see `_setup_model`).
    _root: FullyShardedDataParallel | None = None

    def _setup_model(self, model: nn.Module) -> nn.Module:
        root = self._root
        if root is not None and root.module is model:
            # A later stage (fit after the initial trainer.validate): the blocks are wrapped
            # in place, the root wrapper is not. Re-wrapping would flatten the root's already
            # sharded parameters as if whole; Lightning would skip the root instead (then the
            # embeddings and the head train unsynchronised). Reuse the root unit.
            model = root
        elif not isinstance(model, FullyShardedDataParallel):
            # Lightning passes device_id=root_device.index, None on CPU, which FSDP reads as
            # "find an accelerator" and fails; the device itself works on CPU and GPU.
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=self.root_device,
                **self.kwargs,
            )
        # applied above: Lightning would warn that a wrapped model ignores the policy
        self.kwargs.pop("auto_wrap_policy", None)
        wrapped = super()._setup_model(model)
        self._root = wrapped
        plugin = self.precision_plugin
        if isinstance(plugin, ShardedClipPrecision):
            plugin.root = wrapped
        return wrapped

    def _cpu_full(self) -> bool:
        return self.root_device.type == "cpu" and self._state_dict_type == "full"

    def _gather_on_cpu(self) -> AbstractContextManager:
        """Full state dicts gathered on rank 0 without ``offload_to_cpu`` (see module doc)."""
        assert self.model is not None
        return FullyShardedDataParallel.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=False, rank0_only=True),
            FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True),
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self._cpu_full():
            return super().lightning_module_state_dict()
        assert self.model is not None
        with self._gather_on_cpu():
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> Mapping[str, Any]:
        if not self._cpu_full():
            return super().optimizer_state(optimizer)
        assert self.model is not None
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # unwrap LightningOptimizer
        with self._gather_on_cpu():
            state = FullyShardedDataParallel.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # the standard (param-id keyed) format, as Lightning's
                state = FullyShardedDataParallel.rekey_optim_state_dict(
                    state, OptimStateKeyType.PARAM_ID, self.model
                )
            return state
