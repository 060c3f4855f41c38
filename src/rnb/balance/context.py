"""What a strategy is told about the run before training: :class:`MixtureContext`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from rnb.balance.strategies.base import MixtureContext

__all__ = ["current_lr", "mixture_context"]


def mixture_context(trainer: L.Trainer, dm: Any, output_dir: Path) -> MixtureContext:
    """The :class:`MixtureContext` of a run from its DataModule and trainer.

    ``example_budget`` is ``max_steps ×`` the global batch size (``None`` without a step
    limit); ``domain_tokens`` counts loss-bearing tokens per domain in the training split.
    """
    return MixtureContext(
        list(dm.domain_names),
        np.asarray(dm.domain_sizes),
        np.asarray(dm.eval_proportions),
        seed=dm.seed,
        output_dir=output_dir,
        domain_fingerprint=MixtureContext.domain_definition(
            getattr(dm, "domain_field", None), getattr(dm, "regroup_fingerprint", None)
        ),
        domain_tokens=_domain_tokens(dm),
        example_budget=(
            int(trainer.max_steps) * int(dm.batch_size) * int(trainer.world_size)
            if trainer.max_steps and trainer.max_steps > 0
            else None
        ),
        max_steps=int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None,
    )


def _domain_tokens(dm: Any) -> np.ndarray | None:
    """Loss-bearing tokens per domain of the training split (for UniMax's budget)."""
    own = getattr(dm, "domain_tokens", None)  # a DataModule that counts them itself
    if own is not None:
        return np.asarray(own, dtype=np.float64)
    data = getattr(dm, "train_data", None)
    labels = getattr(data, "labels", None)
    if labels is None:
        return None
    per_example = (np.asarray(labels)[:, 1:] != -100).sum(axis=1)
    return np.bincount(np.asarray(data.domain), weights=per_example, minlength=len(dm.domain_names))


def current_lr(trainer: L.Trainer) -> float | None:
    """Learning rate of the first parameter group (DGA/DoGE scale their step by it)."""
    optimizers = getattr(trainer, "optimizers", None) or []
    if not optimizers:
        return None
    return float(optimizers[0].param_groups[0]["lr"])
