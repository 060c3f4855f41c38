"""Regroup pipeline: cache hits, `original` domains, eval assignment, errors."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="regroup.embedder.column"):
        regroup.run(texts, ev_texts)
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
