"""Tests for rnb.regroup.embedders: sentence-transformers (offline), TF-IDF+SVD, precomputed."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest

from rnb.regroup.embedders import (
    PrecomputedEmbedder,
    SentenceTransformerEmbedder,
    TfidfSvdEmbedder,
    resolve_model,
)

# --------------------------------------------------------------------------- sentence-transformers

ST_TEXTS = [
    "A man is eating food.",
    "A man eats a meal.",
    "The stock market fell sharply today.",
    "Children are playing football in the park after school.",
]


# Importing sentence-transformers/transformers and loading the model costs ~7 s on an idle
# 2-core machine (10-15 s under load) and the four tests below ~5 s together: they run by
# default, because MiniLM is the default embedder (`regroup/embedder=minilm`).


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def st_embedder():
    """The default embedder, loaded and used with the network made unreachable."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")

    def _no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    mp.setattr(socket.socket, "connect", _no_network)
    emb = SentenceTransformerEmbedder(progress=False, batch_size=3)
    emb.encode(ST_TEXTS[:1])  # load under the network block
    yield emb
    mp.undo()


def test_resolve_model_default_is_local() -> None:
    path = Path(resolve_model("all-MiniLM-L6-v2"))
    assert (path / "model.safetensors").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)
    assert resolve_model("/some/local/dir") == "/some/local/dir"


def test_st_dim_known_before_load() -> None:
    emb = SentenceTransformerEmbedder()
    assert emb.dim == 384 and emb._model is None  # read from the pooling config, no load


def test_st_shape_dtype_determinism(st_embedder) -> None:
    a = st_embedder.encode(ST_TEXTS)
    b = st_embedder.encode(ST_TEXTS)
    assert a.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert st_embedder.encode([]).shape == (0, 384)


def test_st_rows_keep_input_order(st_embedder) -> None:
    # Length-sorted batching must put rows back: compare with one-at-a-time encoding.
    together = st_embedder.encode(ST_TEXTS)
    single = np.concatenate([st_embedder.encode([t]) for t in ST_TEXTS])
    np.testing.assert_allclose(together, single, atol=1e-5)


def test_st_paraphrase_closer_than_unrelated(st_embedder) -> None:
    e = st_embedder.encode(ST_TEXTS)
    assert _cos(e[0], e[1]) > 0.7
    assert _cos(e[0], e[1]) > _cos(e[0], e[2]) + 0.4
    assert _cos(e[0], e[1]) > _cos(e[1], e[3])


def test_st_bf16_agrees_with_fp32(st_embedder) -> None:
    bf = SentenceTransformerEmbedder(bf16=True, progress=False, batch_size=3)
    bf._model = st_embedder._model  # share the loaded weights; autocast is per call
    a, b = st_embedder.encode(ST_TEXTS), bf.encode(ST_TEXTS)
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99
    assert not np.array_equal(a, b)  # autocast really ran in bf16


def test_st_fingerprint() -> None:
    base = SentenceTransformerEmbedder().fingerprint()
    assert (
        base == SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2").fingerprint()
    )
    # Speed-only settings do not change the key; output-changing ones do.
    assert base == SentenceTransformerEmbedder(batch_size=7, progress=False).fingerprint()
    assert base != SentenceTransformerEmbedder(bf16=True).fingerprint()
    assert base != SentenceTransformerEmbedder(max_seq_length=16).fingerprint()
    assert base != SentenceTransformerEmbedder(normalize=False).fingerprint()
    assert base != SentenceTransformerEmbedder(model="/other/model").fingerprint()


def test_st_bad_config() -> None:
    with pytest.raises(ValueError, match=r"regroup\.embedder\.batch_size"):
        SentenceTransformerEmbedder(batch_size=0)
    with pytest.raises(ValueError, match=r"embedder\.max_seq_length"):
        SentenceTransformerEmbedder(max_seq_length=0)
    with pytest.raises(ValueError, match=r"embedder\.processes"):
        SentenceTransformerEmbedder(processes=0)
    # a fraction is refused, not truncated to one worker
    with pytest.raises(ValueError, match=r"regroup\.embedder\.processes=1\.5: need a whole"):
        SentenceTransformerEmbedder(processes=1.5)
    assert SentenceTransformerEmbedder(processes=2.0, progress=False).processes == 2
    with pytest.raises(
        ValueError, match=r"regroup\.embedder\.processes=2 .* regroup\.embedder\.bf16=false"
    ):
        SentenceTransformerEmbedder(processes=2, bf16=True)
    # the pool only changes speed, so a cache built by 4 workers serves 1 and vice versa
    assert (
        SentenceTransformerEmbedder(processes=3).fingerprint()
        == SentenceTransformerEmbedder().fingerprint()
    )


