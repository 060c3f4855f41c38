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
