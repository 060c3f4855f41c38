"""Sizes of the capture's persistent tensors: accumulator shape and memory estimates."""

from __future__ import annotations

from torch import nn

from rnb.balance.capture.rowbuffer import buffer_rows, buffer_size_mb

__all__ = ["MODES", "accumulator_dims", "check_args", "estimate_memory_bytes", "resolve_fused"]

MODES = ("exact", "sketch")


def check_args(
    head: nn.Module,
    num_domains: int,
    mode: str,
    sketch_out: int,
    sketch_in: int,
    rows_per_example: int | None,
    include_bias: bool,
) -> None:
    """Validate a capture's arguments.

    Raises:
        ValueError: naming the ``balance.capture.*`` (or ``model.*``) key to change.
    """
    if not isinstance(head, nn.Linear):
        raise ValueError(f"model.head_module: need an nn.Linear, got {type(head).__name__}")
    check_mode(mode)
    if num_domains < 1:
        raise ValueError(f"num_domains: need >= 1, got {num_domains}")
    if sketch_out < 1 or sketch_in < 1:
        raise ValueError(
            f"balance.capture.sketch_out/sketch_in: need >= 1, got {sketch_out}, {sketch_in}"
        )
    if rows_per_example is not None and rows_per_example < 1:
        raise ValueError(
            f"balance.capture.rows_per_example: need >= 1 or null, got {rows_per_example}"
        )
    if include_bias and head.bias is None:
        raise ValueError("balance.capture.include_bias: the head has no bias")


def check_mode(mode: str) -> None:
    """Raise ValueError naming ``balance.capture.mode`` unless ``mode`` is one of `MODES`."""
    if mode not in MODES:
        raise ValueError(f"balance.capture.mode: must be one of {MODES}, got {mode!r}")


def accumulator_dims(
    V: int, d: int, mode: str, k_out: int, k_in: int, bias: bool
) -> tuple[int, int]:
    """Accumulator side lengths (rows over V, columns over d [+1 for the bias])."""
    d_aug = d + int(bias)
    if mode == "exact":
        return V, d_aug
    return min(V, k_out), min(d_aug, k_in)


def estimate_memory_bytes(
    num_domains: int,
    V: int,
    d: int,
    mode: str,
    sketch_out: int = 512,
    sketch_in: int = 256,
    include_bias: bool = False,
    buffer_mb: float | str = "auto",
) -> int:
    """Bytes a capture with these sizes holds (accumulators, counts, sketch, row buffer).

    Raises:
        ValueError: ``mode`` is not one of `MODES`.
    """
    check_mode(mode)
    vk, dk = accumulator_dims(V, d, mode, sketch_out, sketch_in, include_bias)
    d_aug = d + int(include_bias)
    sketch = (V if vk < V else 0) + (dk * d_aug if d_aug > dk else 0)
    mb = buffer_size_mb(buffer_mb, num_domains, vk, dk)
    buffered = 8 * (vk + dk) * buffer_rows(mb, vk, dk)
    held = num_domains * vk * dk + (sketch if mode == "sketch" else 0)
    return 4 * held + 8 * num_domains + buffered


def resolve_fused(fused: bool | str, mode: str, rows_per_example: int | None) -> bool:
    """Whether the capture computes the head's weight gradient per domain (`fused`).

    ``"auto"``: fused wherever it applies (exact mode, no ``rows_per_example``). Measured
    (``benchmarks/capture_microbench.py``, 1 thread, interleaved, machine shared): metered
    capture time per step fused vs hooks 81 vs 967 ms (V=8192, d=128, m=8, all tokens;
    step ratio 1.017 vs 1.121), 73 vs 338 ms (V=4096, d=64, m=32; 1.067 vs 1.119) and,
    with the loss on half of the tokens, 30 ms vs 94 ms (products every step) / 118 ms
    (buffered, the previous default) at V=4096, d=64, m=32 (mean step ratio 1.022 vs 1.081 /
    1.118). The per-domain memory traffic it adds stays below the product it saves there.

    Raises:
        ValueError: ``fused`` is not True/False/"auto", or True where it cannot apply.
    """
    if fused == "auto":
        return mode == "exact" and rows_per_example is None
    if not isinstance(fused, bool):
        raise ValueError(f"balance.capture.fused: need true, false or auto, got {fused!r}")
    if fused and (mode != "exact" or rows_per_example is not None):
        raise ValueError(
            "balance.capture.fused: true needs balance.capture.mode=exact and "
            f"balance.capture.rows_per_example=null (got mode={mode!r}, "
            f"rows_per_example={rows_per_example}): a sketch or a row subsample is not the "
            "head's weight gradient"
        )
    return fused
