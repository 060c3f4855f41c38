"""Which head-output rows of one forward feed which domain's gradient (gradient capture).

Planning runs on the host, once per forward, on ``B·T``-sized index arrays only. It uses
NumPy rather than torch on purpose: the arrays are tiny (a few thousand entries) and a torch
CPU op costs several microseconds of dispatch each, which on a small model made planning a
visible share of the step (~0.5 ms of a ~60 ms step with torch, ~0.05 ms with NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["RowPlan", "parse_batch", "plan_rows"]


@dataclass
class RowPlan:
    """The rows of one forward, grouped for the per-domain products.

    Attributes:
        idx: Flat row indices to gather, grouped by domain; None = use ``δ`` in place.
        segments: ``(domain, start, end)`` ranges into the gathered (or in-place) rows.
        row_weight: Per-row weight applied to the input ``a`` (0 = excluded); None = all 1.
        example_counts: float64 ``[m]``, examples per domain in this forward.
        rows: Rows that contribute (for FLOP accounting).
        row_domains: int64 ``[len(idx)]`` domain of each gathered row (gather layout only).
    """

    idx: torch.Tensor | None
    segments: list[tuple[int, int, int]]
    row_weight: torch.Tensor | None
    example_counts: torch.Tensor
    rows: int
    row_domains: np.ndarray | None = None


def parse_batch(
    domain_ids: torch.Tensor | np.ndarray, row_mask: torch.Tensor | np.ndarray | None, m: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Host arrays of a batch's ``[B]`` domain ids (int64) and ``[B, T]`` row mask (bool).

    An input that already is an int64 (bool) host array is returned as a view, not copied:
    the capture only reads them, and a copy per step would cost more than the check.

    Raises:
        ValueError: an id outside ``[0, m)`` or a mask whose first dimension is not ``B``.
    """
    dom = _host(domain_ids).astype(np.int64, copy=False).reshape(-1)
    if dom.size and (int(dom.min()) < 0 or int(dom.max()) >= m):
        raise ValueError(
            f"domain_ids: must lie in [0, {m}) (num_domains), got "
            f"min {int(dom.min())}, max {int(dom.max())}"
        )
    if row_mask is None:
        return dom, None
    mask = _host(row_mask).astype(bool, copy=False)
    if mask.shape[0] != dom.size:
        raise ValueError(f"row_mask: need [{dom.size}, T], got {tuple(mask.shape)}")
    return dom, mask.reshape(dom.size, -1)


def plan_rows(
    dom: np.ndarray,
    mask: np.ndarray | None,
    T: int,
    num_domains: int,
    rows_per_example: int | None = None,
    gen: torch.Generator | None = None,
    spans: bool = False,
) -> RowPlan:
    """Plan the capture of one forward. Three layouts, chosen by cost:

    - *gather* (at most half the rows selected, e.g. loss on responses only, or token
      subsampling): the selected rows of ``δ`` are copied grouped by domain, one product per
      present domain.
    - *in place* (otherwise): no copy of ``δ`` (a gather of a large ``δ`` costs more than the
      products); one product per run of consecutive same-domain examples, excluded rows get
      weight 0 on the cheap ``a`` side.
    - *spans* (with ``spans=True``, a mask and no subsample, when the selected rows form at
      most `MAX_SPANS_PER_EXAMPLE` runs per example): no copy of ``δ`` and no masked row in a
      product: one product per run of consecutive selected rows of one domain (a right-padded
      LM batch: one per example, or fewer where same-domain examples meet). The fused capture
      uses it: there the products *are* the weight gradient, and a gather of ``δ`` is work
      plain autograd never does.

    Args:
        dom: int64 ``[B]`` domain of each example.
        mask: bool ``[B, T]`` rows whose ``δ`` may be non-zero, or None for all.
        T: rows (tokens) per example.
        num_domains: ``m``.
        rows_per_example: unbiased uniform subsample of that many valid rows per example
            (weighted ``valid / kept``), or None.
        gen: torch generator of the subsampling keys (kept in torch so that its state is
            checkpointed with the capture).
        spans: Allow the *spans* layout.
    """
    B = dom.size
    counts = torch.from_numpy(np.bincount(dom, minlength=num_domains).astype(np.float64))
    subsample = rows_per_example is not None and rows_per_example < T
    keep = _subsample(mask, B, T, rows_per_example, gen) if subsample else mask
    if keep is None:
        return RowPlan(None, _runs(dom, T), None, counts, B * T)
    if spans and not subsample:
        segments = _spans(dom, keep)
        if segments is not None:
            return RowPlan(None, segments, None, counts, int(keep.sum()))
    kept = keep.sum(1)
    n_kept = int(kept.sum())
    w_ex = None
    if subsample:
        valid = np.full(B, T) if mask is None else mask.sum(1)
        w_ex = valid / np.maximum(kept, 1)  # 1 where an example has fewer valid rows than k
    if 2 * n_kept > B * T:
        if w_ex is None and n_kept == B * T:
            return RowPlan(None, _runs(dom, T), None, counts, n_kept)
        weight = keep if w_ex is None else keep * w_ex[:, None]
        return RowPlan(None, _runs(dom, T), _tensor(weight.reshape(-1)), counts, n_kept)
    order = np.argsort(dom, kind="stable")
    idx = (order[:, None] * T + np.arange(T))[keep[order]]
    ends = np.cumsum(np.bincount(dom, weights=kept, minlength=num_domains)).astype(int).tolist()
    starts = [0, *ends[:-1]]
    segments = [(i, s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True)) if e > s]
    weight = None if w_ex is None else _tensor(np.repeat(w_ex[order], kept[order]))
    row_domains = np.repeat(dom[order], kept[order])
    return RowPlan(torch.from_numpy(idx), segments, weight, counts, n_kept, row_domains)


