"""A run's corpus without its records: sources, what each scan kept, the train / eval rows.

:class:`Corpus` is what the DataModule keeps between the streaming passes: the sources
(re-iterable), their :class:`~rnb.data.scan.SourceScan` (a kept mask and the domain
codes) and the split as index arrays into the kept records. The tokenizer and the token
store stream the texts from it; Regroup gets materialised records (:meth:`Corpus.records`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnb.data.fields import FieldRole
from rnb.data.labels import DomainLabels, labels_from_codes
from rnb.data.scan import ModelTexts, SourceScan, kept_records, scan_source
from rnb.data.split import split_indices
from rnb.data.streams import ListSource

__all__ = ["Corpus"]


@dataclass
class Corpus:
    """Sources, scans and split of one run.

    Attributes:
        train_source: ``data.train_path`` (or the testbed's training list).
        train_scan: its scan.
        eval_source: ``data.eval_path`` / the testbed's eval list, or ``None`` when the
            eval split is held out of ``train_source``.
        eval_scan: the scan the eval rows index (``train_scan`` when held out).
        train_rows: ``[n_train]`` int64 rows (kept-record positions) of the training split.
        eval_rows: ``[n_eval]`` int64 rows of the eval split.
        roles: the fields read (their policy decides which records are kept).
        on_missing: ``data.on_missing``.
        texts: the model's texts of a record.
    """

    train_source: Any
    train_scan: SourceScan
    eval_source: Any
    eval_scan: SourceScan
    train_rows: np.ndarray
    eval_rows: np.ndarray
    roles: Sequence[FieldRole]
    on_missing: str
    texts: ModelTexts

    @classmethod
    def scan(
        cls,
        train_source: Any,
        eval_source: Any,
        roles: Sequence[FieldRole],
        on_missing: str,
        domain_field: str | None,
        texts: ModelTexts,
        eval_fraction: float,
        seed: int,
    ) -> Corpus:
        """Scan the sources (one pass each) and split off the eval rows when needed.

        Raises:
            ValueError: bad records (see :func:`~rnb.data.scan.scan_source`) or an
                impossible split (see :func:`~rnb.data.split.split_indices`).
        """
        args = (roles, on_missing, domain_field, texts)
        train_scan = scan_source(train_source, *args)
        if eval_source is not None:
            eval_scan = scan_source(eval_source, *args)
            train_rows = np.arange(train_scan.n, dtype=np.int64)
            eval_rows = np.arange(eval_scan.n, dtype=np.int64)
        else:
            # stratified by the predefined domains, so each keeps a training example
            eval_scan = train_scan
            train_rows, eval_rows = split_indices(
                train_scan.n, eval_fraction, seed, train_scan.domains
            )
        return cls(
            train_source,
            train_scan,
            eval_source,
            eval_scan,
            train_rows,
            eval_rows,
            roles,
            on_missing,
            texts,
        )

    @property
    def in_memory(self) -> bool:
        """The testbed (lists), not files."""
        return isinstance(self.train_source, ListSource)

    def sources(self) -> list[tuple[Any, SourceScan]]:
        """Each source with its scan: one token store each."""
        out = [(self.train_source, self.train_scan)]
        if self.eval_source is not None:
            out.append((self.eval_source, self.eval_scan))
        return out

    def key(self, source: Any) -> str:
        """What determines the texts of ``source``'s kept records, in order."""
        spec = (self.texts.source.spec, self.texts.target_field)
        return repr((source.fingerprint, tuple(self.roles), self.on_missing, spec))

    def pairs(self, source: Any, scan: SourceScan) -> Iterator[tuple[str, str | None]]:
        """``(source, target)`` texts of every kept record of ``source``, streamed."""
        for rec in kept_records(source, scan):
            yield self.texts(rec)

    def train_corpus(self) -> Iterator[str]:
        """The BPE's training texts (the training split, in order), streamed."""
        is_train = np.zeros(self.train_scan.n, dtype=bool)
        is_train[self.train_rows] = True
        for row, rec in enumerate(kept_records(self.train_source, self.train_scan)):
            if is_train[row]:
                yield self.texts.corpus(rec)

    def train_key(self) -> str:
        """Cache key of :meth:`train_corpus` (source, fields, and the training rows)."""
        rows = hashlib.sha256(self.train_rows.tobytes()).hexdigest()[:16]
        return repr((self.key(self.train_source), rows))

    def labels(self, field: str) -> DomainLabels:
        """Domains from ``data.domain_field`` (the scans' codes), sorted by name."""
        assert self.train_scan.domains is not None and self.eval_scan.domains is not None
        return labels_from_codes(
            self.train_scan.names or [],
            self.train_scan.domains[self.train_rows],
            self.eval_scan.names or [],
            self.eval_scan.domains[self.eval_rows],
            field,
        )

    def records(self) -> tuple[list[dict], list[dict]]:
        """The train and eval records, materialised (Regroup's path)."""
        train = list(kept_records(self.train_source, self.train_scan))
        if self.eval_source is None:
            return [train[i] for i in self.train_rows], [train[i] for i in self.eval_rows]
        ev = list(kept_records(self.eval_source, self.eval_scan))
        return [train[i] for i in self.train_rows], [ev[i] for i in self.eval_rows]
