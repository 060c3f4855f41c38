"""The seeded train / eval split used when no ``data.eval_path`` is given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["split_indices", "split_records"]


def _eval_counts(sizes: dict[str, int], eval_fraction: float) -> dict[str, int]:
    """Held-out count per domain: round half up, capped so one training example stays."""
    counts = {d: min(int(n * eval_fraction + 0.5), n - 1) for d, n in sizes.items()}
    if sum(counts.values()) == 0:
        # every domain rounded to 0: hold out one record of the largest domain (name order
        # breaks ties) so the eval split is not empty
        largest = max(sorted(sizes), key=lambda d: sizes[d])
        if sizes[largest] < 2:
            raise ValueError(
                f"data.eval_fraction={eval_fraction}: every domain of data.domain_field has "
                "a single record, so none can be held out without losing its only training "
                "example; set data.eval_path"
            )
        counts[largest] = 1
    return counts


def split_indices(
    n: int,
    eval_fraction: float,
    seed: int,
    domains: Sequence[str] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, deterministic train / eval split of ``n`` records, as index arrays.

    Without ``domains`` (one domain, or domains that Regroup derives later) ``max(1,
    round(n * eval_fraction))`` records drawn uniformly at random are held out. With
    ``domains`` (the ``data.domain_field`` values, or their integer codes in name order)
    the split is stratified: a domain of ``n_d`` records holds out ``min(floor(n_d *
    eval_fraction + 0.5), n_d - 1)`` of them, so every domain keeps at least one training
    example (a 1-record domain stays in train). If that holds out nothing at all, one
    record of the largest domain is held out.

    Args:
        n: number of records.
        eval_fraction: ``data.eval_fraction``, in ``(0, 1)``.
        seed: the run seed.
        domains: ``[n]`` domain value of each record (strings, or int codes whose order
            is the names' sorted order), or ``None``.

    Returns:
        ``(train, eval)``: ascending int64 record indices (both keep the file order).

    Raises:
        ValueError: ``eval_fraction`` outside ``(0, 1)``, or no record can be held out
            without emptying the training split (or a domain of it).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in (0, 1), got {eval_fraction}")
    rng = np.random.default_rng([seed, 7])
    if domains is None:
        n_eval = max(1, round(n * eval_fraction))
        if n_eval >= n:
            raise ValueError(
                f"data.eval_fraction={eval_fraction} leaves no training data ({n} records)"
            )
        eval_idx = np.sort(rng.permutation(n)[:n_eval])
    else:
        if len(domains) != n:
            raise ValueError(f"{len(domains)} domain values for {n} records")
        # codes in sorted-name order: the draws below go domain by domain in name order
        _, codes = np.unique(np.asarray(domains), return_inverse=True)
        order = np.argsort(codes, kind="stable")  # each domain's records in file order
        sizes = np.bincount(codes)
        counts = _eval_counts(dict(enumerate(sizes.tolist())), eval_fraction)
        parts, start = [], 0
        for d, size in enumerate(sizes.tolist()):
            ix = order[start : start + size]
            parts.append(ix[rng.permutation(size)[: counts[d]]])
            start += size
        eval_idx = np.sort(np.concatenate(parts))
    keep = np.ones(n, dtype=bool)
    keep[eval_idx] = False
    return np.flatnonzero(keep), eval_idx.astype(np.int64)


def split_records(
    records: list[dict],
    eval_fraction: float,
    seed: int,
    domains: Sequence[str] | None = None,
) -> tuple[list[dict], list[dict]]:
    """:func:`split_indices` applied to a list of records: ``(train, eval)`` records."""
    train_idx, eval_idx = split_indices(len(records), eval_fraction, seed, domains)
    return [records[i] for i in train_idx], [records[i] for i in eval_idx]