def _subsample(
    mask: np.ndarray | None, B: int, T: int, k: int, gen: torch.Generator | None
) -> np.ndarray:
    """``k`` uniformly drawn valid rows per example (all valid rows when fewer)."""
    valid = np.ones((B, T), dtype=bool) if mask is None else mask
    keys = torch.rand(B, T, generator=gen).numpy()
    keys[~valid] = 2.0  # invalid rows sort last
    picked = np.zeros((B, T), dtype=bool)
    np.put_along_axis(picked, np.argpartition(keys, k - 1, axis=1)[:, :k], True, axis=1)
    return picked & valid


def _runs(dom: np.ndarray, T: int) -> list[tuple[int, int, int]]:
    """(domain, first row, end row) of each run of consecutive same-domain examples."""
    cuts = np.flatnonzero(dom[1:] != dom[:-1]) + 1
    starts = [0, *cuts.tolist()]
    ends = [*starts[1:], dom.size]
    ids = dom.tolist()
    return [(ids[s], s * T, e * T) for s, e in zip(starts, ends, strict=True)]


#: More runs of selected rows per example than this (e.g. a mask on every other token) and
#: the spans layout would run many tiny products: the gather / in-place layouts are used.
MAX_SPANS_PER_EXAMPLE = 4


def _spans(dom: np.ndarray, keep: np.ndarray) -> list[tuple[int, int, int]] | None:
    """(domain, first row, end row) of each maximal run of selected rows of one domain, in
    flat row order (``b·T + t``); None when there are more than `MAX_SPANS_PER_EXAMPLE` per
    example on average."""
    B, T = keep.shape
    flat = keep.reshape(-1)
    row_dom = np.repeat(dom, T)
    # A run starts where a selected row follows an unselected one or a row of another domain.
    prev_keep = np.concatenate([[False], flat[:-1]])
    prev_dom = np.concatenate([[-1], row_dom[:-1]])
    starts = np.flatnonzero(flat & ~(prev_keep & (prev_dom == row_dom)))
    if starts.size > MAX_SPANS_PER_EXAMPLE * max(B, 1):
        return None
    next_keep = np.concatenate([flat[1:], [False]])
    next_dom = np.concatenate([row_dom[1:], [-1]])
    ends = np.flatnonzero(flat & ~(next_keep & (next_dom == row_dom))) + 1
    doms = row_dom[starts].tolist()
    return list(zip(doms, starts.tolist(), ends.tolist(), strict=True))


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _host(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A host NumPy view of ``x`` (copies only device tensors)."""
    if isinstance(x, np.ndarray):
        return x
    return torch.as_tensor(x).detach().cpu().numpy()
