"""Real `rnb-train` processes sharing one RNB_CACHE_DIR (issue 8 kind 11).

Reproducer: two `rnb-train experiment=quick seed=7 regroup=kmeans` started together died
with `FileNotFoundError …/<fingerprint>.tmp/sweep.png`. Here the same race runs on tiny
data, as two processes and as a 2-job joblib multirun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REGROUP = [
    "seed=7",
    "regroup=kmeans",
    "regroup/embedder=tfidf",
    "regroup.embedder.progress=false",
    "regroup.k_values=[4,6]",
]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "RNB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def _rnb_train() -> str:
    return str(Path(sys.executable).with_name("rnb-train"))


def _check_shared(summaries: list[Path], cache: Path) -> None:
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in summaries]
    assert len(runs) == 2
    assert runs[0]["regroup"]["fingerprint"] == runs[1]["regroup"]["fingerprint"]
    assert runs[0]["domains"] == runs[1]["domains"]
    folders = [p for p in (cache / "regroup").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders  # one result, no leftover temp folder
    assert len(list((cache / "tokenizers").glob("*/tokenizer.json"))) == 1


@pytest.mark.slow
def test_two_rnb_train_started_together(tmp_path: Path, tiny_overrides: list[str]) -> None:
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [_rnb_train(), *tiny_overrides, *REGROUP, f"hydra.run.dir={tmp_path / name}"],
            env=_env(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    _check_shared([tmp_path / n / "summary.json" for n in ("a", "b")], cache)


@pytest.mark.slow
def test_joblib_multirun_shares_one_cache(tmp_path: Path, tiny_overrides: list[str]) -> None:
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    cmd = [
        _rnb_train(),
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",  # short job dirs whatever the overrides
        *tiny_overrides,
        *REGROUP,
        "strategy=stratified,natural",
    ]
    proc = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_shared(sorted(sweep.rglob("summary.json")), cache)
