"""The fixed probe subset of the eval split that services evaluate on."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_probe"]


def stratified_probe(labels: np.ndarray, size: int, num_domains: int, seed: int) -> np.ndarray:
    """Indices of a seeded, domain-stratified subset of an eval split.

    Every domain present in ``labels`` gets ``max(1, round(size · share))`` examples (all
    of them when it has fewer), so small domains are present (a proportional draw of 256
    out of 2 000 misses domains under 0.4 %); the rest is filled proportionally. The same
    ``(labels, size, seed)`` always gives the same indices, on every rank.

    Args:
        labels: ``[n]`` domain id of each eval example.
        size: probe size (``balance.probe.eval_size``); ``>= n`` or ``<= 0`` takes all.
        num_domains: ``m``.
        seed: ``balance.probe.seed``.

    Returns:
        Sorted int64 indices into the eval split.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if size <= 0 or size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=num_domains)
    want = np.where(counts > 0, np.maximum(1, np.round(size * counts / n)), 0).astype(np.int64)
    want = np.minimum(want, counts)
    picked = [
        rng.choice(np.flatnonzero(labels == d), size=int(k), replace=False)
        for d, k in enumerate(want)
        if k > 0
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)
