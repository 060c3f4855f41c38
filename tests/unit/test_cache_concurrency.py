"""Processes sharing one cache (issue 8 kind 11) and caches tied to the code version.

Each race starts its processes together at a barrier on one cache directory; every
process must succeed with the same result, and the work must be done once (the others
wait on the entry's lock and reuse it).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra.utils import instantiate

import rnb
import rnb.data.tokenize as tokenize
from rnb.config import compose
from rnb.data.sources import build_texts
from rnb.data.synthetic import SyntheticConfig, generate
from rnb.regroup.cache import EmbeddingCache
from rnb.regroup.pipeline import Regroup

# fork: the children inherit the objects built here (and the monkeypatched counters). Only
# for races whose work runs no OpenMP: a forked child of a parent whose OpenMP pool already
# ran (torch, scikit-learn's k-means in earlier tests) can hang in its first parallel
# region. Races that cluster run in spawned children (`SPAWN`).
CTX = mp.get_context("fork")
SPAWN = mp.get_context("spawn")


def _target(barrier: Any, queue: Any, fn: Callable[..., Any], args: tuple) -> None:
    barrier.wait()
    try:
        queue.put(("ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which fails the test
        queue.put(("error", f"{type(err).__name__}: {err}"))


def _race(
    fn: Callable[..., Any], *args: Any, n: int = 2, timeout: float = 240.0, ctx: Any = CTX
) -> list[Any]:
    """Run ``fn(*args)`` in ``n`` processes released together; return their results.

    With ``ctx=SPAWN``, ``fn`` must be a module-level function and ``args`` picklable.
    """
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_target, args=(barrier, queue, fn, args)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=timeout) for _ in procs]
    finally:  # a hung child must not outlive the test (the suite would wait for it at exit)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [r for status, r in results if status == "error"]
    assert not errors, errors
    return [r for _, r in results]


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    train, ev = generate(SyntheticConfig(n_train=400, n_eval=80, seed=0))
    return build_texts(train, ["prompt"]), build_texts(ev, ["prompt"])


def _regroup(cache: Path) -> Regroup:
    cfg = compose(
        "train",
        [
            "regroup=kmeans",
            "regroup/embedder=tfidf",
            "regroup.embedder.progress=false",
            "regroup.k_values=[4,6]",
            f"data.cache_dir={cache}",
        ],
    )
    return instantiate(cfg.regroup, _convert_="all")


def _regroup_run(cache: str, texts: tuple[list[str], list[str]]) -> tuple:
    res = _regroup(Path(cache)).run(*texts)
    return res.train, res.eval, res.from_cache, str(res.folder)


def test_two_processes_regroup_once_into_one_cache(texts, tmp_path: Path) -> None:
    """The reproducer's crash (FileNotFoundError in a shared `<fingerprint>.tmp`) is gone:
    both finish, one computes, the other reuses the same folder."""
    (tr_a, ev_a, cached_a, dir_a), (tr_b, ev_b, cached_b, dir_b) = _race(
        _regroup_run, str(tmp_path), texts, ctx=SPAWN
    )
    np.testing.assert_array_equal(tr_a, tr_b)
    np.testing.assert_array_equal(ev_a, ev_b)
    assert dir_a == dir_b and sorted([cached_a, cached_b]) == [False, True]
    leftovers = [p.name for p in (tmp_path / "regroup").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


class _SlowEmbedder:
    """Deterministic 3-d embeddings; counts encode calls across processes."""

    def __init__(self, calls: Any) -> None:
        self.calls = calls

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self.calls.get_lock():
            self.calls.value += 1
        time.sleep(0.05)  # widen the race window
        return np.array([[len(t), t.count("a"), t.count(" ")] for t in texts], np.float32)


def test_two_processes_embed_one_key_once(texts, tmp_path: Path) -> None:
    """The chunked `.partial.npy` has one writer: the second process waits and loads."""
    calls = CTX.Value("i", 0)
    cache, emb = EmbeddingCache(tmp_path), _SlowEmbedder(calls)
    train = texts[0]
    outs = _race(lambda: np.array(cache.get_or_compute("k1", train, emb, chunk_size=50)))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], emb.encode(train))
    assert calls.value == 8 + 1  # 8 chunks embedded once, plus the reference call above


def test_two_processes_train_the_bpe_once(texts, tmp_path: Path, monkeypatch) -> None:
    trained = CTX.Value("i", 0)
    real = tokenize._train_bpe

    def counted(*args: Any) -> None:
        with trained.get_lock():
            trained.value += 1
        real(*args)

    monkeypatch.setattr(tokenize, "_train_bpe", counted)
    corpus = texts[0]
    vocabs = _race(lambda: tokenize.load_tokenizer("bpe", corpus, tmp_path, 400, 2).get_vocab())
    assert vocabs[0] == vocabs[1] and trained.value == 1


def test_a_new_code_version_misses_every_cache(texts, tmp_path: Path, monkeypatch) -> None:
    """Issue 9 item 3: labels, embeddings and the tokenizer computed by another rnb
    version are never reused."""
    first = _regroup(tmp_path).run(*texts)
    cache, emb = EmbeddingCache(tmp_path), _SlowEmbedder(CTX.Value("i", 0))
    cache.get_or_compute("k2", texts[0], emb, chunk_size=400)
    tok_files = lambda: sorted((tmp_path / "tokenizers").glob("*/tokenizer.json"))  # noqa: E731
    tokenize.load_tokenizer("bpe", texts[0], tmp_path, 400, 2)
    assert len(tok_files()) == 1 and cache.has("k2")

    monkeypatch.setattr(rnb, "__version__", "999.0.0")
    again = _regroup(tmp_path).run(*texts)
    assert not again.from_cache and again.fingerprint != first.fingerprint
    np.testing.assert_array_equal(again.train, first.train)  # same code, same labels
    assert not cache.has("k2")
    tokenize.load_tokenizer("bpe", texts[0], tmp_path, 400, 2)
    assert len(tok_files()) == 2