def test_st_close_stops_the_pool_once_and_drops_the_model() -> None:
    """The pool's workers must not outlive Regroup (they used to stay up until exit)."""

    class FakeModel:
        def __init__(self) -> None:
            self.stopped: list[object] = []

        def start_multi_process_pool(self, devices):
            return {"devices": devices}

        def stop_multi_process_pool(self, pool) -> None:
            self.stopped.append(pool)

    emb = SentenceTransformerEmbedder(processes=2, progress=False)
    model = emb._model = FakeModel()
    pool = emb._start_pool()
    emb.close()
    emb.close()  # idempotent
    assert model.stopped == [pool] and pool == {"devices": ["cpu", "cpu"]}
    assert emb._pool is None and emb._model is None


@pytest.mark.slow  # spawns two workers that each import torch and load MiniLM (~30 s)
def test_st_two_process_pool_gives_the_single_process_embeddings(monkeypatch) -> None:
    # Offline by environment only: the pool hands tensors back over a local socket, so the
    # st_embedder fixture's blocked socket.connect would break it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    texts = [("word " * (i % 7 + 1)) + f"number {i}" for i in range(23)]  # mixed lengths
    one = SentenceTransformerEmbedder(batch_size=4, progress=False)
    pool = SentenceTransformerEmbedder(batch_size=4, progress=False, processes=2)
    a, b = one.encode(texts), pool.encode(texts)
    assert b.dtype == np.float32 and b.shape == a.shape
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)  # same batches, same numbers
    np.testing.assert_allclose(pool.encode(texts[::-1]), a[::-1], rtol=0, atol=1e-6)  # reused


# --------------------------------------------------------------------------- TF-IDF + SVD

PETS = [
    f"the {a} {b} likes {c} food"
    for a in ("cat", "dog", "kitten")
    for b in ("pet", "puppy")
    for c in ("fish", "meat")
]
MARKET = [
    f"{a} {b} prices {c} in trading"
    for a in ("stock", "bond", "equity")
    for b in ("market", "exchange")
    for c in ("rose", "fell")
]


def test_tfidf_separates_groups_and_is_deterministic() -> None:
    texts = PETS + MARKET
    e = TfidfSvdEmbedder(dim=8, seed=0, progress=False).encode(texts)
    assert e.shape == (24, 8) and e.dtype == np.float32
    np.testing.assert_array_equal(e, TfidfSvdEmbedder(dim=8, seed=0, progress=False).encode(texts))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    labels = np.array([0] * len(PETS) + [1] * len(MARKET))
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(texts), dtype=bool)
    assert sims[same & off_diag].mean() > sims[~same].mean() + 0.5
    # Every point is nearer to its own group's centroid.
    c = np.stack([e[labels == g].mean(0) for g in (0, 1)])
    assert (np.argmax(e @ c.T, axis=1) == labels).all()


def test_tfidf_matches_sklearn_reference_with_train_fit() -> None:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    train, evals = PETS + MARKET, ["a cat likes fish", "bond market fell", "zebra"]
    emb = TfidfSvdEmbedder(dim=5, seed=3, ngram_range=[1, 2], normalize=False, progress=False)
    emb.fit(train)
    got = emb.encode(evals)
    vec = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), dtype=np.float32)
    svd = TruncatedSVD(5, algorithm="randomized", random_state=3).fit(vec.fit_transform(train))
    np.testing.assert_allclose(got, svd.transform(vec.transform(evals)), atol=1e-5)
    assert np.all(got[2] == 0)  # no known n-gram -> zero vector
    norm = TfidfSvdEmbedder(dim=5, seed=3, progress=False).fit(train).encode(evals)
    assert np.isfinite(norm).all() and np.all(norm[2] == 0)  # normalising keeps it 0, not NaN


def test_tfidf_dim_shrinks_gracefully() -> None:
    emb = TfidfSvdEmbedder(dim=64, progress=False)
    assert emb.dim == 64
    with pytest.warns(UserWarning, match=r"embedder\.dim=64"):
        out = emb.encode(["alpha beta", "gamma delta", "alpha gamma"])
    assert out.shape == (3, 3) and emb.dim == 3


def test_tfidf_fingerprint_tracks_fit_corpus() -> None:
    a, b = TfidfSvdEmbedder(progress=False), TfidfSvdEmbedder(batch_size=2, progress=False)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != TfidfSvdEmbedder(seed=1).fingerprint()
    assert a.fingerprint() != TfidfSvdEmbedder(dim=32).fingerprint()
    unfitted = a.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(PETS)
        b.fit(MARKET)
    assert a.fingerprint() != unfitted and a.fingerprint() != b.fingerprint()


