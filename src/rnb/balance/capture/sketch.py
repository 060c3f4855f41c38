"""Random sketches of the head gradient (see `rnb.balance.capture` for why they are unbiased).

``S_d``: a ``d → k`` projection with orthonormal rows scaled by ``sqrt(d/k)``; ``S_V``: a
count sketch ``V → k`` with strided buckets ``v mod k`` and a random sign per entry.
"""

from __future__ import annotations

import math

import torch

__all__ = ["count_sketch", "orthogonal_projection", "stream_seed"]


def stream_seed(seed: int) -> int:
    """Decorrelate the sketch's stream from ``torch.manual_seed(seed)``: with the raw seed, data
    or weights drawn from the same stream (seed_everything(0) + seed 0 here) can line up with
    the projection and wreck it (seen in testing: 160% Gram error)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + 0x5DEECE66D) % (1 << 63)


def orthogonal_projection(k: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """``[k, d]`` with orthonormal rows scaled by ``sqrt(d/k)``: ``E[SᵀS] = I`` like a Gaussian
    sketch (unbiased inner products) but with variance reduced by about ``1 - k/d``."""
    q, r = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]  # sign fix → Haar-distributed columns
    return (q.T * math.sqrt(d / k)).float()


def count_sketch(delta: torch.Tensor, signs: torch.Tensor, k: int) -> torch.Tensor:
    """``[n, V] → [n, k]`` fp32: each of the ``⌈V/k⌉`` contiguous column blocks of ``delta``,
    times its signs, added into one buffer (strided buckets: no gather, no scatter)."""
    V = delta.shape[1]
    out = torch.zeros(delta.shape[0], k, device=delta.device, dtype=torch.float32)
    for start in range(0, V, k):
        block = delta[:, start : start + k]
        width = block.shape[1]
        # addcmul_ promotes a bf16 δ block to fp32 on the fly: no fp32 copy of δ is made.
        out[:, :width].addcmul_(block, signs[start : start + width])
    return out
