"""Which mixing strategies run under a sharded model (FSDP), and a clear refusal for the rest.

Under FSDP (``trainer=gpu_fsdp`` / ``fsdp_cpu``) a rank holds only a shard of each parameter
between forwards; only the root FSDP unit's own forward gathers them. The Gram capture reads
the head's activations and output gradients inside the training step, so R&B (and every
strategy that needs no extra model pass) is exact under FSDP (``tests/integration/test_fsdp.py``).
The signal services that run the model themselves (gradient probes, probe evaluations,
reference losses) and detours (sandboxed or in-line training runs) call it outside that
forward and would meet sharded weights (``'weight' must be 2-D``), so they are refused at
setup, before any training step, naming the strategy and the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy

from rnb.balance.strategies.base import MixingStrategy

__all__ = ["check_sharding_support"]


def check_sharding_support(
    trainer: L.Trainer, strategy: MixingStrategy, services: Sequence[Any]
) -> None:
    """Refuse a strategy that runs the model outside the training step under FSDP.

    Args:
        trainer: The run's trainer (its ``strategy`` is inspected).
        strategy: The mixing strategy.
        services: The signal services built for ``strategy.needs``.

    Raises:
        ValueError: FSDP with signal services or detours (names them and ``trainer=gpu``).
    """
    if not isinstance(trainer.strategy, FSDPStrategy):
        return
    parts = [type(s).__name__ for s in services]
    if type(strategy).plan_detours is not MixingStrategy.plan_detours:
        parts.append("detours (short training runs)")
    if parts:
        raise ValueError(
            f"strategy {type(strategy).__name__} needs {', '.join(parts)}, which run the model "
            "outside the training step: not supported under FSDP (trainer.strategy is "
            f"{type(trainer.strategy).__name__}) yet. Use trainer=gpu (DDP), or a strategy that "
            "needs no extra model pass (rnb, odm, unimax, natural, stratified, static)."
        )
