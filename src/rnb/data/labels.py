"""Domain labels of the train and eval splits (predefined, single, or from Regroup)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnb.data.sources import column

__all__ = ["DomainLabels", "labels_from_codes", "labels_from_field", "single_domain"]


@dataclass
class DomainLabels:
    """Integer domain ids of every train / eval example plus the domain names.

    Attributes:
        names: domain names, index = domain id.
        train: ``[n_train]`` int64 ids.
        eval: ``[n_eval]`` int64 ids.
    """

    names: list[str]
    train: np.ndarray
    eval: np.ndarray

    def __post_init__(self) -> None:
        self.train = np.asarray(self.train, dtype=np.int64)
        self.eval = np.asarray(self.eval, dtype=np.int64)
        m = len(self.names)
        sizes = np.bincount(self.train, minlength=m)
        empty = [self.names[i] for i in range(m) if sizes[i] == 0]
        if empty:
            raise ValueError(f"domains {empty} have zero training examples")
        if self.eval.size == 0:
            raise ValueError("the eval split is empty: set data.eval_path or data.eval_fraction")


def labels_from_field(train: Sequence[dict], ev: Sequence[dict], field: str) -> DomainLabels:
    """Domains = the values of ``field`` (``data.domain_field``), sorted by name."""
    tr = column(train, field, "data.domain_field")
    evv = column(ev, field, "data.domain_field")
    tr_names, tr_codes = np.unique(np.asarray(tr, dtype=object), return_inverse=True)
    ev_names, ev_codes = np.unique(np.asarray(evv, dtype=object), return_inverse=True)
    return labels_from_codes(list(tr_names), tr_codes, list(ev_names), ev_codes, field)


def labels_from_codes(
    train_names: Sequence[str],
    train_codes: np.ndarray,
    eval_names: Sequence[str],
    eval_codes: np.ndarray,
    field: str,
) -> DomainLabels:
    """Domains = the ``data.domain_field`` values present in the training split, by name.

    Args:
        train_names: names the training codes index (a superset of those used is fine).
        train_codes: ``[n_train]`` int codes into ``train_names``.
        eval_names: names the eval codes index.
        eval_codes: ``[n_eval]`` int codes into ``eval_names``.
        field: ``data.domain_field`` (for messages).

    Raises:
        ValueError: an eval domain has no training example.
    """
    used = np.unique(train_codes)
    names = sorted(str(train_names[c]) for c in used)
    index = {n: i for i, n in enumerate(names)}
    tr_map = np.full(len(train_names), -1, dtype=np.int64)
    for c in used:
        tr_map[c] = index[str(train_names[c])]
    ev_used = np.unique(eval_codes)
    unknown = sorted(str(eval_names[c]) for c in ev_used if str(eval_names[c]) not in index)
    if unknown:
        raise ValueError(
            f"data.domain_field='{field}': eval domains {unknown} have zero training examples "
            f"(training domains: {names})"
        )
    ev_map = np.full(len(eval_names), -1, dtype=np.int64)
    for c in ev_used:
        ev_map[c] = index[str(eval_names[c])]
    return DomainLabels(names, tr_map[train_codes], ev_map[eval_codes])


def single_domain(n_train: int, n_eval: int) -> DomainLabels:
    """One domain ``all`` (no domain field and no Regroup)."""
    return DomainLabels(["all"], np.zeros(n_train, np.int64), np.zeros(n_eval, np.int64))
