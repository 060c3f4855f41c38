"""Regroup pipeline: cache hits, `original` domains, eval assignment, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from rnb.config import compose
from rnb.data.sources import build_texts
from rnb.data.synthetic import SyntheticConfig, generate
from rnb.regroup.pipeline import Regroup


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    return generate(SyntheticConfig(n_train=600, n_eval=120, seed=0))


def _regroup(tmp: Path, *over: str, base: tuple[str, ...] | None = None) -> Regroup:
    if base is None:
        base = ("regroup=kmeans", "regroup/embedder=tfidf", "regroup.k_values=[4,8]")
    cfg = compose("train", [*base, "regroup.embedder.progress=false", *over])
    cfg.regroup.cache_dir = str(tmp / "cache")
    return instantiate(cfg.regroup, _convert_="all")


def _run(regroup: Regroup, data: tuple[list[dict], list[dict]], **kw):
    train, ev = data
    fields = ["prompt", "response"]
    kw = {
        "predefined": [r["domain"] for r in train],
        "predefined_eval": [r["domain"] for r in ev],
        "reference": [r["reference"] for r in train],
        **kw,
    }
    return regroup.run(build_texts(train, fields), build_texts(ev, fields), **kw)


def test_second_run_is_a_cache_hit(data, tmp_path: Path, monkeypatch) -> None:
    first = _run(_regroup(tmp_path), data)
    assert not first.from_cache
    calls = []
    monkeypatch.setattr(Regroup, "_compute", lambda *a, **k: calls.append(1))
    second = _run(_regroup(tmp_path), data)
    assert not calls and second.from_cache
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.eval, second.eval)
    assert first.fingerprint == second.fingerprint
    monkeypatch.undo()
    # any setting change is a new fingerprint
    other = _run(_regroup(tmp_path, "regroup.min_cluster_size=3"), data)
    assert other.fingerprint != first.fingerprint
    # so are other reference labels (the report's agreement depends on them)
    train, ev = data
    shuffled = _run(_regroup(tmp_path), (train, ev), reference=["x"] * len(train))
    assert shuffled.fingerprint != first.fingerprint
    # and other predefined domains (the report's contingency table is over them)
    regrouped = _run(_regroup(tmp_path), (train, ev), predefined=["x"] * len(train))
    assert regrouped.fingerprint not in (first.fingerprint, shuffled.fingerprint)
    assert regrouped.report["contingency"]["domains"] == ["x"]


def test_reports_stay_in_the_cache_until_written(data, tmp_path: Path) -> None:
    res = _run(_regroup(tmp_path), data)
    assert res.folder.parent == tmp_path / "cache" / "regroup"
    assert not (tmp_path / "out").exists()
    written = res.write_reports(tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["regroup.json", "regroup.md", "regroup_sweep.json", "regroup_sweep.png"]
    assert (tmp_path / "out" / "regroup.md").read_bytes() == (
        res.folder / "regroup.md"
    ).read_bytes()


def test_eval_goes_to_nearest_training_centroid(data, tmp_path: Path) -> None:
    res = _run(_regroup(tmp_path), data)
    assert res.eval.shape == (len(data[1]),)
    assert set(res.eval.tolist()) <= set(range(len(res.names)))
    assert 2 <= res.summary["k"] <= 8


def test_original_keeps_predefined_domains(data, tmp_path: Path) -> None:
    res = _run(_regroup(tmp_path, base=("regroup=original",)), data)
    assert res.names == sorted({r["domain"] for r in data[0]})
    expected = np.array([res.names.index(r["domain"]) for r in data[0]])
    np.testing.assert_array_equal(res.train, expected)
    agree = res.report["agreement"]
    assert agree["clusters_vs_reference"] == pytest.approx(agree["domains_vs_reference"])
    assert "predefined domains" in res.summary["why"]
    assert res.summary["k"] == len(res.names)


def test_original_needs_predefined_domains(data, tmp_path: Path) -> None:
    train, ev = data
    regroup = _regroup(tmp_path, base=("regroup=original",))
    with pytest.raises(ValueError, match="data.domain_field"):
        regroup.run(build_texts(train, ["prompt"]), build_texts(ev, ["prompt"]))


def test_empty_eval_and_bad_k(data, tmp_path: Path) -> None:
    train, _ = data
    with pytest.raises(ValueError, match="eval split is empty"):
        _regroup(tmp_path).run(build_texts(train, ["prompt"]), [])
    with pytest.raises(ValueError, match="regroup.k_values"):
        _run(_regroup(tmp_path, "regroup.k_values=[1,4]"), data)
    with pytest.raises(ValueError, match="regroup.k_values"):
        _run(_regroup(tmp_path, "regroup.k_values=[4,5000]"), data)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 3
    return (rng.normal(size=(n, 4)) * 0.05 + np.eye(4)[truth] * 5).astype(np.float32), truth


def test_precomputed_column_vectors_are_what_regroup_clusters(tmp_path: Path) -> None:
    """Column mode: the DataModule passes the record vectors (`vectors=`), the texts only
    feed the report; both enter the fingerprint."""
    from sklearn.metrics import adjusted_rand_score

    X, truth = _blobs(90, 0)
    Xe, truth_e = _blobs(30, 1)
    regroup = _regroup(
        tmp_path,
        "regroup/embedder=precomputed",
        "regroup.embedder.column=emb",
        "regroup.embedder.progress=false",
        "regroup.k_values=[2,3,4]",
        "regroup.min_cluster_size=1",
        base=("regroup=kmeans",),
    )
    assert regroup.input_column == "emb"
    texts = [f"text {i}" for i in range(90)]
    ev_texts = [f"eval {i}" for i in range(30)]
    with pytest.raises(ValueError) as err:
        regroup.run(texts, ev_texts)
    assert str(err.value) == (
        "regroup.embedder.column='emb': pass the column's vectors "
        "(Regroup.run(..., vectors=(train, eval)))"
    )
    res = regroup.run(texts, ev_texts, vectors=(X.tolist(), Xe.tolist()))
    assert res.summary["k"] == 3
    assert adjusted_rand_score(truth, res.train) == 1.0
    assert adjusted_rand_score(truth_e, res.eval) == 1.0
    moved = regroup.run(texts, ev_texts, vectors=((X + 1).tolist(), Xe.tolist()))
    assert moved.fingerprint != res.fingerprint


def test_datamodule_hands_regroup_the_embed_fields(tmp_path: Path, monkeypatch) -> None:
    """`data.embed_fields` (not the model's text) is what Regroup receives, with the
    predefined and reference labels of both splits."""
    seen: dict = {}

    def fake_run(self, texts, ev_texts, **kw):
        seen.update(texts=texts, ev_texts=ev_texts, **kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(Regroup, "run", fake_run)
    cfg = compose(
        "train",
        [
            "regroup=kmeans",
            "data.synthetic.n_train=50",
            "data.synthetic.n_eval=10",
            "data.embed_fields=[prompt]",
        ],
    )
    dm = instantiate(cfg.data, regroup=instantiate(cfg.regroup), _recursive_=False)
    with pytest.raises(RuntimeError, match="stop"):
        dm.prepare_domains()
    train, ev = dm.load_splits()
    assert seen["texts"] == [r["prompt"] for r in train]
    assert seen["ev_texts"] == [r["prompt"] for r in ev]
    assert seen["predefined"] == [r["domain"] for r in train]
    assert seen["predefined_eval"] == [r["domain"] for r in ev]
    assert seen["reference"] == [r["reference"] for r in train]
    assert seen["vectors"] is None


def test_datamodule_passes_the_vector_column(tmp_path: Path) -> None:
    import json

    X, truth = _blobs(120, 2)
    rows = [{"text": f"row {i}", "emb": x.tolist()} for i, x in enumerate(X)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    over = [
        "data=files",
        f"data.train_path={path}",
        "data.eval_fraction=0.25",
        "regroup=kmeans",
        "regroup/embedder=precomputed",
        "regroup.embedder.column=emb",
        "regroup.embedder.progress=false",
        "regroup.k_values=[2,3,4]",
        "regroup.min_cluster_size=1",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    cfg = compose("train", over)
    dm = instantiate(cfg.data, regroup=instantiate(cfg.regroup, _convert_="all"), _recursive_=False)
    labels = dm.prepare_domains()
    assert labels.names == ["c00", "c01", "c02"]
    train, _ = dm.load_splits()
    by_text = {r["text"]: t for r, t in zip(rows, truth, strict=True)}
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score([by_text[r["text"]] for r in train], labels.train) == 1.0
    rows[3].pop("emb")
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(ValueError, match="regroup.embedder.column='emb' missing"):
        instantiate(cfg.data, regroup=dm.regroup, _recursive_=False).prepare_domains()


# ---------------------------------------------------------------- pinned by mutation testing
class _Lookup:
    """Embedder with a fixed vector per text: instant and exactly known."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def encode(self, texts) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def fingerprint(self) -> str:
        return "lookup"


class _Shift:
    """Reducer that records its calls and moves every point (so a skipped call shows)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(("fit_transform", len(X)))
        return np.asarray(X, dtype=np.float64) * 2.0 + 1.0

    def transform(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(("transform", len(X)))
        return np.asarray(X, dtype=np.float64) * 2.0 + 1.0

    def fingerprint(self) -> str:
        return "shift"


def _toy(n: int, seed: int, prefix: str) -> tuple[list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    texts = [f"{prefix}{i}" for i in range(n)]
    vecs = rng.normal(size=(n, 3)) * 0.6 + np.eye(3)[np.arange(n) % 3] * 4
    return texts, dict(zip(texts, vecs, strict=True))


def _toy_regroup(tmp: Path, **kw) -> tuple[Regroup, list[str], list[str]]:
    from functools import partial

    from sklearn.cluster import KMeans

    texts, table = _toy(60, 0, "t")
    ev_texts, ev_table = _toy(24, 1, "e")
    args = {"k_values": [2, 3, 4], "min_cluster_size": 1, "cache_dir": tmp, **kw}
    embedder = _Lookup({**table, **ev_table})
    regroup = Regroup(embedder, _Shift(), partial(KMeans, n_init=2, random_state=0), **args)
    return regroup, texts, ev_texts


def test_defaults_equal_the_kmeans_yaml(tmp_path: Path) -> None:
    cfg = compose("train", ["regroup=kmeans"]).regroup
    r = Regroup(None, None, None)
    for key in ("param", "metric", "silhouette_sample", "silhouette_metric", "min_cluster_size",
                "noise_policy", "ood_quantile", "embed_chunk_size"):  # fmt: skip
        assert getattr(r, key) == cfg[key], key
    assert r.k_values == list(cfg.k_values) and r.seed == 0
    assert r.cache_dir == Path(".rnb_cache")
    rng = Regroup(None, None, None, k_values={"start": 2, "stop": 5})
    assert rng.k_values == {"start": 2, "stop": 5}


def test_labels_files_follow_the_reduced_embeddings(tmp_path: Path) -> None:
    from rnb.regroup.assign import assign_to_centroids

    regroup, texts, ev_texts = _toy_regroup(tmp_path, ood_quantile=0.5)
    res = regroup.run(texts, ev_texts)
    assert regroup.reducer.calls == [("fit_transform", 60), ("transform", 24)]
    assert res.names == ["c00", "c01", "c02"] and res.summary["k"] == 3
    X = regroup.reducer.fit_transform(regroup.embedder.encode(texts)).astype(np.float32)
    Xe = regroup.reducer.transform(regroup.embedder.encode(ev_texts)).astype(np.float32)
    centers = np.stack([X[res.train == c].mean(0) for c in range(3)])
    expected = assign_to_centroids(Xe, centers, X, res.train, ood_quantile=0.5)
    np.testing.assert_array_equal(res.eval, expected.labels)
    saved = np.load(res.folder / "labels.npz")
    assert sorted(saved.files) == ["eval", "eval_distance", "eval_ood", "train"]
    np.testing.assert_allclose(saved["eval_distance"], expected.distances, rtol=1e-5)
    np.testing.assert_array_equal(saved["eval_ood"], expected.ood_mask)
    assert 0 < expected.n_ood < 24 and res.summary["ood_eval"] == expected.n_ood
    assert json.loads((res.folder / "names.json").read_text()) == res.names
    assert (res.folder / "sweep.json").exists() and (res.folder / "sweep.png").exists()
    sweep = json.loads((res.folder / "sweep.json").read_text())
    assert [r["value"] for r in sweep["rows"]] == [2, 3, 4] and sweep["param"] == "n_clusters"


def test_fingerprint_covers_every_setting_and_input(tmp_path: Path) -> None:
    regroup, texts, ev_texts = _toy_regroup(tmp_path)
    base = regroup.fingerprint(texts, ev_texts)
    assert len(base) == 20 and base == regroup.fingerprint(list(texts), list(ev_texts))
    changed = {
        "param": "min_cluster_size", "k_values": [2, 3], "metric": "davies_bouldin",
        "silhouette_sample": 50, "silhouette_metric": "euclidean", "min_cluster_size": 2,
        "noise_policy": "own_cluster", "ood_quantile": 0.9, "seed": 1,
    }  # fmt: skip
    seen = {base}
    for key, value in changed.items():
        other, _, _ = _toy_regroup(tmp_path, **{key: value})
        seen.add(other.fingerprint(texts, ev_texts))
    other, _, _ = _toy_regroup(tmp_path)
    other.clusterer = other.clusterer.func  # same class, other keyword arguments
    seen.add(other.fingerprint(texts, ev_texts))
    seen.add(regroup.fingerprint(texts[::-1], ev_texts))
    seen.add(regroup.fingerprint(texts, ev_texts[1:]))
    seen.add(regroup.fingerprint(texts, ev_texts, predefined=["a"] * 60))
    seen.add(regroup.fingerprint(texts, ev_texts, reference=["a"] * 60))
    assert len(seen) == len(changed) + 6
    same_chunks, _, _ = _toy_regroup(tmp_path, embed_chunk_size=7)  # no effect on results
    assert same_chunks.fingerprint(texts, ev_texts) == base


def test_predefined_domains_and_run_errors(tmp_path: Path) -> None:
    labels, names = Regroup._predefined(["web", 3, "web", "code"], ["code", 3])
    assert names == ["3", "code", "web"] and labels.tolist() == [2, 0, 2, 1]
    assert labels.dtype == np.int64
    with pytest.raises(ValueError) as err:
        Regroup._predefined(["web"], ["web", "news", "blog"])
    assert (
        str(err.value)
        == "data.domain_field: eval domains ['blog', 'news'] have no training examples"
    )
    with pytest.raises(ValueError) as err:
        Regroup._predefined(None, None)
    assert str(err.value) == "regroup=original needs data.domain_field (the predefined domains)"
    regroup, texts, ev_texts = _toy_regroup(tmp_path)
    for kw, message in (
        ({"predefined": ["a"] * 59}, "data.domain_field: 59 labels for 60 texts"),
        ({"reference": ["a"] * 61}, "data.reference_field: 61 labels for 60 texts"),
    ):
        with pytest.raises(ValueError) as err:
            regroup.run(texts, ev_texts, **kw)
        assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        regroup.run(texts, [])
    assert str(err.value) == "the eval split is empty: set data.eval_path or data.eval_fraction"
    assert regroup.input_column is None and not regroup.keeps_predefined_domains


def test_a_failed_compute_leaves_no_partial_folder(tmp_path: Path, monkeypatch) -> None:
    regroup, texts, ev_texts = _toy_regroup(tmp_path)

    def crash(self, folder: Path, *args) -> None:
        (folder / "labels.npz").write_bytes(b"half")  # written before the crash
        raise RuntimeError("boom")

    monkeypatch.setattr(Regroup, "_compute", crash)
    with pytest.raises(RuntimeError, match="boom"):
        regroup.run(texts, ev_texts)
    left = sorted(p.name for p in (tmp_path / "regroup").iterdir())
    assert left == [regroup.fingerprint(texts, ev_texts) + ".lock"]  # no result, no temp folder


class _Recording(_Lookup):
    """Lookup embedder that records the size of every ``encode`` call."""

    def __init__(self, table: dict[str, np.ndarray], name: str = "lookup") -> None:
        super().__init__(table)
        self.name, self.sizes = name, []

    def encode(self, texts) -> np.ndarray:
        self.sizes.append(len(texts))
        return super().encode(texts)

    def fingerprint(self) -> str:
        return self.name


def test_every_setting_reaches_the_sweep_and_float32_the_clusterer(
    tmp_path: Path, monkeypatch
) -> None:
    import rnb.regroup.assign as assign_mod
    import rnb.regroup.selection as selection_mod

    seen: dict = {}
    real_sweep, real_assign = selection_mod.sweep, assign_mod.assign_to_centroids

    def sweep_spy(X, factory, values, **kw):
        seen["sweep"], seen["X"] = kw, X.dtype
        return real_sweep(X, factory, values, **kw)

    def assign_spy(X_eval, centers, train_X, labels, **kw):
        seen["assign"] = (X_eval.dtype, train_X.dtype, kw)
        return real_assign(X_eval, centers, train_X, labels, **kw)

    monkeypatch.setattr(selection_mod, "sweep", sweep_spy)
    monkeypatch.setattr(assign_mod, "assign_to_centroids", assign_spy)
    settings = {"param": "n_clusters", "metric": "davies_bouldin", "silhouette_sample": 40,
                "silhouette_metric": "euclidean", "seed": 3, "min_cluster_size": 2,
                "noise_policy": "own_cluster"}  # fmt: skip
    regroup, texts, ev_texts = _toy_regroup(tmp_path, ood_quantile=0.8, **settings)
    regroup.run(texts, ev_texts)
    assert seen["sweep"] == settings and seen["X"] == np.float32
    assert seen["assign"] == (np.float32, np.float32, {"ood_quantile": 0.8})


def test_embeddings_are_cached_per_embedder_in_chunks(tmp_path: Path) -> None:
    texts, table = _toy(60, 0, "t")
    ev_texts, ev_table = _toy(24, 1, "e")
    first = _Recording({**table, **ev_table})
    r = Regroup(first, _Shift(), None, embed_chunk_size=25, cache_dir=tmp_path)
    r._embed(texts, ev_texts)
    assert first.sizes == [25, 25, 10, 24]  # rows embedded (and cached) per chunk
    other = _Recording({t: -v for t, v in {**table, **ev_table}.items()}, name="other")
    X, _ = Regroup(other, _Shift(), None, cache_dir=tmp_path)._embed(texts, ev_texts)
    assert other.sizes == [60, 24]  # another embedder never reuses the first one's vectors
    np.testing.assert_allclose(X[0], -table[texts[0]], rtol=1e-6)


def test_original_checks_the_eval_domains(tmp_path: Path) -> None:
    from functools import partial

    from rnb.regroup.clusterers import OriginalDomains

    regroup, texts, ev_texts = _toy_regroup(tmp_path)
    regroup.clusterer = partial(OriginalDomains)
    doms = ["x", "y", "z"] * 20
    with pytest.raises(ValueError) as err:
        regroup.run(texts, ev_texts, predefined=doms, predefined_eval=["x"] * 23 + ["w"])
    assert str(err.value) == "data.domain_field: eval domains ['w'] have no training examples"
    res = regroup.run(texts, ev_texts, predefined=doms, predefined_eval=["x"] * 24)
    assert res.names == ["x", "y", "z"] and res.train.tolist() == [0, 1, 2] * 20


def test_the_report_gets_the_runs_sweep_reduced_embeddings_and_seed(
    tmp_path: Path, monkeypatch
) -> None:
    """`build_report` receives the sweep that chose k, the reduced training embeddings (for
    the representative examples) and the run's seed, not defaults."""
    import rnb.regroup.report as report_mod

    seen: dict = {}
    real = report_mod.build_report

    def report_spy(texts, labels, labels_eval, **kw):
        seen.update(kw, texts=list(texts), labels=np.asarray(labels))
        return real(texts, labels, labels_eval, **kw)

    monkeypatch.setattr(report_mod, "build_report", report_spy)
    regroup, texts, ev_texts = _toy_regroup(tmp_path, seed=7)
    doms = ["x", "y", "z"] * 20
    res = regroup.run(texts, ev_texts, predefined=doms, reference=doms)
    assert seen["texts"] == texts and seen["seed"] == 7
    assert seen["domains_train"] == doms and seen["reference_train"] == doms
    sw = seen["sweep"]
    assert sw is not None and sw.seed == 7 and sw.rows[sw.chosen].k_found == res.summary["k"]
    X = np.stack([_toy(60, 0, "t")[1][t] for t in texts])
    np.testing.assert_allclose(seen["embeddings_train"], X * 2.0 + 1.0, rtol=1e-6)
    np.testing.assert_array_equal(seen["labels"], res.train)
    assert seen["assignment"] is not None
    np.testing.assert_array_equal(seen["assignment"].labels, res.eval)
