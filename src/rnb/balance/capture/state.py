"""Checkpoint state of a `HeadGradientCapture` (mid-round resume)."""

from __future__ import annotations

from typing import Any

import torch

from rnb.balance.capture import sizes

__all__ = ["capture_state", "config_tensor", "load_capture_state"]

_FIELDS = "[m, V, d, mode, sketch_out, sketch_in, rows_per_example, seed, include_bias]"


def config_tensor(cap: Any) -> torch.Tensor:
    """The sizes that must match for saved accumulators to be reusable (``_FIELDS``)."""
    rpe = cap.rows_per_example or 0
    return torch.tensor(
        [cap.num_domains, cap.V, cap.d, sizes.MODES.index(cap.mode), cap.sketch_out,
         cap.sketch_in, rpe, cap.seed, int(cap.include_bias)], dtype=torch.long,
    )  # fmt: skip


def capture_state(cap: Any) -> dict:
    """Tensors and ints only, loadable with ``torch.load(weights_only=True)``. Whether the
    capture is fused is not part of it: both paths accumulate the same sums."""
    return {
        "accumulators": cap.accumulators.detach().cpu().clone(),
        "counts": cap.counts.clone(),
        "skipped_nonfinite": int(cap.skipped_nonfinite),
        "config": config_tensor(cap),
        "rng_state": cap._gen.get_state(),
    }


def load_capture_state(cap: Any, state: dict) -> None:
    """Restore `capture_state` output into ``cap``.

    Raises:
        ValueError: the saved configuration differs from ``cap``'s.
    """
    config = config_tensor(cap)
    if not torch.equal(torch.as_tensor(state["config"]), config):
        raise ValueError(
            "balance: gradient-capture checkpoint was written with a different "
            f"configuration {state['config'].tolist()} vs {config.tolist()} {_FIELDS}"
        )
    if cap._buffer is not None:
        cap._buffer.clear()
    cap._acc.copy_(state["accumulators"])
    cap._counts.copy_(state["counts"])
    cap._skipped = int(state["skipped_nonfinite"])
    cap._gen.set_state(state["rng_state"])
