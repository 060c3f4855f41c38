"""`RowBuffer` (deferred per-domain products of the capture) against brute force.

Driven directly, because several of its states never arise through `HeadGradientCapture`
in one step (an empty flush, a flush whose every step is dropped, a move to another device).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from rnb.balance.capture.rowbuffer import RowBuffer

VK, DK, M = 3, 2, 3


def put(
    buf: RowBuffer,
    doms: list[int],
    g: torch.Generator,
    bad: bool = False,
    examples: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write one step of ``len(doms)`` random rows; ``bad``: one ``δ`` entry is inf;
    ``examples``: the step's example counts (default: one example per row).

    Returns:
        (the step's δ rows, its a rows, its example counts).
    """
    n = len(doms)
    delta, a = torch.randn(n, VK, generator=g), torch.randn(n, DK, generator=g)
    if bad:
        delta[n // 2, 1] = float("inf")
    counts = torch.from_numpy(np.bincount(doms, minlength=M).astype(np.float64))
    if examples is not None:
        counts = torch.tensor(examples, dtype=torch.float64)
    d_out, a_out = buf.slot(n)
    d_out.copy_(delta)
    a_out.copy_(a)
    buf.commit(n, np.asarray(doms, dtype=np.int64), counts)
    return delta, a, counts


def brute_force(steps: list[tuple[list[int], torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``[M, VK, DK]`` float64: Σ over every row of domain i of ``δ_rᵀ a_r``, row by row."""
    out = torch.zeros(M, VK, DK, dtype=torch.float64)
    for doms, delta, a in steps:
        for r, dom in enumerate(doms):
            out[dom] += torch.outer(delta[r].double(), a[r].double())
    return out


def accumulators() -> list[torch.Tensor]:
    return list(torch.zeros(M, VK, DK).unbind(0))


def test_fits_up_to_exactly_capacity_and_flush_empties_the_fill() -> None:
    g = torch.Generator().manual_seed(0)
    buf = RowBuffer(5, VK, DK, torch.device("cpu"))
    assert buf.fill == 0 and not buf.pending
    assert buf.fits(5) and not buf.fits(6)
    put(buf, [0, 2, 2], g)
    assert buf.fill == 3 and buf.pending
    assert buf.fits(2) and not buf.fits(3)  # 3 + 2 == capacity still fits
    put(buf, [1, 1], g)
    assert buf.fill == 5 and buf.fits(0) and not buf.fits(1)
    buf.flush(accumulators())
    assert buf.fill == 0 and not buf.pending
    assert buf.fits(5) and not buf.fits(6)  # the whole capacity is free again


def test_flush_of_an_empty_buffer_returns_none_and_zero_dropped() -> None:
    buf = RowBuffer(4, VK, DK, torch.device("cpu"))
    accs = accumulators()
    assert buf.flush(accs) == (None, 0)
    assert all(float(acc.abs().sum()) == 0.0 for acc in accs)


def test_flush_equals_per_domain_brute_force_and_sums_counts() -> None:
    g = torch.Generator().manual_seed(1)
    buf = RowBuffer(40, VK, DK, torch.device("cpu"))
    steps, total = [], torch.zeros(M, dtype=torch.float64)
    for doms in ([2, 0, 2, 2], [0], [2, 2, 0, 2, 0, 2], [1, 0, 1]):  # domains interleave
        delta, a, counts = put(buf, doms, g)
        steps.append((doms, delta, a))
        total += counts
    accs = accumulators()
    counts, dropped = buf.flush(accs)
    assert dropped == 0
    torch.testing.assert_close(counts, total)
    torch.testing.assert_close(torch.stack(accs).double(), brute_force(steps))


def test_gather_groups_rows_by_domain_into_the_persistent_scratch() -> None:
    g = torch.Generator().manual_seed(2)
    buf = RowBuffer(16, VK, DK, torch.device("cpu"))
    doms = [[2, 0, 2], [1, 1, 0, 2], [0, 2]]
    rows = [put(buf, d, g)[:2] for d in doms]
    all_doms = [x for d in doms for x in d]
    all_delta = torch.cat([r[0] for r in rows])
    all_a = torch.cat([r[1] for r in rows])
    # A flush of fewer rows than the capacity must not resize an ``out=`` view (deprecated,
    # warned by torch): the gather writes into the first rows of the scratch.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        delta, a, segments = buf._gather(buf._steps)
    assert buf._delta_sorted is not None and buf._a_sorted is not None
    # The scratch is reused (a fresh allocation per flush costs page faults every time).
    assert delta.data_ptr() == buf._delta_sorted.data_ptr()
    assert a.data_ptr() == buf._a_sorted.data_ptr()
    assert delta.shape == (len(all_doms), VK) and a.shape == (len(all_doms), DK)
    assert [s[0] for s in segments] == [0, 1, 2]
    assert segments[0][1] == 0 and segments[-1][2] == len(all_doms)
    for (dom, start, end), nxt in zip(segments, [*segments[1:], None], strict=True):
        assert nxt is None or nxt[1] == end  # contiguous segments
        want = [r for r, x in enumerate(all_doms) if x == dom]
        # Row order inside a segment does not change its product: compare as sets of rows,
        # keeping each δ row paired with its a row.
        got = torch.cat([delta[start:end], a[start:end]], dim=1)
        ref = torch.cat([all_delta[want], all_a[want]], dim=1)
        torch.testing.assert_close(got[got[:, 0].argsort()], ref[ref[:, 0].argsort()])


def test_nonfinite_step_dropped_with_its_counts_others_kept() -> None:
    g = torch.Generator().manual_seed(3)
    buf = RowBuffer(20, VK, DK, torch.device("cpu"))
    d0, a0, c0 = put(buf, [0, 1, 0], g)
    put(buf, [2, 1], g, bad=True)
    d2, a2, c2 = put(buf, [1, 2], g)
    accs = accumulators()
    counts, dropped = buf.flush(accs)
    assert dropped == 1
    torch.testing.assert_close(counts, c0 + c2)
    ref = brute_force([([0, 1, 0], d0, a0), ([1, 2], d2, a2)])
    torch.testing.assert_close(torch.stack(accs).double(), ref)
    assert buf.fill == 0 and not buf.pending


def test_flush_whose_only_step_is_nonfinite_adds_nothing() -> None:
    buf = RowBuffer(8, VK, DK, torch.device("cpu"))
    put(buf, [0, 2, 1], torch.Generator().manual_seed(4), bad=True)
    accs = accumulators()
    assert buf.flush(accs) == (None, 1)
    assert all(float(acc.abs().sum()) == 0.0 for acc in accs)
    assert buf.fill == 0 and not buf.pending


def test_only_rowless_steps_left_after_a_drop_keep_their_counts() -> None:
    """A step with no selected row (all rows masked) still counts its examples."""
    g = torch.Generator().manual_seed(5)
    buf = RowBuffer(8, VK, DK, torch.device("cpu"))
    put(buf, [], g, examples=[2.0, 0.0, 1.0])
    put(buf, [1, 1], g, bad=True)
    accs = accumulators()
    counts, dropped = buf.flush(accs)
    assert dropped == 1
    torch.testing.assert_close(counts, torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64))
    assert all(float(acc.abs().sum()) == 0.0 for acc in accs)


def test_buffer_lives_on_its_device_and_moves_only_while_empty() -> None:
    # The meta device stands in for an accelerator: tensors there have a device but no data.
    meta = torch.device("meta")
    d_out, a_out = RowBuffer(4, VK, DK, meta).slot(2)
    assert d_out.device == meta and a_out.device == meta
    assert d_out.shape == (2, VK) and a_out.shape == (2, DK)
    buf = RowBuffer(4, VK, DK, torch.device("cpu"))
    put(buf, [0, 1], torch.Generator().manual_seed(6))
    msg = "RowBuffer: cannot move a non-empty buffer; flush first"
    with pytest.raises(RuntimeError, match=f"^{re.escape(msg)}$"):
        buf.to(meta)
    assert buf.device == torch.device("cpu")
    buf.flush(accumulators())
    buf.to(meta)
    assert buf.device == meta
    d_out, a_out = buf.slot(3)  # the CPU tensors were dropped: reallocated on the new device
    assert d_out.device == meta and a_out.device == meta
    assert d_out.shape == (3, VK) and a_out.shape == (3, DK)
