"""The capture's sketches (`sketch`) and row planning edges (`rows`) against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnb.balance.capture.rows import MAX_SPANS_PER_EXAMPLE, plan_rows
from rnb.balance.capture.sketch import count_sketch, orthogonal_projection


@pytest.mark.parametrize(("k", "d", "seed"), [(3, 7, 5), (5, 12, 0), (4, 4, 1)])
def test_orthogonal_projection_is_the_signed_qr_of_a_float64_gaussian(
    k: int, d: int, seed: int
) -> None:
    """``S = sqrt(d/k) Qᵀ`` with ``G = QR``, ``G`` the generator's float64 ``[d, k]`` Gaussian
    and ``diag(R) > 0``: the sign fix makes ``Q`` a function of ``G`` (Gram-Schmidt of its
    columns), hence Haar distributed and reproducible from the seed."""
    S = orthogonal_projection(k, d, torch.Generator().manual_seed(seed))
    assert S.dtype == torch.float32 and S.shape == (k, d)
    Q = S.double().T / math.sqrt(d / k)
    torch.testing.assert_close(Q.T @ Q, torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)
    G = torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    R = Q.T @ G  # = R of the QR factorization when Q is the signed Q of G
    torch.testing.assert_close(torch.tril(R, -1), torch.zeros(k, k, dtype=torch.float64))
    assert bool((torch.diagonal(R) > 0).all())
    torch.testing.assert_close(Q @ R, G, atol=1e-5, rtol=1e-5)  # G lies in Q's span
    again = orthogonal_projection(k, d, torch.Generator().manual_seed(seed))
    assert torch.equal(S, again)


def test_count_sketch_equals_the_dense_sketch_in_fp32() -> None:
    g = torch.Generator().manual_seed(0)
    V, k = 11, 4  # two full blocks and a partial one
    delta = torch.randn(3, V, generator=g, dtype=torch.float64)
    signs = (torch.randint(0, 2, (V,), generator=g) * 2 - 1).double()
    S = torch.zeros(k, V, dtype=torch.float64)
    S[torch.arange(V) % k, torch.arange(V)] = signs
    out = count_sketch(delta, signs, k)
    assert out.dtype == torch.float32  # fp32 whatever δ's dtype
    torch.testing.assert_close(out.double(), delta @ S.T, rtol=1e-6, atol=1e-6)


def test_count_sketch_output_follows_delta_device_and_stays_fp32() -> None:
    # The meta device stands in for an accelerator: tensors there have a device but no data.
    delta, signs = torch.empty(2, 10, device="meta"), torch.empty(10, device="meta")
    assert count_sketch(delta, signs, 4).device == torch.device("meta")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the output dtype must not follow the default
    try:
        out = count_sketch(torch.ones(2, 10, dtype=torch.float64), torch.ones(10), 4)
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float32
    assert out.tolist() == [[3.0, 3.0, 2.0, 2.0]] * 2


@pytest.mark.parametrize("runs", [MAX_SPANS_PER_EXAMPLE, MAX_SPANS_PER_EXAMPLE + 1])
def test_spans_layout_up_to_exactly_the_runs_limit(runs: int) -> None:
    B, T = 3, 4 * MAX_SPANS_PER_EXAMPLE
    keep = np.zeros((B, T), dtype=bool)
    keep[:, : 2 * runs : 2] = True  # `runs` one-row runs per example
    dom = np.array([0, 1, 1])
    plan = plan_rows(dom, keep, T, 2, spans=True)
    assert plan.rows == B * runs
    if runs > MAX_SPANS_PER_EXAMPLE:
        assert plan.idx is not None  # too fragmented: the gather layout
        return
    assert plan.idx is None and plan.row_weight is None
    want = [
        (int(dom[b]), b * T + t, b * T + t + 1) for b in range(B) for t in range(0, 2 * runs, 2)
    ]
    assert plan.segments == want


def check_k_smallest(mask: np.ndarray, k: int, seed: int, m: int = 3) -> None:
    """The plan's rows are, per example, the ``k`` smallest of i.i.d. uniform keys drawn from
    the capture's generator among its valid rows (all of them when fewer than ``k``: a
    uniform draw without replacement), each weighted ``valid / kept``."""
    B, T = mask.shape
    dom = np.random.default_rng(seed).integers(0, m, size=B)
    plan = plan_rows(dom, mask, T, m, rows_per_example=k, gen=torch.Generator().manual_seed(seed))
    assert plan.idx is not None and plan.row_weight is not None  # gather layout
    keys = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)).numpy().copy()
    keys[~mask] = np.inf
    n_valid = mask.sum(1)
    want = {b * T + int(t) for b in range(B) for t in np.argsort(keys[b])[: min(k, n_valid[b])]}
    got = plan.idx.tolist()
    assert len(got) == len(set(got)) == plan.rows and set(got) == want
    for r, w in zip(got, plan.row_weight.tolist(), strict=True):
        assert w == pytest.approx(n_valid[r // T] / min(k, n_valid[r // T]))


def test_row_subsample_keeps_the_k_smallest_keys_of_valid_rows() -> None:
    B, T, k = 8, 64, 20
    rng = np.random.default_rng(0)
    mask = rng.random((B, T)) < 0.8
    mask[1] = False
    mask[1, rng.choice(T, k, replace=False)] = True  # exactly k valid rows
    mask[2] = False
    mask[2, :5] = True  # fewer valid rows than k
    check_k_smallest(mask, k, seed=7)


def test_row_subsample_is_exact_on_rows_longer_than_a_sort_block() -> None:
    # NumPy's SIMD argpartition sorts a row of <= 256 keys whole, where a partition around
    # the wrong position still yields the k smallest; longer rows are partitioned for real
    # (seed and sizes chosen so that kth = k + 1 or k - 2 would pick another row here).
    check_k_smallest(np.ones((64, 300), dtype=bool), k=134, seed=14)
