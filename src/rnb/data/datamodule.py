"""The DataModule: scans the sources, owns Regroup, builds the token store, serves batches.

The pieces live next door: which sources a config names (:mod:`rnb.data.configured_sources`),
the tokenizer and token stores of a corpus (:mod:`rnb.data.corpus_tokens`), and the
tokenisation of another file (:mod:`rnb.data.encode_file`); the loaders are
:class:`~rnb.data.mixture.MixtureData`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np

from rnb.data.configured_sources import configured_sources
from rnb.data.corpus import Corpus
from rnb.data.corpus_tokens import corpus_stores, corpus_tokenizer
from rnb.data.encode_file import encode_records_file
from rnb.data.fields import FieldRole
from rnb.data.labels import DomainLabels, single_domain
from rnb.data.mixture import MixtureData
from rnb.data.regroup_io import RegroupFields, run_regroup
from rnb.data.scan import ModelTexts
from rnb.data.sources import field_roles
from rnb.data.store import StoreSplit, TokenStore, check_chunk_size
from rnb.data.tokenize import TokenizedSplit

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
        store_chunk_size: examples per resumable chunk of the token store build
            (``data.store_chunk_size``; see :mod:`rnb.data.store`).
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
        store_chunk_size: int = 20_000,
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
        self.store_chunk_size = check_chunk_size(store_chunk_size)
        self._ready = False
        self.regroup_result: RegroupResult | None = None

    # ------------------------------------------------------------------ records
    def _roles(self) -> list[FieldRole]:
        regroup = self.regroup is not None  # embed / reference fields feed Regroup only
        return field_roles(
            self.text_fields,
            self.target_field,
            self.embed_fields if regroup else None,
            self.domain_field,
            self.reference_field if regroup else None,
        )

    def corpus(self) -> Corpus:
        """The sources, their scans and the split (memoised; one pass per source)."""
        # Lightning calls prepare_data again in every fit/validate: scan the files once
        settings = ("train_path", "eval_path", "eval_fraction", "synthetic", "seed", "split")
        settings += ("text_fields", "target_field", "embed_fields", "domain_field")
        settings += ("reference_field", "encoding", "encoding_errors", "on_missing")
        memo = repr([self.regroup is not None, *(getattr(self, k) for k in settings)])
        if getattr(self, "_corpus", (None,))[0] != memo:
            self._corpus = (memo, self._scan())
        return self._corpus[1]

    def _scan(self) -> Corpus:
        sources = configured_sources(
            self.train_path,
            self.eval_path,
            self.synthetic,
            self.seed,
            self.split,
            self.encoding,
            self.encoding_errors,
        )
        return Corpus.scan(
            *sources,
            self._roles(),
            self.on_missing,
            self.domain_field,
            ModelTexts(self.text_fields, self.target_field),
            self.eval_fraction,
            self.seed,
        )

    def load_splits(self) -> tuple[list[dict], list[dict]]:
        """Train and eval records, materialised (Regroup and ``rnb-regroup`` read these).

        Training reads the token store instead: this list is built only on the Regroup
        path (and for inspection), memoised with :meth:`corpus`.
        """
        corpus = self.corpus()
        if getattr(self, "_splits", (None,))[0] is not corpus:
            self._splits = (corpus, corpus.records())
        return self._splits[1]

    @property
    def train_records(self) -> list[dict]:
        """The training records (materialised on first use, see :meth:`load_splits`)."""
        return self.load_splits()[0]

    @property
    def eval_records(self) -> list[dict]:
        """The eval records (materialised on first use, see :meth:`load_splits`)."""
        return self.load_splits()[1]

    @property
    def fields(self) -> RegroupFields:
        """The fields Regroup reads."""
        return RegroupFields(
            self.text_fields, self.embed_fields, self.domain_field, self.reference_field
        )

    def _domain_labels(self) -> DomainLabels:
        corpus = self.corpus()
        if self.regroup is not None:
            self.regroup_result = run_regroup(self.regroup, *self.load_splits(), self.fields)
            result = self.regroup_result
            return DomainLabels(result.names, result.train, result.eval)
        if self.domain_field is not None:
            return corpus.labels(self.domain_field)
        return single_domain(corpus.train_rows.size, corpus.eval_rows.size)

    def prepare_domains(self) -> DomainLabels:
        """Scan the sources and compute their domains only (``rnb-regroup``; no tokenizer)."""
        return self._domain_labels()

    def _tokenizer(self, corpus: Corpus) -> Any:
        return corpus_tokenizer(corpus, self.tokenizer_cfg, self.cache_dir)

    def _stores(self, corpus: Corpus) -> tuple[TokenStore, TokenStore]:
        """The train and eval token stores (one store when eval is split off train)."""
        return corpus_stores(
            corpus, self.cache_dir, self.tokenizer, self.max_length, self.store_chunk_size
        )

    def prepare_data(self) -> None:
        """Runs once per node: Regroup, the BPE and the token stores are built and cached."""
        corpus = self.corpus()
        self._domain_labels()
        self.tokenizer = self._tokenizer(corpus)
        self._stores(corpus)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Scans, labels and opens the token stores on every rank; builds the sampler."""
        if self._ready:
            self._attach_rank()
            return
        corpus = self.corpus()
        self.labels = self._domain_labels()
        self.tokenizer = self._tokenizer(corpus)
        train_store, eval_store = self._stores(corpus)
        self.train_data = StoreSplit(train_store, corpus.train_rows, self.labels.train)
        self.eval_data = StoreSplit(eval_store, corpus.eval_rows, self.labels.eval)
        self.domain_tokens = np.bincount(
            self.labels.train,
            weights=train_store.loss_tokens(corpus.train_rows),
            minlength=len(self.labels.names),
        )
        self._build_mixture()
        self._ready = True
        self._attach_rank()

    def encode_file(self, path: str, key: str) -> TokenizedSplit:
        """Records of another file tokenised like the training data (after :meth:`setup`).

        Same fields (``data.text_fields``/``data.target_field``), ``data.on_missing``,
        tokenizer and ``data.max_length``; no domain field is read (domain ids are ``-1``).
        Used for the gradient probe's target set (``balance.probe.target_path``); held in
        memory (a probe set is small).

        Args:
            path: the file (any format :func:`rnb.data.sources.load_records` reads).
            key: the config key holding ``path``, for error messages.

        Raises:
            FileNotFoundError, ValueError: as :func:`load_records` / ``check_records``
                (see :func:`rnb.data.encode_file.encode_records_file`).
        """
        return encode_records_file(
            path, key, self.tokenizer, self.text_fields, self.target_field, self.max_length,
            self.split, self.encoding, self.encoding_errors, self.on_missing,
        )  # fmt: skip

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
