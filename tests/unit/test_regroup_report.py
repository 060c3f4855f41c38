"""Regroup report: c-TF-IDF terms, examples, contingency, agreement, files."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnb.regroup.assign import Assignment
from rnb.regroup.report import build_report, c_tf_idf, write_report
from rnb.regroup.selection import SweepResult, SweepRow

TOPICS = {
    "pets": "cat kitten purr whiskers",
    "money": "stock market dividend shares",
    "sport": "football goal striker match",
}


def _corpus(n_per: int = 6, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels, ref = [], [], []
    for i, (name, words) in enumerate(TOPICS.items()):
        vocab = words.split()
        for j in range(n_per):
            # Every text shares the filler words; the topic word "cat"/"stock"/"football"
            # appears in every text of its topic, the others at random.
            picked = [vocab[0], *rng.choice(vocab[1:], size=2).tolist()]
            texts.append(f"people often talk about {' '.join(picked)} today {j}")
            labels.append(i)
            ref.append(name)
    return texts, np.array(labels), ref


def test_c_tf_idf_matches_hand_formula() -> None:
    texts = ["xa xa xb", "xb xc", "xc xc xc xd"]  # 2-char tokens: sklearn drops 1-char ones
    labels = np.array([0, 0, 1])
    w, vocab = c_tf_idf(texts, labels, 2, stop_words=None)
    per_class = [Counter(" ".join(texts[:2]).split()), Counter(texts[2].split())]
    total = Counter(" ".join(texts).split())
    avg = sum(total.values()) / 2
    for c in range(2):
        words_c = sum(per_class[c].values())
        for j, t in enumerate(vocab):
            expected = per_class[c][t] / words_c * math.log(1 + avg / total[t])
            assert w[c, j] == pytest.approx(expected)


def test_c_tf_idf_empty_vocabulary() -> None:
    w, vocab = c_tf_idf(["", "the"], np.array([0, 1]), 2)
    assert vocab == [] and w.shape == (2, 0)


def test_report_toy_corpus(tmp_path: Path) -> None:
    texts, labels, ref = _corpus()
    domains = ["animals+finance" if r != "sport" else "sport" for r in ref]
    labels_eval = np.array([0, 1, 2, 2])
    assignment = Assignment(
        labels_eval,
        np.array([0.1, 0.2, 5.0, 0.3]),
        np.array([False, False, True, False]),
        np.array([1.0, 1.0, 1.0]),
        0.95,
    )
    rows = [
        SweepRow(2, 2, 0.4, 1.0, 10.0, [12, 6], 0, 0.01),
        SweepRow(3, 3, 0.7, 0.5, 30.0, [6, 6, 6], 0, 0.01),
        SweepRow(4, 4, 0.6, 0.6, 20.0, [6, 6, 3, 3], 0, 0.01),
    ]
    sweep = SweepResult("n_clusters", "silhouette", rows, chosen=1)
    rep = build_report(
        texts,
        labels,
        labels_eval,
        domains_train=domains,
        reference_train=ref,
        sweep=sweep,
        assignment=assignment,
        top_terms=3,
        seed=0,
    )
    json.dumps(rep, allow_nan=False)  # JSON-serialisable, strict
    assert rep["k"] == 3 and rep["n_train"] == 18 and rep["n_eval"] == 4
    for c, words in enumerate(TOPICS.values()):
        cl = rep["clusters"][c]
        assert cl["top_terms"][0]["term"] == words.split()[0]  # the distinguishing word
        assert {t["term"] for t in cl["top_terms"]} <= set(words.split())  # no shared filler
        assert cl["size"] == 6 and cl["share_train"] == pytest.approx(1 / 3)
        assert len(cl["examples"]) == 3 and all(words.split()[0] in e for e in cl["examples"])
    assert [c["share_eval"] for c in rep["clusters"]] == [0.25, 0.25, 0.5]
    assert [c["n_ood_eval"] for c in rep["clusters"]] == [0, 0, 1]
    assert rep["ood"]["count"] == 1 and rep["ood"]["share"] == 0.25
    sel = rep["selection"]
    assert sel["chosen"] == {"value": 3, "k": 3, "score": 0.7}
    assert sel["runner_up"]["value"] == 4 and "runner-up n_clusters=4" in sel["why"]
    ct = rep["contingency"]
    assert ct["domains"] == ["animals+finance", "sport"]
    assert ct["counts"] == [[6, 0], [6, 0], [0, 6]]
    agree = rep["agreement"]
    assert agree["clusters_vs_reference"] == {"ari": 1.0, "nmi": 1.0}
    assert agree["domains_vs_reference"]["ari"] < 1.0

    jp, mp = write_report(rep, tmp_path / "out")
    assert json.loads(jp.read_text()) == rep
    md = mp.read_text()
    assert "# Regroup report" in md and "| **3** | 3 |" in md
    assert re.search(r"\| 2 \| 6 \| 0\.3333 \| 0\.5 \| 1 \| football", md)
    assert "| clusters_vs_reference | 1 | 1 |" in md


def test_representatives_closest_to_centroid_else_seeded() -> None:
    texts = ["far a", "near a", "mid a", "far b", "near b"]
    labels = np.array([0, 0, 0, 1, 1])
    emb = np.array([[10.0], [1.1], [2.0], [-9.0], [-5.0]])  # centroids 13.1/3, -7
    rep = build_report(texts, labels, np.array([0]), embeddings_train=emb, n_examples=2)
    assert rep["clusters"][0]["examples"] == ["mid a", "near a"]
    assert rep["clusters"][1]["examples"][0] in {"far b", "near b"}
    a = build_report(texts, labels, np.array([0]), n_examples=2, seed=5)
    b = build_report(texts, labels, np.array([0]), n_examples=2, seed=5)
    assert a["clusters"] == b["clusters"] and rep["clusters"][1]["share_eval"] == 0.0
    assert rep["contingency"] is None and rep["agreement"] is None and rep["ood"] is None


def test_report_errors() -> None:
    with pytest.raises(ValueError, match=r"data\.embed_fields"):
        build_report(["a"], np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match=r"regroup\.noise_policy"):
        build_report(["a", "b"], np.array([0, -1]), np.array([0]))
    with pytest.raises(ValueError, match=r"data\.domain_field"):
        build_report(["a", "b"], np.array([0, 1]), np.array([0]), domains_train=["x"])


_ASCII_LOCALE_SCRIPT = """
import sys, locale
import numpy as np
from pathlib import Path
from rnb.regroup.report import build_report, write_report
from rnb.regroup.result import RegroupResult
from rnb.regroup.selection import sweep
from sklearn.cluster import KMeans

