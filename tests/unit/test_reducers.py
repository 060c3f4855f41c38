"""Tests for rnb.regroup.reducers."""

from __future__ import annotations

import numpy as np
import pytest

from rnb.regroup.reducers import NoReducer, NotFittedReducerError, PCAReducer, UMAPReducer


def _data(n: int = 40, d: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Anisotropic so the leading components are well separated (stable up to sign).
    return rng.normal(size=(n, d)) * np.linspace(5.0, 0.5, d)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(20, 6)) + 6, rng.normal(size=(20, 6)) - 6])
    return X.astype(np.float32), np.repeat([0, 1], 20)


def test_no_reducer_is_identity() -> None:
    X = _data()
    r = NoReducer()
    out = r.fit_transform(X)
    assert out.dtype == np.float32 and r.n_components_ == 10
    np.testing.assert_array_equal(out, X.astype(np.float32))
    np.testing.assert_array_equal(r.transform(X[:3]), X[:3].astype(np.float32))
    with pytest.raises(ValueError, match="reducer"):
        r.fit_transform(np.zeros(5))


def test_pca_matches_svd_reference() -> None:
    X = _data()
    r = PCAReducer(n_components=3, seed=0)
    Z = r.fit_transform(X)
    assert Z.shape == (40, 3) and Z.dtype == np.float32 and r.n_components_ == 3
    # Brute-force reference: project the centred data on the top right-singular vectors.
    Xc = X - X.mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ Vt[:3].T
    # Components are defined up to sign; compare column by column after aligning signs.
    signs = np.sign((Z * ref).sum(0))
    np.testing.assert_allclose(Z * signs, ref, rtol=1e-4, atol=1e-4)


def test_pca_transform_consistent_with_fit() -> None:
    X = _data()
    r = PCAReducer(n_components=4)
    Z = r.fit_transform(X)
    np.testing.assert_allclose(r.transform(X), Z, atol=1e-5)
    np.testing.assert_allclose(r.transform(X[5:9]), Z[5:9], atol=1e-5)
    np.testing.assert_array_equal(PCAReducer(n_components=4).fit_transform(X), Z)  # deterministic


def test_pca_clamps_with_warning() -> None:
    with pytest.warns(UserWarning, match=r"reducer\.n_components=32"):
        Z = (r := PCAReducer(n_components=32)).fit_transform(_data(n=6, d=10))
    assert Z.shape == (6, 6) and r.n_components_ == 6


def test_reducer_errors() -> None:
    with pytest.raises(NotFittedReducerError):
        PCAReducer().transform(_data())
    with pytest.raises(ValueError, match=r"reducer\.n_components"):
        PCAReducer(n_components=0)
    with pytest.raises(ValueError, match=r"reducer\.n_components"):
        UMAPReducer(n_components=0)
    with pytest.raises(ValueError, match=r"reducer\.n_neighbors"):
        UMAPReducer(n_neighbors=1)
    with pytest.raises(ValueError, match=r"reducer\.min_dist"):
        UMAPReducer(min_dist=-1.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        PCAReducer().fit_transform(_data(n=1))
    with pytest.raises(ValueError, match="at least 4 points"):
        UMAPReducer().fit_transform(_data(n=3))
    with pytest.raises(NotFittedReducerError):
        UMAPReducer().transform(_data())


def test_fingerprints() -> None:
    assert PCAReducer(8).fingerprint() == PCAReducer(8).fingerprint()
    assert PCAReducer(8).fingerprint() != PCAReducer(9).fingerprint()
    assert PCAReducer(8).fingerprint() != PCAReducer(8, seed=1).fingerprint()
    assert UMAPReducer().fingerprint() != UMAPReducer(metric="euclidean").fingerprint()
    assert NoReducer().fingerprint() != PCAReducer().fingerprint()


@pytest.mark.slow  # numba JIT on first use: ~25-45 s
def test_umap_tiny_run() -> None:
    X, labels = _blobs()
    r = UMAPReducer(n_components=2, n_neighbors=5, metric="euclidean", seed=0)
    Z = r.fit_transform(X)
    assert Z.shape == (40, 2) and Z.dtype == np.float32 and np.isfinite(Z).all()
    np.testing.assert_array_equal(
        Z, UMAPReducer(n_components=2, n_neighbors=5, metric="euclidean", seed=0).fit_transform(X)
    )
    c = np.stack([Z[labels == g].mean(0) for g in (0, 1)])
    nearest = np.argmin(((Z[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).all()  # the two blobs stay apart
    T = r.transform(X[:4] + 0.01)
    assert T.shape == (4, 2) and np.isfinite(T).all()
    with pytest.warns(UserWarning, match="n_samples - 2"):
        assert UMAPReducer(n_components=8).fit_transform(X[:6]).shape == (6, 4)
