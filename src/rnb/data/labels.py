"""Domain labels of the train and eval splits (predefined, single, or from Regroup)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnb.data.sources import column

__all__ = ["DomainLabels", "labels_from_field", "single_domain"]


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
    names = sorted(set(tr))
    unknown = sorted(set(evv) - set(names))
    if unknown:
        raise ValueError(
            f"data.domain_field='{field}': eval domains {unknown} have zero training examples "
            f"(training domains: {names})"
        )
    index = {n: i for i, n in enumerate(names)}
    return DomainLabels(names, np.array([index[v] for v in tr]), np.array([index[v] for v in evv]))


def single_domain(n_train: int, n_eval: int) -> DomainLabels:
    """One domain ``all`` (no domain field and no Regroup)."""
    return DomainLabels(["all"], np.zeros(n_train, np.int64), np.zeros(n_eval, np.int64))
