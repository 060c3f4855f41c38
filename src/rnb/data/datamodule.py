"""The DataModule: loads records, owns Regroup, tokenises, and serves mixture batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from rnb.data.labels import DomainLabels, labels_from_field, single_domain
from rnb.data.mixture import MixtureData, stack_rows
from rnb.data.sources import (
    build_texts,
    check_records,
    column,
    field_roles,
    load_records,
    split_records,
)
from rnb.data.tokenize import TokenizedSplit, encode_examples, load_tokenizer

if TYPE_CHECKING:
    from rnb.regroup.pipeline import Regroup
    from rnb.regroup.result import RegroupResult

__all__ = ["RnBDataModule"]


class RnBDataModule(MixtureData, L.LightningDataModule):
    """Training/eval data with domains, eval proportions and a mixture sampler.

    Records come from the built-in testbed (``synthetic`` set) or from ``train_path``
    (+ optional ``eval_path``, else a seeded ``eval_fraction`` split, stratified by
    ``domain_field`` when set, see :func:`rnb.data.split.split_records`). Domains come from
    Regroup (``regroup`` set, see :mod:`rnb.regroup`), else from ``domain_field``, else one
    domain ``all``.

    Args:
        train_path: training file / HF dataset (``data.train_path``).
        eval_path: evaluation file (``data.eval_path``); optional.
        eval_fraction: held-out share when ``eval_path`` is unset.
        synthetic: kwargs of :class:`rnb.data.synthetic.SyntheticConfig`; used when
            ``train_path`` is unset.
        text_fields: fields joined into the text, or a ``{field}`` template.
        target_field: if set, the LM loss covers only this field (instruction tuning).
        embed_fields: fields (or template) Regroup embeds; default ``text_fields``.
        domain_field: predefined domain field (optional).
        reference_field: latent label for agreement metrics only (optional).
        split: split name for HF dataset dicts.
        max_length: tokens per example.
        batch_size: per-device training batch size.
        eval_batch_size: per-device eval batch size.
        num_workers: DataLoader workers (weight changes lag by up to
            ``num_workers * prefetch_factor + 1`` batches).
        tokenizer: ``{name, vocab_size, min_frequency}``; ``name: bpe`` trains offline.
        cache_dir: tokenizer cache (Regroup has its own ``regroup.cache_dir``, by default
            the same folder).
        regroup: a :class:`rnb.regroup.pipeline.Regroup` (``None`` = keep the predefined
            domains). The DataModule hands it texts and labels and keeps what it returns;
            its reports reach a run directory only through :meth:`write_reports`.
        seed: drives splitting and sampling.
        encoding: text encoding of the data files (``data.encoding``).
        encoding_errors: ``strict`` or ``replace`` for undecodable bytes
            (``data.encoding_errors``).
        on_missing: ``error`` or ``drop`` for records with a missing value in a field
            the run reads (``data.on_missing``).
    """

    def __init__(
        self,
        train_path: str | None = None,
        eval_path: str | None = None,
        eval_fraction: float = 0.1,
        synthetic: dict[str, Any] | None = None,
        text_fields: str | Sequence[str] = ("prompt", "response"),
        target_field: str | None = None,
        embed_fields: str | Sequence[str] | None = None,
        domain_field: str | None = None,
        reference_field: str | None = None,
        split: str | None = None,
        max_length: int = 64,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        tokenizer: dict[str, Any] | None = None,
        cache_dir: str = ".rnb_cache",
        regroup: Regroup | None = None,
        seed: int = 0,
        encoding: str = "utf-8",
        encoding_errors: str = "strict",
        on_missing: str = "error",
    ) -> None:
        super().__init__()
        if train_path is None and synthetic is None:
            raise ValueError(
                "set data.train_path (a file) or data.synthetic (the built-in testbed)"
            )
        self.train_path = train_path
        self.eval_path = eval_path
        self.eval_fraction = eval_fraction
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.text_fields = text_fields if isinstance(text_fields, str) else list(text_fields)
        self.target_field = target_field
        self.embed_fields = (
            embed_fields
            if embed_fields is None or isinstance(embed_fields, str)
            else list(embed_fields)
        )
        self.domain_field = domain_field
        self.reference_field = reference_field
        self.split = split
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.tokenizer_cfg = {
            "name": "bpe",
            "vocab_size": 2048,
            "min_frequency": 2,
            **(tokenizer or {}),
        }
        self.cache_dir = Path(cache_dir).expanduser()
        self.regroup = regroup
        self.seed = seed
        self.encoding, self.encoding_errors = encoding, encoding_errors
        self.on_missing = on_missing
        self._ready = False
        self.regroup_result: RegroupResult | None = None

    # ------------------------------------------------------------------ records
    def load_splits(self) -> tuple[list[dict], list[dict]]:
        """Train and eval records (deterministic for a given config; read once)."""
        # Lightning calls prepare_data again in every fit/validate: read the files once
        settings = ("train_path", "eval_path", "eval_fraction", "synthetic", "seed", "split")
        settings += ("text_fields", "target_field", "embed_fields", "domain_field")
        settings += ("reference_field", "encoding", "encoding_errors", "on_missing")
        memo = repr([self.regroup is not None, *(getattr(self, k) for k in settings)])
        if getattr(self, "_splits", (None,))[0] != memo:
            self._splits = (memo, self._read_splits())
        return self._splits[1]

    def _read_splits(self) -> tuple[list[dict], list[dict]]:
        if self.train_path is None:
            from rnb.data.synthetic import SyntheticConfig, generate

            cfg = dict(self.synthetic or {})
            cfg.setdefault("seed", self.seed)
            return generate(SyntheticConfig(**cfg))
        train = self._load(self.train_path, "data.train_path")
        if self.eval_path:
            return train, self._load(self.eval_path, "data.eval_path")
        # stratified by the predefined domains, so each keeps a training example
        domains = (
            column(train, self.domain_field, "data.domain_field") if self.domain_field else None
        )
        return split_records(train, self.eval_fraction, self.seed, domains)

    def _load(self, path: str, key: str) -> list[dict]:
        """Records of one file, with ``data.on_missing`` applied to every field read."""
        records = load_records(path, key, self.split, self.encoding, self.encoding_errors)
        regroup = self.regroup is not None  # embed / reference fields feed Regroup only
        roles = field_roles(
            self.text_fields,
            self.target_field,
            self.embed_fields if regroup else None,
            self.domain_field,
            self.reference_field if regroup else None,
        )
        return check_records(records, roles, self.on_missing, f"{key}='{path}'")

    def _model_io(self, records: list[dict]) -> tuple[list[str], list[str] | None]:
        if self.target_field is None:
            return build_texts(records, self.text_fields), None
        if isinstance(self.text_fields, str):
            raise ValueError(
                "data.target_field needs data.text_fields as a list of fields, not a template"
            )
        src_fields = [f for f in self.text_fields if f != self.target_field]
        if not src_fields:
            raise ValueError("data.text_fields must contain a field besides data.target_field")
        sources = build_texts(records, src_fields)
        targets = column(records, self.target_field, "data.target_field")
        return sources, targets

    def _regroup_inputs(
        self, records: list[dict], split: str
    ) -> tuple[list[str], list[Any] | None]:
        """Texts Regroup embeds (``data.embed_fields``, else ``data.text_fields``), plus the
        vectors of ``regroup.embedder.column`` when the embedder reads precomputed ones."""
        fields = self.embed_fields or self.text_fields
        texts = build_texts(
            records, fields, "data.embed_fields" if self.embed_fields else "data.text_fields"
        )
        col = self.regroup.input_column if self.regroup is not None else None
        if col is None:
            return texts, None
        missing = [i for i, r in enumerate(records) if r.get(col) is None]
        if missing:
            raise ValueError(
                f"regroup.embedder.column='{col}' missing in {len(missing)} {split} records "
                f"(first: {missing[0]}); columns: {sorted(records[missing[0]])}"
            )
        return texts, [r[col] for r in records]

    def _domain_labels(self, train: list[dict], ev: list[dict]) -> DomainLabels:
        if self.regroup is not None:
            (texts, vec), (ev_texts, ev_vec) = (
                self._regroup_inputs(train, "train"),
                self._regroup_inputs(ev, "eval"),
            )
            field, ref = self.domain_field, self.reference_field
            result = self.regroup.run(
                texts,
                ev_texts,
                predefined=column(train, field, "data.domain_field") if field else None,
                predefined_eval=column(ev, field, "data.domain_field") if field else None,
                reference=column(train, ref, "data.reference_field") if ref else None,
                vectors=None if vec is None else (vec, ev_vec),
            )
            self.regroup_result = result
            return DomainLabels(result.names, result.train, result.eval)
        if self.domain_field is not None:
            return labels_from_field(train, ev, self.domain_field)
        return single_domain(len(train), len(ev))

    def prepare_domains(self) -> DomainLabels:
        """Load the splits and compute their domains only (``rnb-regroup``; no tokenizer)."""
        return self._domain_labels(*self.load_splits())

    def prepare_data(self) -> None:
        """Runs once per node: Regroup and the BPE are computed and cached on disk."""
        train, ev = self.load_splits()
        self._domain_labels(train, ev)
        sources, targets = self._model_io(train)
        load_tokenizer(
            self.tokenizer_cfg["name"],
            [s + " " + t for s, t in zip(sources, targets, strict=True)] if targets else sources,
            self.cache_dir,
            self.tokenizer_cfg["vocab_size"],
            self.tokenizer_cfg["min_frequency"],
        )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Loads records, labels and tokens on every rank; builds the sampler."""
        if self._ready:
            self._attach_rank()
            return
        train, ev = self.load_splits()
        self.train_records, self.eval_records = train, ev
        self.labels = self._domain_labels(train, ev)
        sources, targets = self._model_io(train)
        ev_sources, ev_targets = self._model_io(ev)
        corpus = (
            [s + " " + t for s, t in zip(sources, targets, strict=True)] if targets else sources
        )
        self.tokenizer = load_tokenizer(
            self.tokenizer_cfg["name"],
            corpus,
            self.cache_dir,
            self.tokenizer_cfg["vocab_size"],
            self.tokenizer_cfg["min_frequency"],
        )
        self.train_data = encode_examples(
            self.tokenizer, sources, targets, self.labels.train, self.max_length
        )
        self.eval_data = encode_examples(
            self.tokenizer, ev_sources, ev_targets, self.labels.eval, self.max_length
        )
        self._build_mixture()
        self._ready = True
        self._attach_rank()

    def encode_file(self, path: str, key: str) -> TokenizedSplit:
        """Records of another file tokenised like the training data (after :meth:`setup`).

        Same fields (``data.text_fields``/``data.target_field``), ``data.on_missing``,
        tokenizer and ``data.max_length``; no domain field is read (domain ids are ``-1``).
        Used for the gradient probe's target set (``balance.probe.target_path``).

        Args:
            path: the file (any format :func:`rnb.data.sources.load_records` reads).
            key: the config key holding ``path``, for error messages.

        Raises:
            FileNotFoundError, ValueError: as :func:`load_records` / ``check_records``.
        """
        records = load_records(path, key, self.split, self.encoding, self.encoding_errors)
        roles = field_roles(self.text_fields, self.target_field)
        records = check_records(records, roles, self.on_missing, f"{key}='{path}'")
        sources, targets = self._model_io(records)
        domain = np.full(len(records), -1, dtype=np.int64)
        return encode_examples(self.tokenizer, sources, targets, domain, self.max_length)

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size (the model's output dimension)."""
        return len(self.tokenizer)

    def model_inputs(self) -> dict[str, Any]:
        """Data-dependent model arguments (``train`` passes them to ``model._target_``)."""
        return {"vocab_size": self.vocab_size, "eos_token_id": self.tokenizer.eos_token_id}

    @property
    def tokens_per_example(self) -> int:
        """Positions the model processes per example (FLOPs: ``6·N`` per position)."""
        return self.max_length

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        """Infinite loader driven by the mixture sampler (no distributed sampler: it shards)."""
        return DataLoader(self.train_data, batch_sampler=self.sampler, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        """The full eval set, strided over ranks (each example evaluated exactly once)."""
        idx = list(range(self._eval_rank, len(self.eval_data), self._eval_world))
        subset = torch.utils.data.Subset(self.eval_data, idx)
        return DataLoader(
            subset, batch_size=self.eval_batch_size, shuffle=False, collate_fn=stack_rows
        )