def test_fingerprints_name_the_public_class_path_not_the_backend_file() -> None:
    """Cache keys made before the embedders became a package (one file per backend) still hit."""
    from rnb.regroup.cache import fingerprint_config

    tfidf = {
        "dim": 64,
        "max_features": 20000,
        "ngram_range": [1, 2],
        "seed": 0,
        "normalize": True,
        "fitted_on": None,
    }
    assert TfidfSvdEmbedder().fingerprint() == fingerprint_config(
        "rnb.regroup.embedders.TfidfSvdEmbedder", tfidf
    )
    st = {
        "model": "/other/model",
        "package_version": None,
        "normalize": True,
        "bf16": False,
        "max_seq_length": None,
    }
    assert SentenceTransformerEmbedder(model="/other/model").fingerprint() == fingerprint_config(
        "rnb.regroup.embedders.SentenceTransformerEmbedder", st
    )
    assert TfidfSvdEmbedder.__module__ != "rnb.regroup.embedders"  # the file moved; the key did not


def test_tfidf_bad_input() -> None:
    with pytest.raises(ValueError, match=r"embedder\.dim"):
        TfidfSvdEmbedder(dim=0)
    with pytest.raises(ValueError, match=r"embedder\.ngram_range"):
        TfidfSvdEmbedder(ngram_range=(2, 1))
    with pytest.raises(ValueError, match="tfidf"):
        TfidfSvdEmbedder(progress=False).fit(["", " "])


# --------------------------------------------------------------------------- precomputed


def _vectors(n: int = 6, d: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d))


def test_precomputed_from_file(tmp_path) -> None:
    ref = _vectors()
    p64, p32 = tmp_path / "e64.npy", tmp_path / "e32.npy"
    np.save(p64, ref)
    np.save(p32, ref.astype(np.float32))
    texts = [str(i) for i in range(6)]
    out = PrecomputedEmbedder(path=str(p64), progress=False).encode(texts)
    assert out.dtype == np.float32 and out.shape == (6, 4)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    emb = PrecomputedEmbedder(path=str(p32), eval_path=str(p64), progress=False)
    mm = emb.encode(texts)
    assert isinstance(mm, np.memmap) and emb.dim == 4  # float32 stays memory-mapped
    np.testing.assert_array_equal(emb.encode_eval(texts), mm)
    with pytest.raises(ValueError, match=r"embedder.path: 6 embedding rows but 5"):
        emb.encode(texts[:5])
    with pytest.raises(ValueError, match=r"embedder\.eval_path"):
        PrecomputedEmbedder(path=str(p32), progress=False).encode_eval(texts)
    with pytest.raises(ValueError, match="not found"):
        PrecomputedEmbedder(path=str(tmp_path / "missing.npy")).encode(texts)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_precomputed_nonfinite_row(tmp_path, bad: float) -> None:
    arr = _vectors()
    arr[3, 2] = bad
    arr[5, 0] = bad
    np.save(tmp_path / "e.npy", arr)
    with pytest.raises(ValueError, match=r"embedder.path.*row 3\b"):
        PrecomputedEmbedder(path=str(tmp_path / "e.npy"), progress=False).encode(list("abcdef"))


def test_precomputed_from_column() -> None:
    ref = _vectors()
    records = [{"text": str(i), "emb": list(v)} for i, v in enumerate(ref)]
    emb = PrecomputedEmbedder(column="emb", progress=False)
    np.testing.assert_allclose(emb.from_records(records), ref, rtol=1e-6)
    np.testing.assert_allclose(emb.encode([r["emb"] for r in records]), ref, rtol=1e-6)
    records[4]["emb"][1] = float("nan")
    with pytest.raises(ValueError, match=r"embedder.column='emb'.*row 4"):
        emb.from_records(records)
    with pytest.raises(ValueError, match=r"embedder\.column='emb' not in record 0"):
        emb.from_records([{"text": "x"}])
    with pytest.raises(ValueError, match="equal-length"):
        emb.encode([[1.0, 2.0], [1.0]])


def test_precomputed_config_and_fingerprint(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        PrecomputedEmbedder()
    with pytest.raises(ValueError, match="exactly one"):
        PrecomputedEmbedder(path="a.npy", column="emb")
    p = tmp_path / "e.npy"
    np.save(p, _vectors())
    fp = PrecomputedEmbedder(path=str(p)).fingerprint()
    assert fp == PrecomputedEmbedder(path=str(p)).fingerprint()
    arr = _vectors()
    arr[0, 0] += 1.0
    np.save(p, arr)
    os.utime(p, ns=(1, 1))  # a different stamp even on coarse-mtime filesystems
    assert PrecomputedEmbedder(path=str(p)).fingerprint() != fp
    assert (
        PrecomputedEmbedder(column="a").fingerprint()
        != PrecomputedEmbedder(column="b").fingerprint()
    )
