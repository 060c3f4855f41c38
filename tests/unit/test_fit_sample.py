"""regroup.fit_sample: fit on a seeded sample, label every point in streaming chunks."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from sklearn.cluster import HDBSCAN, Birch, KMeans
from sklearn.metrics import adjusted_rand_score

from rnb.config import compose
from rnb.regroup.clusterers import FaissKMeans, OriginalDomains
from rnb.regroup.pipeline import Regroup
from rnb.regroup.reducers import NoReducer, PCAReducer
from rnb.regroup.sampled import (
    assign_streaming,
    check_streamable,
    reduce_streaming,
    sample_indices,
    sweep_sampled,
)
from rnb.regroup.selection import sweep

SWEEP = {"silhouette_sample": 200, "seed": 0, "min_cluster_size": 1}


def _blobs(n: int, seed: int = 0, k: int = 4, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, size=n)
    centres = np.eye(k, d) * 12  # separated: any decent k-means fit finds the blobs
    return (rng.normal(size=(n, d)) + centres[truth]).astype(np.float32), truth


def _memmap(tmp: Path, X: np.ndarray, dtype: str = "float32") -> np.ndarray:
    np.save(tmp / f"X_{dtype}.npy", X.astype(dtype))
    return np.load(tmp / f"X_{dtype}.npy", mmap_mode="r")


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    a, b = sample_indices(1000, 100, 3), sample_indices(1000, 100, 3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)  # distinct, sorted
    assert not np.array_equal(a, sample_indices(1000, 100, 4))
    np.testing.assert_array_equal(sample_indices(50, 100, 0), np.arange(50))  # m >= n: all


def test_same_sample_seed_gives_identical_labels(tmp_path: Path) -> None:
    X = _memmap(tmp_path, _blobs(1500)[0])
    make, sample = partial(FaissKMeans, seed=0), sample_indices(1500, 300, 7)
    runs = [sweep_sampled(X, sample, make, [3, 4, 5], **SWEEP)[1] for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("make", [partial(FaissKMeans, seed=0, nredo=5), partial(KMeans, n_init=5, random_state=0)])  # fmt: skip
def test_streamed_labels_are_the_brute_force_nearest_centroid(make, tmp_path: Path) -> None:
    """Every point gets the domain of its nearest fitted centroid (numpy brute force), the
    sample keeps its sweep labels, and on separated blobs the sample fit finds the full
    fit's clusters."""
    X0, truth = _blobs(2000)
    X = _memmap(tmp_path, X0)
    fitted = []

    def factory(k: int):
        fitted.append(make(n_clusters=k))
        return fitted[-1]

    sample = sample_indices(2000, 400, 1)
    res, labels = sweep_sampled(X, sample, factory, [4], chunk_size=333, **SWEEP)
    C = fitted[0].cluster_centers_.astype(np.float64)
    raw = np.argmin(((X0[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1), axis=1)
    lut = {r: f for r, f in zip(raw[sample].tolist(), res.labels.tolist(), strict=True)}
    np.testing.assert_array_equal(labels, [lut[r] for r in raw.tolist()])
    np.testing.assert_array_equal(labels[sample], res.labels)
    full = sweep(X0, lambda k: make(n_clusters=k), [4], **SWEEP)
    assert adjusted_rand_score(full.labels, labels) == 1.0
    assert adjusted_rand_score(truth, labels) == 1.0


def test_chunked_assignment_equals_unchunked_and_float16_reads(tmp_path: Path) -> None:
    X0, _ = _blobs(900)
    model = FaissKMeans(n_clusters=5, seed=0).fit(X0[:300])
    C = model.cluster_centers_
    ref = assign_streaming(X0, model, X0[:300], model.labels_, C, chunk_size=900)
    for chunk in (1, 7, 256):
        np.testing.assert_array_equal(
            assign_streaming(X0, model, X0[:300], model.labels_, C, chunk_size=chunk), ref
        )
    half = assign_streaming(_memmap(tmp_path, X0, "float16"), model, X0[:300], model.labels_, C)
    assert (half == ref).mean() > 0.99  # float16 rounding may move a boundary point
    with pytest.raises(ValueError, match="regroup.embed_chunk_size"):
        assign_streaming(X0, model, X0[:300], model.labels_, C, chunk_size=0)


def test_predict_fallback_labels_by_the_clusterers_own_predict(tmp_path: Path) -> None:
    X0, _ = _blobs(1200, seed=2)
    fitted = []

    def factory(k: int):
        fitted.append(Birch(n_clusters=k))
        return fitted[-1]

    assert check_streamable(partial(Birch)) == "predict"
    sample = sample_indices(1200, 300, 0)
    res, labels = sweep_sampled(_memmap(tmp_path, X0), sample, factory, [4], **SWEEP)
    raw = fitted[0].predict(X0)
    lut = {r: f for r, f in zip(raw[sample].tolist(), res.labels.tolist(), strict=True)}
    np.testing.assert_array_equal(labels, [lut[r] for r in raw.tolist()])


def test_unseen_raw_cluster_and_noise_go_to_the_nearest_domain() -> None:
    class Fixed:  # a 'clusterer' whose predict says: raw 9 (never in the sample), or noise
        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.where(X[:, 0] > 0, 9, -1)

    X = np.array([[5.0, 0.0], [-5.0, 0.0], [4.0, 1.0]], np.float32)
    centers = np.array([[-5.0, 0.0], [5.0, 0.0]])
    out = assign_streaming(X, Fixed(), X[:0], np.zeros(0, np.int64), centers)
    np.testing.assert_array_equal(out, [1, 0, 1])


def test_unsupported_clusterers_are_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"regroup.fit_sample: sklearn.cluster.*HDBSCAN cannot"):
        check_streamable(partial(HDBSCAN, min_cluster_size=5))
    with pytest.raises(ValueError, match="regroup.fit_sample"):  # before any embedding
        Regroup(None, NoReducer(), partial(HDBSCAN), fit_sample=100)
    with pytest.raises(ValueError) as err:
        Regroup(None, NoReducer(), partial(OriginalDomains), fit_sample=100)
    assert str(err.value) == (
        "regroup.fit_sample: regroup=original keeps the predefined domains and fits nothing; "
        "set regroup.fit_sample=null"
    )
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="regroup.fit_sample"):
            Regroup(None, NoReducer(), partial(KMeans), fit_sample=bad)
    assert Regroup(None, NoReducer(), partial(KMeans), fit_sample=1e3).fit_sample == 1000
    with pytest.raises(ValueError, match="regroup.embed_dtype"):
        Regroup(None, NoReducer(), partial(KMeans), embed_dtype="float64")
    assert check_streamable(partial(FaissKMeans)) == check_streamable(KMeans) == "centroids"


