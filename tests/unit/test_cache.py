"""Tests for rnb.regroup.cache: fingerprints, keys, cache hits and chunked resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pytest

from rnb.regroup.cache import (
    EmbeddingCache,
    fingerprint_array,
    fingerprint_config,
    fingerprint_texts,
    make_key,
)
from rnb.regroup.embedders import TfidfSvdEmbedder


def _vec(text: str, dim: int = 5) -> np.ndarray:
    # Deterministic pseudo-embedding of one text, independent of batching.
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


class CountingEmbedder:
    """Fake embedder that records how many calls / texts it served."""

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.calls = 0
        self.texts_seen: list[str] = []
        self.fail_after_calls = fail_after_calls

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise RuntimeError("simulated interruption")
        self.calls += 1
        self.texts_seen.extend(texts)
        return np.stack([_vec(t) for t in texts])


TEXTS = [f"text number {i} about {'abc'[i % 3]}" for i in range(10)]


def test_fingerprint_texts_stable_and_sensitive() -> None:
    fp = fingerprint_texts(TEXTS)
    assert fp == fingerprint_texts(list(TEXTS)) and len(fp) == 64
    assert fp != fingerprint_texts(TEXTS[::-1])  # order matters: rows align to it
    assert fp != fingerprint_texts([*TEXTS[:-1], TEXTS[-1] + " "])
    assert fp != fingerprint_texts(TEXTS[:-1])
    # Concatenation boundaries must not collide.
    assert fingerprint_texts(["ab", "c"]) != fingerprint_texts(["a", "bc"])
    assert fingerprint_texts([]) != fingerprint_texts([""])
    with pytest.raises(ValueError, match=r"data\.embed_fields / data\.text_fields"):
        fingerprint_texts(["ok", 3])  # type: ignore[list-item]


def test_make_key_and_config_fingerprint() -> None:
    k = make_key("a", "b")
    assert k == make_key("a", "b") and len(k) == 64
    assert k != make_key("b", "a")
    assert k != make_key("a", "c")
    assert make_key("ab", "c") != make_key("a", "bc")
    with pytest.raises(ValueError):
        make_key()
    assert fingerprint_config("X", {"a": 1, "b": 2}) == fingerprint_config("X", {"b": 2, "a": 1})
    assert fingerprint_config("X", {"a": 1}) != fingerprint_config("Y", {"a": 1})
    assert fingerprint_config("X", {"a": 1}) != fingerprint_config("X", {"a": 2})


def test_fingerprint_array_blocks_match() -> None:
    a = np.arange(30, dtype=np.float32).reshape(10, 3)
    assert fingerprint_array(a, block_rows=3) == fingerprint_array(a, block_rows=100)
    b = a.copy()
    b[7, 1] += 1
    assert fingerprint_array(a) != fingerprint_array(b)
    assert fingerprint_array(a) != fingerprint_array(a.astype(np.float64))
    assert fingerprint_array(a) != fingerprint_array(a.reshape(3, 10))


def test_cache_hit_does_not_call_embedder(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    emb = CountingEmbedder()
    key = make_key(fingerprint_texts(TEXTS), "fake")
    first = np.array(cache.get_or_compute(key, TEXTS, emb, chunk_size=4))
    assert emb.calls == 3 and len(emb.texts_seen) == 10
    assert cache.path(key).is_file()
    assert not list((tmp_path / "embeddings").glob("*.partial.*"))
    np.testing.assert_array_equal(first, np.stack([_vec(t) for t in TEXTS]))

    second = cache.get_or_compute(key, TEXTS, emb, chunk_size=4)
    assert emb.calls == 3  # no recomputation
    assert isinstance(second, np.memmap) and second.dtype == np.float32
    np.testing.assert_array_equal(second, first)
    assert cache.has(key)


def test_resume_after_interruption(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = make_key(fingerprint_texts(TEXTS), "fake")
    broken = CountingEmbedder(fail_after_calls=2)
    with pytest.raises(RuntimeError, match="simulated"):
        cache.get_or_compute(key, TEXTS, broken, chunk_size=3)
    progress = json.loads(cache.path(key).with_suffix(".partial.json").read_text())
    assert progress["done"] == 2 and progress["n"] == 10
    assert not cache.has(key)

    emb = CountingEmbedder()
    out = cache.get_or_compute(key, TEXTS, emb, chunk_size=3)
    assert emb.texts_seen == TEXTS[6:]  # only the two unfinished chunks
    assert emb.calls == 2
    np.testing.assert_array_equal(out, np.stack([_vec(t) for t in TEXTS]))
    assert not cache.path(key).with_suffix(".partial.json").exists()


def test_resume_with_other_chunk_size_starts_over(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = make_key(fingerprint_texts(TEXTS), "fake")
    with pytest.raises(RuntimeError):
        cache.get_or_compute(key, TEXTS, CountingEmbedder(fail_after_calls=1), chunk_size=3)
    emb = CountingEmbedder()
    out = cache.get_or_compute(key, TEXTS, emb, chunk_size=5)
    assert emb.texts_seen == TEXTS
    np.testing.assert_array_equal(out, np.stack([_vec(t) for t in TEXTS]))


def test_unfitted_corpus_embedder_is_fitted_on_all_texts(tmp_path) -> None:
    # Chunking must not fit TF-IDF on the first chunk only.
    texts = [f"{w} {w}s and {v}" for w in ("cat", "dog", "stock", "bond") for v in ("x", "y", "z")]
    ref = TfidfSvdEmbedder(dim=4, progress=False).encode(texts)
    emb = TfidfSvdEmbedder(dim=4, progress=False)
    key = make_key(fingerprint_texts(texts), emb.fingerprint())
    out = EmbeddingCache(tmp_path).get_or_compute(key, texts, emb, chunk_size=5)
    np.testing.assert_allclose(out, ref, atol=1e-6)


class _BadEmbedder:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.mode == "shape":
            return np.zeros((len(texts) + 1, 3), dtype=np.float32)
        out = np.zeros((len(texts), 3), dtype=np.float32)
        out[-1, 0] = np.nan
        return out


@pytest.mark.parametrize(("mode", "msg"), [("shape", "shape"), ("nan", "row 2")])
def test_bad_embedder_output(tmp_path, mode: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        EmbeddingCache(tmp_path).get_or_compute("k", TEXTS[:3], _BadEmbedder(mode))


def test_bad_inputs(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        cache.get_or_compute("k", [], CountingEmbedder())
    with pytest.raises(ValueError, match="chunk_size"):
        cache.get_or_compute("k", TEXTS, CountingEmbedder(), chunk_size=0)
    with pytest.raises(ValueError, match="cache key"):
        cache.get_or_compute("../evil", TEXTS, CountingEmbedder())
    cache.get_or_compute("k", TEXTS, CountingEmbedder())
    with pytest.raises(ValueError, match="cache_dir"):
        cache.get_or_compute("k", TEXTS[:4], CountingEmbedder())
