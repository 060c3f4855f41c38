"""A DataModule for feature vectors (images, tabular data): classification on mixtures.

Each example is a float vector ``x ∈ R^d`` with a class ``y`` and, optionally, a
predefined domain. The DataModule splits the examples (seeded, stratified by the
predefined domain), hands the vectors to Regroup as precomputed embeddings (a
``regroup.embedder`` reading the column ``features``, e.g. ``regroup/embedder=features``),
and serves mixture batches ``{"features": [B, d] float32, "target": [B], "domain": [B]}``
from the same :class:`~rnb.data.sampler.MixtureBatchSampler` as the text DataModule.
A source subclasses :class:`FeatureDataModule` and implements :meth:`~FeatureDataModule.load`
(see :class:`rnb.data.digits.DigitsDataModule`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
from torch.utils.data import Dataset

from rnb.data.labels import DomainLabels, labels_from_field, single_domain
from rnb.data.mixture import MixtureData
from rnb.data.split import split_records

if TYPE_CHECKING:
    from rnb.regroup.pipeline import Regroup

__all__ = ["FeatureDataModule", "FeatureSet", "FeatureSplit"]

#: The column name under which Regroup's precomputed embedder reads the vectors.
COLUMN = "features"


@dataclass
class FeatureSet:
    """All examples of a feature data source.

    Attributes:
        features: ``[n, d]`` float32 vectors (the model input and Regroup's embeddings).
        target: ``[n]`` int64 class ids in ``[0, len(class_names))``.
        class_names: name of each class.
        domain: ``[n]`` predefined domain name of each example, or ``None`` (one domain).
        texts: ``[n]`` short descriptions (Regroup's report shows them as examples).
    """

    features: np.ndarray
    target: np.ndarray
    class_names: list[str]
    domain: list[str] | None
    texts: list[str]

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.target = np.asarray(self.target, dtype=np.int64)
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.target.shape != (n,) or len(self.texts) != n:
            raise ValueError(
                f"FeatureSet: need features [n, d], target [n], texts [n]; got "
                f"{self.features.shape}, {self.target.shape}, {len(self.texts)}"
            )
        if self.domain is not None and len(self.domain) != n:
            raise ValueError(f"FeatureSet: {len(self.domain)} domains for {n} examples")
        bad = np.flatnonzero(~np.isfinite(self.features).all(axis=1))
        if bad.size:
            raise ValueError(f"FeatureSet: NaN or inf in the features of example {int(bad[0])}")


class FeatureSplit(Dataset):
    """One split as arrays; item ``i`` is ``{"features": [d], "target": (), "domain": ()}``.

    Attributes:
        features: ``[n, d]`` float32.
        target: ``[n]`` int64 class ids.
        domain: ``[n]`` int64 domain ids.
    """

    #: The arrays a batch holds (probe services batch rows of a split by these names).
    batch_keys = ("features", "target", "domain")

    def __init__(self, features: np.ndarray, target: np.ndarray, domain: np.ndarray) -> None:
        self.features, self.target = features, target
        self.domain = np.asarray(domain, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"features": self.features[i], "target": self.target[i], "domain": self.domain[i]}


class FeatureDataModule(MixtureData, L.LightningDataModule, ABC):
    """Feature-vector classification data with domains, eval proportions and a mixture sampler.

    Domains come from Regroup (``regroup`` set: k-means etc. on the feature vectors), else
    from the source's predefined domains, else one domain ``all``.

    Args:
        eval_fraction: held-out share (``data.eval_fraction``), stratified by the
            predefined domains (see :func:`rnb.data.split.split_records`).
        batch_size: per-device training batch size.
        eval_batch_size: per-device eval batch size.
        num_workers: DataLoader workers.
        cache_dir: cache root (Regroup's, through ``regroup.cache_dir``).
        regroup: a :class:`rnb.regroup.pipeline.Regroup` whose embedder reads the column
            ``features`` (``None`` = keep the predefined domains).
        seed: drives splitting and sampling.
    """

    def __init__(
        self,
        eval_fraction: float = 0.2,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        cache_dir: str = ".rnb_cache",
        regroup: Regroup | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.eval_fraction = eval_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir).expanduser()
        self.regroup = regroup
        self.seed = seed
        self.regroup_result = None
        #: Feature data have no tokenizer (the resume fingerprint records ``None``).
        self.tokenizer = None
        self._ready = False
        self._memo: tuple[FeatureSet, np.ndarray, np.ndarray] | None = None
        if regroup is not None and regroup.input_column != COLUMN:
            raise ValueError(
                f"regroup.embedder: feature data ({type(self).__name__}) are clustered on "
                f"their vectors, so Regroup needs an embedder reading the column '{COLUMN}' "
                f"(regroup/embedder=features), not {type(regroup.embedder).__name__} "
                f"(column {regroup.input_column!r})"
            )

    @abstractmethod
    def load(self) -> FeatureSet:
        """All examples of the source (deterministic for a given config)."""

    # ------------------------------------------------------------------ splits and domains
    def _splits(self) -> tuple[FeatureSet, np.ndarray, np.ndarray]:
        """The examples and the sorted train / eval indices (read once)."""
        if self._memo is None:
            data = self.load()
            index = list(range(data.target.shape[0]))
            train, ev = split_records(index, self.eval_fraction, self.seed, data.domain)  # type: ignore[arg-type]
            self._memo = (data, np.asarray(train, np.int64), np.asarray(ev, np.int64))
        return self._memo

    def _domain_labels(self, data: FeatureSet, tr: np.ndarray, ev: np.ndarray) -> DomainLabels:
        dom = data.domain
        if self.regroup is not None:
            result = self.regroup.run(
                [data.texts[i] for i in tr],
                [data.texts[i] for i in ev],
                predefined=None if dom is None else [dom[i] for i in tr],
                predefined_eval=None if dom is None else [dom[i] for i in ev],
                reference=[data.class_names[y] for y in data.target[tr]],
                vectors=(data.features[tr], data.features[ev]),
            )
            self.regroup_result = result
            return DomainLabels(result.names, result.train, result.eval)
        if dom is not None:
            field = "domain"
            return labels_from_field(
                [{field: dom[i]} for i in tr], [{field: dom[i]} for i in ev], field
            )
        return single_domain(tr.size, ev.size)

    def prepare_domains(self) -> DomainLabels:
        """The domains only (``rnb-regroup``)."""
        return self._domain_labels(*self._splits())

    def prepare_data(self) -> None:
        """Runs once per node: Regroup is computed and cached on disk."""
        self.prepare_domains()

    def setup(self, stage: str | None = None) -> None:
        """Splits, domain labels and the sampler, on every rank."""
        if not self._ready:
            data, tr, ev = self._splits()
            self.labels = self._domain_labels(data, tr, ev)
            self.class_names = list(data.class_names)
            self.train_data = FeatureSplit(data.features[tr], data.target[tr], self.labels.train)
            self.eval_data = FeatureSplit(data.features[ev], data.target[ev], self.labels.eval)
            self._build_mixture()
            self._ready = True
        self._attach_rank()

    def encode_file(self, path: str, key: str) -> FeatureSplit:
        """Not available: a feature source has no reader for other files.

        Raises:
            ValueError: always, naming ``key`` (``balance.probe.target_path``).
        """
        raise ValueError(
            f"{key}='{path}': {type(self).__name__} reads no data files; use the eval split "
            "as the target (strategy.target=eval)"
        )

    # ------------------------------------------------------------------ model contract
    def model_inputs(self) -> dict[str, Any]:
        """Data-dependent model arguments (``train`` passes them to ``model._target_``)."""
        return {
            "num_features": int(self.train_data.features.shape[1]),
            "num_classes": len(self.class_names),
        }

    @property
    def tokens_per_example(self) -> int:
        """One input vector per example (FLOPs: ``6·N`` per example)."""
        return 1

    @property
    def domain_tokens(self) -> np.ndarray:
        """ "Tokens" per domain for token-budget strategies (UniMax): one per example."""
        return np.asarray(self.domain_sizes, dtype=np.float64)
