"""Regroup's result cache: what the key describes, the lock-free read of a finished folder,
the re-check after waiting for the lock, and what the log says."""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans

import rnb.regroup.pipeline as pipeline_mod
from rnb.regroup.pipeline import Regroup
from rnb.regroup.pipeline_key import _describe
from tests.unit.test_fit_sample import _Table


class _Identity:
    is_identity = True

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return X

    transform = fit_transform

    def fingerprint(self) -> str:
        return "identity"


def _toy(tmp: Path, clusterer=None) -> tuple[Regroup, list[str], list[str]]:
    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in range(60)] + [f"e{i}" for i in range(12)]
    X = rng.normal(size=(72, 3)) + np.eye(3)[np.arange(72) % 3] * 6
    clusterer = clusterer or partial(KMeans, n_init=2, random_state=0)
    regroup = Regroup(
        _Table(dict(zip(texts, X, strict=True))), _Identity(), clusterer,
        k_values=[2, 3], min_cluster_size=1, cache_dir=tmp,
    )  # fmt: skip
    return regroup, texts[:60], texts[60:]


def test_the_key_describes_the_clusterers_class_and_arguments() -> None:
    assert _describe(partial(KMeans, n_init=2)) == {
        "target": "sklearn.cluster._kmeans.KMeans",
        "kwargs": {"n_init": 2},
    }
    assert _describe(MiniBatchKMeans) == {
        "target": "sklearn.cluster._kmeans.MiniBatchKMeans",
        "kwargs": {},
    }
    assert _describe("not a class") == {"target": ".not a class", "kwargs": {}}


def test_another_clusterer_class_with_the_same_arguments_is_another_key(tmp_path: Path) -> None:
    a, texts, ev = _toy(tmp_path)
    b, _, _ = _toy(tmp_path, partial(MiniBatchKMeans, n_init=2, random_state=0))
    assert a.fingerprint(texts, ev) != b.fingerprint(texts, ev)


def test_a_finished_folder_is_read_without_the_lock(tmp_path: Path, monkeypatch) -> None:
    regroup, texts, ev = _toy(tmp_path)
    first = regroup.run(texts, ev)

    def no_lock(folder: Path):
        raise AssertionError(f"took the lock of a finished folder {folder}")

    monkeypatch.setattr(pipeline_mod, "cache_lock", no_lock)
    again = regroup.run(texts, ev)
    assert again.from_cache and again.fingerprint == first.fingerprint


def test_a_result_published_while_waiting_for_the_lock_is_reused(
    tmp_path: Path, monkeypatch
) -> None:
    """Another process finished the same key while this one waited: the folder is re-checked
    under the lock and read, not computed again."""
    regroup, texts, ev = _toy(tmp_path)
    done = regroup.run(texts, ev)
    stash = tmp_path / "stash"
    done.folder.rename(stash)  # as if not finished yet when this run looked

    @contextlib.contextmanager
    def lock_while_the_other_finishes(folder: Path):
        stash.rename(folder)  # ... and published while this one waited
        yield

    monkeypatch.setattr(pipeline_mod, "cache_lock", lock_while_the_other_finishes)
    monkeypatch.setattr(Regroup, "_compute", lambda *a, **k: pytest.fail("computed again"))
    res = regroup.run(texts, ev)
    assert res.from_cache
    np.testing.assert_array_equal(res.train, done.train)


def test_the_log_says_computed_then_loaded_from_cache(tmp_path: Path, caplog) -> None:
    regroup, texts, ev = _toy(tmp_path)
    with caplog.at_level(logging.INFO, logger=pipeline_mod.log.name):
        res = regroup.run(texts, ev)
        regroup.run(texts, ev)
    said = [r.getMessage() for r in caplog.records if r.name == pipeline_mod.log.name]
    assert said[-2:] == [
        f"Regroup computed: {res.folder}",
        f"Regroup loaded from cache: {res.folder}",
    ]


class _Fitting(_Table):
    """A corpus-dependent embedder (like TF-IDF): records what it is fitted on."""

    def __init__(self, table: dict[str, np.ndarray], **attrs: bool) -> None:
        super().__init__(table)
        self.fits: list[list[str]] = []
        self.__dict__.update(attrs)

    def fit(self, texts: list[str]) -> None:
        self.fits.append(list(texts))
        self.is_fitted = True


@pytest.mark.parametrize(
    ("attrs", "fitted_by_the_key"),
    [({"is_fitted": False}, True), ({"is_fitted": True}, False), ({}, False)],
)
def test_the_key_fits_only_an_unfitted_corpus_dependent_embedder(
    tmp_path: Path, attrs: dict, fitted_by_the_key: bool
) -> None:
    regroup, texts, ev = _toy(tmp_path)
    regroup.embedder = emb = _Fitting(regroup.embedder.table, **attrs)
    regroup.fingerprint(texts, ev)
    assert emb.fits == ([texts] if fitted_by_the_key else [])
    regroup.fingerprint(texts, ev)  # fitted once, then never again
    assert len(emb.fits) == int(fitted_by_the_key)


class _Named(_Table):
    def __init__(self, table: dict[str, np.ndarray], name: str) -> None:
        super().__init__(table)
        self.name = name

    def fingerprint(self) -> str:
        return self.name


class _NamedIdentity(_Identity):
    def __init__(self, name: str) -> None:
        self.name = name

    def fingerprint(self) -> str:
        return self.name


def test_the_key_covers_the_embedders_and_reducers_fingerprints(tmp_path: Path) -> None:
    """Another embedder or reducer (same inputs, same settings) is another result folder."""
    regroup, texts, ev = _toy(tmp_path)
    table = regroup.embedder.table
    keys = set()
    for emb, red in (("e1", "r1"), ("e2", "r1"), ("e1", "r2")):
        regroup.embedder, regroup.reducer = _Named(table, emb), _NamedIdentity(red)
        keys.add(regroup.fingerprint(texts, ev))
    assert len(keys) == 3


def test_column_vectors_add_to_the_texts_in_the_key(tmp_path: Path) -> None:
    """With column vectors the texts still enter the key (they feed the report)."""
    regroup, texts, ev = _toy(tmp_path)
    vectors = ([[1.0, 0.0, 0.0]] * len(texts), [[0.0, 1.0, 0.0]] * len(ev))

    class _Column(_Table):
        def encode(self, items) -> np.ndarray:
            return np.asarray(items, dtype=np.float32)

    regroup.embedder = _Column({})
    a = regroup.fingerprint(texts, ev, vectors=vectors)
    b = regroup.fingerprint([t + "!" for t in texts], ev, vectors=vectors)
    assert a != b
