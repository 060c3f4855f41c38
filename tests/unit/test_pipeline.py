"""Regroup pipeline: cache hits, `original` domains, eval assignment, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnb.regroup.pipeline as pipeline
from rnb.config import compose
from rnb.data.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    return generate(SyntheticConfig(n_train=600, n_eval=120, seed=0))


def _cfg(*over: str):
    base = ["regroup=kmeans", "regroup/embedder=tfidf", "regroup.embedder.progress=false"]
    return compose("train", [*base, "regroup.k_values=[4,8]", *over]).regroup


def _run(cfg, data, tmp: Path, **kw):
    train, ev = data
    return pipeline.run_regroup(
        cfg, train, ev, text_fields=["prompt", "response"], domain_field="domain",
        reference_field="reference", cache_dir=tmp / "cache", out_dir=tmp / "out", **kw,
    )  # fmt: skip


def test_second_run_is_a_cache_hit(data, tmp_path: Path, monkeypatch) -> None:
    first = _run(_cfg(), data, tmp_path)
    calls = []
    monkeypatch.setattr(pipeline, "_compute", lambda *a, **k: calls.append(1))
    second = _run(_cfg(), data, tmp_path)
    assert not calls
    np.testing.assert_array_equal(first.labels.train, second.labels.train)
    assert first.fingerprint == second.fingerprint
    assert (tmp_path / "out" / "regroup.md").exists()
    monkeypatch.undo()
    # any setting change is a new fingerprint
    assert _run(_cfg("regroup.min_cluster_size=3"), data, tmp_path).fingerprint != first.fingerprint


def test_eval_goes_to_nearest_training_centroid(data, tmp_path: Path) -> None:
    res = _run(_cfg(), data, tmp_path)
    assert res.labels.eval.shape == (len(data[1]),)
    assert set(res.labels.eval.tolist()) <= set(range(len(res.labels.names)))
    assert 2 <= res.summary["k"] <= 8


def test_original_keeps_predefined_domains(data, tmp_path: Path) -> None:
    cfg = compose("train", ["regroup=original"]).regroup
    res = _run(cfg, data, tmp_path)
    assert res.labels.names == sorted({r["domain"] for r in data[0]})
    agree = res.report["agreement"]
    assert agree["clusters_vs_reference"] == pytest.approx(agree["domains_vs_reference"])


def test_empty_eval_and_bad_k(data, tmp_path: Path) -> None:
    train, _ = data
    with pytest.raises(ValueError, match="eval split is empty"):
        pipeline.run_regroup(_cfg(), train, [], text_fields=["prompt"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="regroup.k_values"):
        _run(_cfg("regroup.k_values=[1,4]"), data, tmp_path)
    with pytest.raises(ValueError, match="regroup.k_values"):
        _run(_cfg("regroup.k_values=[4,5000]"), data, tmp_path)
