"""Deferred per-domain products of captured head rows (gradient capture).

Each backward's selected rows (``δ`` rows, sketched if configured, and the matching input
rows ``a``) are copied into one preallocated buffer; the per-domain products
``Σ_r δ_rᵀ a_r`` run when the buffer is full or a result is read. Why: per step, ``m``
small products each read and write a whole ``V×d`` accumulator and the finiteness check
needs its own reductions; measured on the default model that was ~0.9 ms of a ~65 ms step.
Flushing many steps at once sorts the rows by domain (one gather), checks them with one
reduction, and runs one product per domain, so accumulator traffic and the per-op cost
(tens of microseconds each right after the backward's large kernels) are paid once per
flush. The sums are the same up to floating-point summation order.

Non-finite steps keep their meaning (method.md: skipped and counted, never accumulated):
when a flush sees a non-finite value it finds the offending steps and drops all of their
rows and example counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["RowBuffer", "buffer_rows", "buffer_size_mb"]


@dataclass
class _Step:
    start: int
    end: int
    row_domains: np.ndarray  # int64 [end - start]
    example_counts: torch.Tensor  # float64 [m]


class RowBuffer:
    """Holds up to ``capacity`` rows of ``δ`` (width ``vk``) and ``a`` (width ``dk``).

    Args:
        capacity: Rows held before a flush.
        vk: Width of a (sketched) ``δ`` row.
        dk: Width of a (projected) ``a`` row.
        device: Where the buffer lives (the head's device).
    """

    def __init__(self, capacity: int, vk: int, dk: int, device: torch.device) -> None:
        self.capacity = int(capacity)
        self.vk, self.dk = int(vk), int(dk)
        self.device = torch.device(device)
        self._delta: torch.Tensor | None = None  # allocated on first use
        self._a: torch.Tensor | None = None
        # Flushes gather into a persistent scratch of the same size: a fresh allocation of
        # several MB per flush costs page faults every time.
        self._delta_sorted: torch.Tensor | None = None
        self._a_sorted: torch.Tensor | None = None
        self.fill = 0
        self._steps: list[_Step] = []

    def nbytes(self) -> int:
        """Bytes of the buffer and its sorting scratch (allocated on first use)."""
        return 2 * 4 * self.capacity * (self.vk + self.dk)

    def to(self, device: torch.device) -> None:
        """Follow the head to another device (only while empty)."""
        if self.fill:
            raise RuntimeError("RowBuffer: cannot move a non-empty buffer; flush first")
        self.device = torch.device(device)
        self._delta = self._a = self._delta_sorted = self._a_sorted = None

    @property
    def pending(self) -> bool:
        """Whether steps wait for a flush."""
        return bool(self._steps)

    def fits(self, n: int) -> bool:
        """Whether ``n`` more rows fit without a flush."""
        return self.fill + n <= self.capacity

    def slot(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the next ``n`` free rows (``δ``, ``a``) to write into; `commit` them."""
        if self._delta is None or self._a is None:
            self._delta, self._delta_sorted = (
                torch.empty(self.capacity, self.vk, device=self.device) for _ in range(2)
            )
            self._a, self._a_sorted = (
                torch.empty(self.capacity, self.dk, device=self.device) for _ in range(2)
            )
        end = self.fill + n
        return self._delta[self.fill : end], self._a[self.fill : end]

    def commit(self, n: int, row_domains: np.ndarray, example_counts: torch.Tensor) -> None:
        """Record the ``n`` rows just written to `slot` as one step."""
        self._steps.append(_Step(self.fill, self.fill + n, row_domains, example_counts))
        self.fill += n

    def clear(self) -> None:
        """Drop buffered rows without accumulating them."""
        self.fill = 0
        self._steps.clear()

    def flush(self, accumulators: list[torch.Tensor]) -> tuple[torch.Tensor | None, int]:
        """Add the buffered rows into the per-domain accumulators and empty the buffer.

        Args:
            accumulators: ``[vk, dk]`` view per domain.

        Returns:
            (example counts of the accumulated steps or None if nothing was buffered,
            number of steps dropped for non-finite values).
        """
        if not self._steps:
            self.clear()
            return None, 0
        steps = self._steps
        dropped = 0
        if self.fill:
            delta, a, _ = rows = self._gather(steps)
            if not bool((delta.sum() + a.sum()).isfinite()):
                good = [s for s in steps if self._finite(s)]
                dropped = len(steps) - len(good)
                steps = good
                rows = self._gather(steps) if any(s.end > s.start for s in steps) else None
            if rows is not None:
                delta, a, segments = rows
                delta_t = delta.T
                for dom, start, end in segments:
                    accumulators[dom].addmm_(delta_t[:, start:end], a[start:end])
        counts = torch.stack([s.example_counts for s in steps]).sum(0) if steps else None
        self.clear()
        return counts, dropped

    def _finite(self, step: _Step) -> bool:
        assert self._delta is not None and self._a is not None
        d, a = self._delta[step.start : step.end], self._a[step.start : step.end]
        return bool((d.sum() + a.sum()).isfinite())

    def _gather(self, steps: list[_Step]) -> tuple[torch.Tensor, torch.Tensor, list]:
        """The steps' rows sorted by domain (one gather each for δ and a) and the segments."""
        assert self._delta is not None and self._a is not None
        assert self._delta_sorted is not None and self._a_sorted is not None
        doms = np.concatenate([s.row_domains for s in steps])
        pos = np.concatenate([np.arange(s.start, s.end) for s in steps])
        order = np.argsort(doms, kind="stable")
        idx = torch.from_numpy(pos[order]).to(self.device, non_blocking=True)
        bounds = np.flatnonzero(np.diff(doms[order])) + 1
        starts = [0, *bounds.tolist()]
        ends = [*starts[1:], doms.size]
        sorted_doms = doms[order]
        segments = [(int(sorted_doms[s]), s, e) for s, e in zip(starts, ends, strict=True)]
        n = doms.size
        delta = torch.index_select(self._delta, 0, idx, out=self._delta_sorted[:n])
        a = torch.index_select(self._a, 0, idx, out=self._a_sorted[:n])
        return delta, a, segments


def buffer_size_mb(buffer_mb: float | str, m: int, vk: int, dk: int) -> float:
    """Row-buffer size in MiB; ``"auto"``: 8× the accumulators, within [1, 32] MiB.

    A flush reads and writes every domain's ``vk×dk`` accumulator, so the more rows a flush
    carries, the less that traffic costs per row (default model, 6 domains: 6 MiB → 0.68,
    12 → 0.57, 32 → 0.48 ms/step of flushing; 20 domains: 8 → 1.0, 32 → 0.57). The cap
    keeps a GPT-Neo-125M-sized sketch (m = 100, 53 MB of accumulators) under 100 MB in all.
    """
    if isinstance(buffer_mb, str):
        if buffer_mb != "auto":
            raise ValueError(
                f"balance.capture.buffer_mb: need a number >= 0 or 'auto', got {buffer_mb!r}"
            )
        return min(32.0, max(1.0, 8 * 4 * m * vk * dk / 2**20))
    if not float(buffer_mb) >= 0:
        raise ValueError(f"balance.capture.buffer_mb: need >= 0 or 'auto', got {buffer_mb}")
    return float(buffer_mb)


def buffer_rows(buffer_mb: float, vk: int, dk: int) -> int:
    """Rows of ``δ`` and ``a`` (each held twice: buffer + sorting scratch) in ``buffer_mb``."""
    return int(buffer_mb * 2**20) // (2 * 4 * (vk + dk))
