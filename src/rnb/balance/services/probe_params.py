"""What the gradient probe differentiates: the chosen parameters, in eval mode with grads on."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = ["probing", "select_parameters"]


def select_parameters(
    module: torch.nn.Module, patterns: str | Sequence[str] | None
) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters whose ``named_parameters()`` name matches any pattern.

    Args:
        module: the LightningModule.
        patterns: ``fnmatch`` patterns (``balance.probe.params``), e.g. ``"*.h.1.*"``;
            ``None`` = every trainable parameter. Tied weights count once.

    Raises:
        ValueError: no trainable parameter matches (lists some names).
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if patterns is None:
        return named
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, q) for q in pats)]
    if not chosen:
        names = [n for n, _ in named]
        shown = names[:12] + (["..."] if len(names) > 12 else [])
        raise ValueError(
            f"balance.probe.params={pats} matches no trainable parameter; names look like {shown}"
        )
    return chosen


@contextmanager
def probing(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode with gradients on; every submodule's own mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, was_training in modes:
            m.training = was_training
