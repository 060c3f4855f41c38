"""Optional dimensionality reduction between embedding and clustering.

Protocol: ``fit_transform(X)`` on the training embeddings, then ``transform(X)`` maps the
evaluation embeddings into the same space (eval points are assigned to the nearest
training centroid *in the reduced space*). Outputs are float32.

**Decision (too many components):** when ``n_components`` exceeds what the data allows,
it is clamped with a ``UserWarning`` rather than raising, because the sweep over
datasets of different sizes should not need per-dataset configs. The value actually used
is ``n_components_`` after fitting.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rnb.regroup.cache import fingerprint_config

__all__ = ["NoReducer", "NotFittedReducerError", "PCAReducer", "UMAPReducer"]


class NotFittedReducerError(ValueError):
    """``transform`` was called before ``fit_transform``."""


def _as_2d(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"reducer: expected a non-empty [n, d] array, got shape {arr.shape}")
    return arr


def _kind(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _transform_fitted(model: Any, X: Any) -> np.ndarray:
    """``model.transform(X)`` as float32, or a clear error before ``fit_transform``."""
    if model is None:
        raise NotFittedReducerError("reducer: call fit_transform on training data first")
    return np.asarray(model.transform(_as_2d(X)), dtype=np.float32)


def _clamp(requested: int, limit: int, what: str) -> int:
    if requested > limit:
        warnings.warn(
            f"reducer.n_components={requested} exceeds {what} ({limit}); using {limit}",
            stacklevel=3,
        )
        return limit
    return requested


class NoReducer:
    """Identity: clustering runs on the raw embeddings."""

    n_components_: int | None = None
    #: ``regroup.fit_sample`` reads the embedding file itself instead of a reduced copy.
    is_identity = True

    def fit_transform(self, X: Any) -> np.ndarray:
        """Return ``X`` as float32."""
        arr = _as_2d(X)
        self.n_components_ = arr.shape[1]
        return arr

    def transform(self, X: Any) -> np.ndarray:
        """Return ``X`` as float32."""
        return _as_2d(X)

    def fingerprint(self) -> str:
        """Stable hash of the class (it has no settings)."""
        return fingerprint_config(_kind(self), {})


class PCAReducer:
    """Principal components (sklearn ``PCA``, ``whiten=False``).

    Args:
        n_components: Target dimension; clamped to ``min(n_samples, n_features)``.
        seed: Random state (used by the randomized solver on large inputs).
    """

    def __init__(self, n_components: int = 32, seed: int = 0) -> None:
        if n_components < 1:
            raise ValueError(f"reducer.n_components: need >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.seed = int(seed)
        self._pca: Any = None
        self.n_components_: int | None = None

    def fit_transform(self, X: Any) -> np.ndarray:
        """Fit on ``X`` and return its projection, float32 ``[n, n_components_]``."""
        from sklearn.decomposition import PCA

        arr = _as_2d(X)
        if arr.shape[0] < 2:
            raise ValueError(f"reducer: PCA needs at least 2 points, got {arr.shape[0]}")
        k = _clamp(self.n_components, min(arr.shape), "min(n_samples, n_features)")
        self._pca = PCA(n_components=k, whiten=False, random_state=self.seed)
        out = self._pca.fit_transform(arr)
        self.n_components_ = k
        return np.asarray(out, dtype=np.float32)

    def transform(self, X: Any) -> np.ndarray:
        """Project new points with the fitted basis."""
        return _transform_fitted(self._pca, X)

    def fingerprint(self) -> str:
        """Stable hash of class + config."""
        return fingerprint_config(
            _kind(self), {"n_components": self.n_components, "seed": self.seed}
        )


class UMAPReducer:
    """UMAP manifold embedding (umap-learn), seeded and therefore single-threaded.

    The first call in a process JIT-compiles numba code (~25 s).

    Args:
        n_components: Target dimension; clamped to ``n_samples - 2`` (spectral init needs
            fewer components than points).
        n_neighbors: Local neighbourhood size; clamped to ``n_samples - 1``.
        min_dist: Minimum spacing of embedded points (0 packs clusters tightly).
        metric: Input-space metric, e.g. ``"cosine"`` or ``"euclidean"``.
        seed: ``random_state`` and ``transform_seed``; makes runs reproducible.
    """

    def __init__(
        self,
        n_components: int = 8,
        n_neighbors: int = 15,
        min_dist: float = 0.0,
        metric: str = "cosine",
        seed: int = 0,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"reducer.n_components: need >= 1, got {n_components}")
        if n_neighbors < 2:
            raise ValueError(f"reducer.n_neighbors: need >= 2, got {n_neighbors}")
        if min_dist < 0:
            raise ValueError(f"reducer.min_dist: need >= 0, got {min_dist}")
        self.n_components = int(n_components)
        self.n_neighbors = int(n_neighbors)
        self.min_dist = float(min_dist)
        self.metric = str(metric)
        self.seed = int(seed)
        self._umap: Any = None
        self.n_components_: int | None = None

    def fit_transform(self, X: Any) -> np.ndarray:
        """Fit on ``X`` and return its embedding, float32 ``[n, n_components_]``."""
        arr = _as_2d(X)
        n = arr.shape[0]
        if n < 4:
            raise ValueError(f"reducer: UMAP needs at least 4 points, got {n}; use reducer=none")
        import umap  # heavy (numba); imported only when UMAP is actually used

        k = _clamp(self.n_components, n - 2, "n_samples - 2")
        nn = min(self.n_neighbors, n - 1)
        self._umap = umap.UMAP(
            n_components=k,
            n_neighbors=nn,
            min_dist=self.min_dist,
            metric=self.metric,
            random_state=self.seed,
            transform_seed=self.seed,
        )
        with warnings.catch_warnings():
            # Seeding disables parallelism; umap warns about it on every fit.
            warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
            out = self._umap.fit_transform(arr)
        self.n_components_ = k
        return np.asarray(out, dtype=np.float32)

    def transform(self, X: Any) -> np.ndarray:
        """Embed new points into the fitted manifold."""
        return _transform_fitted(self._umap, X)

    def fingerprint(self) -> str:
        """Stable hash of class + config."""
        cfg = {
            "n_components": self.n_components,
            "n_neighbors": self.n_neighbors,
            "min_dist": self.min_dist,
            "metric": self.metric,
            "seed": self.seed,
        }
        return fingerprint_config(_kind(self), cfg)