def test_reduce_streaming_fits_on_the_sample_and_keeps_its_rows(tmp_path: Path) -> None:
    X0, _ = _blobs(500, d=8)
    X = _memmap(tmp_path, X0)
    sample = sample_indices(500, 100, 0)
    assert reduce_streaming(NoReducer(), X, sample, tmp_path / "r.npy", 64) is X  # no copy
    pca = PCAReducer(n_components=3)
    out = reduce_streaming(pca, X, sample, tmp_path / "r.npy", 64)
    assert out.shape == (500, 3) and isinstance(out, np.memmap)
    np.testing.assert_allclose(out, pca.transform(X0), atol=1e-4)
    np.testing.assert_allclose(pca._pca.mean_, X0[sample].mean(axis=0), rtol=1e-5)


# ------------------------------------------------------------------------ pipeline
class _Table:
    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def encode(self, texts) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def fingerprint(self) -> str:
        return "table"


def _toy_regroup(tmp: Path, **kw) -> tuple[Regroup, list[str], list[str]]:
    X, _ = _blobs(700, seed=3)
    texts = [f"t{i}" for i in range(600)]
    ev_texts = [f"e{i}" for i in range(100)]
    embedder = _Table(dict(zip(texts + ev_texts, X, strict=True)))
    args = {"k_values": [3, 4, 5], "min_cluster_size": 1, "cache_dir": tmp, **kw}
    return (
        Regroup(embedder, NoReducer(), partial(FaissKMeans, seed=0, nredo=5), **args),
        texts,
        ev_texts,
    )


def test_pipeline_fit_sample_is_recorded_keyed_and_labels_every_point(tmp_path: Path) -> None:
    full, texts, ev = _toy_regroup(tmp_path)
    sampled, _, _ = _toy_regroup(tmp_path, fit_sample=200)
    other, _, _ = _toy_regroup(tmp_path, fit_sample=300)
    fps = {r.fingerprint(texts, ev) for r in (full, sampled, other)}
    assert len(fps) == 3  # fit_sample is part of the cache key
    a, b = full.run(texts, ev), sampled.run(texts, ev)
    assert b.train.shape == (600,) and b.eval.shape == (100,)
    assert adjusted_rand_score(a.train, b.train) == 1.0  # separated blobs: same domains
    rec = json.loads((b.folder / "regroup.json").read_text())["fit_sample"]
    assert rec == {"requested": 200, "size": 200, "n_train": 600, "seed": 0,
                   "assignment": "nearest centroid (faiss)"}  # fmt: skip
    assert a.report["fit_sample"] is None
    assert "sample of 200 of 600 training examples" in (b.folder / "regroup.md").read_text()
    assert not (b.folder / "reduced.npy").exists()
    assert _toy_regroup(tmp_path, fit_sample=200)[0].run(texts, ev).from_cache


def test_pipeline_fit_sample_of_every_point_is_recorded_not_dropped(tmp_path: Path) -> None:
    """``fit_sample >= n_train`` fits every point, and regroup.json / .md say so (it used to
    record ``null``, as if the key had not been set)."""
    full, texts, ev = _toy_regroup(tmp_path)
    big, _, _ = _toy_regroup(tmp_path, fit_sample=100_000)
    a, b = full.run(texts, ev), big.run(texts, ev)
    np.testing.assert_array_equal(a.train, b.train)  # the same fit as without a sample
    rec = json.loads((b.folder / "regroup.json").read_text())["fit_sample"]
    assert rec == {"requested": 100_000, "size": 600, "n_train": 600, "seed": 0,
                   "assignment": "every point fitted"}  # fmt: skip
    assert "fit_sample=100000 >= 600 training examples" in (b.folder / "regroup.md").read_text()


