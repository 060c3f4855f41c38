"""TF-IDF + truncated SVD (LSA) embedder: a corpus-fitted embedding that needs no model.

scikit-learn is imported on first fit, not at import time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rnb.regroup.cache import fingerprint_config, fingerprint_texts
from rnb.regroup.embedders.kind import public_kind

__all__ = ["TfidfSvdEmbedder"]


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
        return fingerprint_config(public_kind(self), cfg)

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
