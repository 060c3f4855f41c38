"""AdamW with linear warm-up and cosine decay: the optimizer of every rnb LightningModule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["adamw_warmup_cosine"]


def adamw_warmup_cosine(
    module: nn.Module,
    max_steps: int | None,
    lr: float,
    weight_decay: float,
    betas: Sequence[float],
    warmup_steps: int,
    min_lr_ratio: float,
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` result: AdamW + per-step warm-up/cosine schedule.

    Biases and norm parameters (1-d, or named ``norm``/``ln_``) get no weight decay.

    Args:
        module: the model whose trainable parameters are optimised.
        max_steps: the run's ``trainer.max_steps`` (the cosine's length); ``None`` or
            ``<= 0`` = 10 000 steps.
        lr: peak learning rate (``model.lr``).
        weight_decay: AdamW weight decay (``model.weight_decay``).
        betas: AdamW betas (``model.betas``).
        warmup_steps: linear warm-up steps (``model.warmup_steps``).
        min_lr_ratio: cosine floor as a fraction of ``lr`` (``model.min_lr_ratio``; 1.0 =
            constant after warm-up).

    Returns:
        ``{"optimizer": AdamW, "lr_scheduler": {"scheduler": LambdaLR, "interval": "step"}}``.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name or "ln_" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=tuple(betas),
    )
    total = max_steps if max_steps and max_steps > 0 else 10_000
    warm, floor = max(0, warmup_steps), min_lr_ratio

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