def test_pipeline_closes_the_embedder_after_embedding(tmp_path: Path) -> None:
    """Regroup releases the embedder (MiniLM's worker pool, its model) once both splits are
    embedded, instead of holding it through training."""

    class Closing(_Table):
        closed = 0

        def close(self) -> None:
            Closing.closed += 1

    r, texts, ev = _toy_regroup(tmp_path)
    r.embedder = Closing(r.embedder.table)
    r.run(texts, ev)
    assert Closing.closed == 1


def test_pipeline_float16_cache_is_a_float16_memmap(tmp_path: Path) -> None:
    r, texts, ev = _toy_regroup(tmp_path, embed_dtype="float16", fit_sample=300)
    X, Xe = r._embed(texts, ev)
    assert X.dtype == Xe.dtype == np.float16 and isinstance(X, np.memmap)
    r32, _, _ = _toy_regroup(tmp_path)
    assert r.fingerprint(texts, ev) != r32.fingerprint(texts, ev)
    X32 = r32._embed(texts, ev)[0]
    assert X32.dtype == np.float32  # its own cache entry, not the float16 one
    np.testing.assert_allclose(X, X32, rtol=1e-3, atol=1e-3)
    assert r.run(texts, ev).train.shape == (600,)


@pytest.mark.parametrize("option", ["kmeans", "minibatch", "faiss"])
def test_configs_compose_with_fit_sample(option: str, tmp_path: Path) -> None:
    over = [f"regroup={option}", "regroup.fit_sample=5000", "regroup.embed_dtype=float16"]
    regroup = instantiate(compose("train", [*over, f"output_dir={tmp_path}"]).regroup)
    assert regroup.fit_sample == 5000 and regroup.embed_dtype == "float16"
    assert regroup.streaming == "centroids"
    with pytest.raises(Exception, match="regroup.fit_sample"):
        instantiate(compose("train", ["regroup=hdbscan", "regroup.fit_sample=5000"]).regroup)


class _RecordingPCA(PCAReducer):
    """PCA that records the rows it is fitted on and the size of every transform call."""

    def __init__(self) -> None:
        super().__init__(n_components=3)
        self.fitted: np.ndarray | None = None
        self.sizes: list[int] = []

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        self.fitted = np.array(X)
        return super().fit_transform(X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        self.sizes.append(len(X))
        return super().transform(X)


def test_pipeline_fit_sample_reduces_on_the_seeded_sample_in_chunks(tmp_path: Path) -> None:
    """With a real reducer, the pipeline fits it on exactly ``sample_indices(n, m, seed)`` and
    reduces every row in ``embed_chunk_size`` chunks through a file in the work folder."""
    r, texts, ev = _toy_regroup(tmp_path, fit_sample=200, seed=5, embed_chunk_size=256)
    r.reducer = pca = _RecordingPCA()
    res = r.run(texts, ev)
    X, _ = r._embed(texts, ev)
    np.testing.assert_array_equal(pca.fitted, np.asarray(X)[sample_indices(600, 200, 5)])
    assert pca.sizes[:3] == [256, 256, 88]  # training rows, chunked; then the eval split
    assert res.train.shape == (600,) and not (res.folder / "reduced.npy").exists()
    assert res.report["fit_sample"]["seed"] == 5


def test_pipeline_fit_sample_equal_to_n_train_fits_every_point(tmp_path: Path) -> None:
    """``fit_sample == n_train`` exactly is "every point fitted", not a sample of them."""
    r, texts, ev = _toy_regroup(tmp_path, fit_sample=600)
    rec = r.run(texts, ev).report["fit_sample"]
    assert rec["assignment"] == "every point fitted" and rec["size"] == 600


def test_pipeline_fit_sample_hands_every_setting_to_the_sampled_sweep(
    tmp_path: Path, monkeypatch
) -> None:
    import rnb.regroup.sampled as sampled_mod

    seen: dict = {}
    real = sampled_mod.sweep_sampled

    def spy(X, sample, factory, values, chunk_size, **kw):
        seen.update(kw, chunk_size=chunk_size, values=list(values), n=len(sample))
        return real(X, sample, factory, values, chunk_size, **kw)

    monkeypatch.setattr(sampled_mod, "sweep_sampled", spy)
    settings = {"param": "n_clusters", "metric": "davies_bouldin", "silhouette_sample": 40,
                "silhouette_metric": "euclidean", "seed": 3, "min_cluster_size": 2,
                "noise_policy": "own_cluster"}  # fmt: skip
    r, texts, ev = _toy_regroup(tmp_path, fit_sample=200, embed_chunk_size=128, **settings)
    r.run(texts, ev)
    assert seen == {**settings, "chunk_size": 128, "values": [3, 4, 5], "n": 200}