assert locale.getpreferredencoding(False).lower() in ("ansi_x3.4-1968", "ascii"), "not ascii"
out = Path(sys.argv[1])
texts = ["café crème brûlée", "naïve façade déjà vu", "café au lait", "résumé über straße"] * 3
X = np.random.default_rng(0).normal(size=(len(texts), 4)).astype(np.float32)
res = sweep(X, lambda k: KMeans(n_clusters=k, n_init=1, random_state=0), [2, 3], seed=0)
report = build_report(texts, res.labels, res.labels[:2], domains_train=["é"] * len(texts),
                      sweep=res, embeddings_train=X)
write_report(report, out / "cache")
res.to_json(out / "cache" / "sweep.json")
(out / "cache" / "names.json").write_text('["c00", "c01"]', encoding="utf-8")
np.savez(out / "cache" / "labels.npz", train=res.labels, eval=res.labels[:2])
RegroupResult.load(out / "cache", "fp", from_cache=True).write_reports(out / "run")
"""


def test_reports_are_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    """Issue 8 kind 2: reports with non-ASCII text are written (and copied) as UTF-8 even
    when the locale's default encoding is ASCII (C locale without UTF-8 mode)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"  # keep the C locale: Python would coerce it to UTF-8
    script = tmp_path / "write_reports.py"  # source files are UTF-8 whatever the locale
    script.write_text(_ASCII_LOCALE_SCRIPT, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "run" / "regroup.md").read_text(encoding="utf-8")
    assert "café" in md or "résumé" in md
    report = json.loads((tmp_path / "run" / "regroup.json").read_text(encoding="utf-8"))
    assert report["contingency"]["domains"] == ["é"]
    assert (tmp_path / "run" / "regroup_sweep.json").exists()
