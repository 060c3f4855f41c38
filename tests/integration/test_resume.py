"""Resume: trajectory changes are refused before the run dir is touched; history continues.

One tiny run on a JSONL file (3 sources x 40 rows, strategy=rnb) is trained once per module;
each case resumes a copy of its run dir.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from rnb.config import compose
from rnb.data.synthetic import SyntheticConfig, generate
from rnb.run.record import ResumeRefused
from rnb.train import train
from tests.conftest import TINY
from tests.helpers import Crash, CrashAt
from tests.integration.test_regroup_train import REGROUP

SOURCES = ("brainstorming", "classification", "closed_qa")
MODEL = [
    "model.arch.hidden_size=32",
    "model.arch.num_layers=1",
    "model.arch.num_heads=2",
    "model.arch.intermediate_size=64",
    "model.warmup_steps=2",
]


def _write_jsonl(path: Path, per_source: dict[str, int]) -> None:
    train, _ = generate(SyntheticConfig(n_train=1200, n_eval=10, seed=0))
    rows = []
    for source, n in per_source.items():
        mine = [r for r in train if r["domain"] == source][:n]
        assert len(mine) == n
        rows += [
            {"text": f"{r['prompt']} {r['response']}", "source": source, "topic": r["reference"]}
            for r in mine
        ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _overrides(data: Path, cache: Path) -> list[str]:
    return [
        "data=files",
        f"data.cache_dir={cache}",  # its own: module fixtures run outside the per-test cache
        f"data.train_path={data}",
        "data.text_fields=[text]",
        "data.domain_field=source",
        "data.eval_fraction=0.2",
        "data.batch_size=8",
        "data.eval_batch_size=40",
        "data.max_length=48",
        "data.tokenizer.vocab_size=400",
        *MODEL,
        "strategy=rnb",
        "trainer.max_steps=8",
        "trainer.val_check_interval=4",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=2",
        "balance.steps_per_round=4",
        "checkpoint.every_n_train_steps=4",
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("resume_base")
    data = root / "train.jsonl"
    _write_jsonl(data, dict.fromkeys(SOURCES, 40))
    over = _overrides(data, root / "cache")
    summary = train(compose("train", [*over, f"output_dir={root / 'run'}"]))
    return {"run": root / "run", "data": data, "over": over, "summary": summary}


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file and the list of folders: the run dir's exact state."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def _copy_run(base: dict, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(base["run"], run)
    return run


def _shrink_domain(base: dict, tmp: Path) -> list[str]:
    """Reproducer (a): the training file changed, one domain shrank from 40 to 3 rows."""
    data = tmp / "train.jsonl"
    _write_jsonl(data, {SOURCES[0]: 40, SOURCES[1]: 3, SOURCES[2]: 40})
    return [f"data.train_path={data}"]


def _swap_tokenizer(base: dict, tmp: Path) -> list[str]:
    """Same config, but the cached BPE differs (e.g. trained by another tokenizers release)."""
    from rnb.data.tokenize import load_tokenizer

    cache = Path(compose("train", base["over"]).data.cache_dir)
    (src,) = [p.parent for p in (cache / "tokenizers").glob("*/tokenizer.json")]
    other_cache = tmp / "cache"
    dest = other_cache / "tokenizers" / src.name
    shutil.copytree(src, dest)
    texts = [json.loads(line)["text"] for line in base["data"].read_text().splitlines()]
    other = load_tokenizer("bpe", texts[::-1], tmp / "scratch", 350, 2)
    other.backend_tokenizer.save(str(dest / "tokenizer.json"))
    return [f"data.cache_dir={other_cache}"]


def _over(*items: str) -> Callable[[dict, Path], list[str]]:
    return lambda base, tmp: list(items)


# (change, what the refusal must name)
CHANGES = {
    "data_file": (_shrink_domain, "data.train_path: content changed"),
    "tokenizer_vocab_size": (_over("data.tokenizer.vocab_size=350"), "data.tokenizer.vocab_size: 400 -> 350"),
    "tokenizer_content": (_swap_tokenizer, "the tokenizer changed"),
    "domain_field": (_over("data.domain_field=topic"), "data.domain_field: 'source' -> 'topic'"),
    "regroup": (_over("regroup=kmeans", "regroup/embedder=tfidf"), "regroup._target_: "),
    "strategy": (_over("strategy=stratified"), "strategy._target_: 'rnb.balance.strategies.rnb.RnB'"),
    "strategy_lambda": (_over("strategy.lambda_=1.0"), "strategy.lambda_: 3.0 -> 1.0"),
    "model_arch": (_over("model.arch.hidden_size=16"), "model.arch.hidden_size: 32 -> 16"),
    "model_lr": (_over("model.lr=0.01"), "model.lr: 0.003 -> 0.01"),
    "seed": (_over("seed=1"), "seed: 0 -> 1"),
    "batch_size": (_over("data.batch_size=4"), "data.batch_size: 8 -> 4"),
    "steps_per_round": (_over("balance.steps_per_round=2"), "balance.steps_per_round: 4 -> 2"),
    "num_workers": (_over("data.num_workers=1"), "data.num_workers: 0 -> 1"),
    "devices": (_over("trainer.devices=2"), "trainer.devices: 1 -> 2"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CHANGES))
def test_trajectory_change_is_refused_and_run_dir_untouched(
    base: dict, tmp_path: Path, name: str
) -> None:
    change, message = CHANGES[name]
    run = _copy_run(base, tmp_path)
    extra = change(base, tmp_path)
    before = _snapshot(run)
    cfg = compose("train", [*base["over"], *extra, f"output_dir={run}", "resume=auto"])
    with pytest.raises(ResumeRefused) as err:
        train(cfg)
    assert message in str(err.value)
    assert "Nothing in" in str(err.value) and "new run directory" in str(err.value)
    assert _snapshot(run) == before


def test_allowed_changes_resume_and_are_recorded(base: dict, tmp_path: Path) -> None:
    run = _copy_run(base, tmp_path)
    moved = tmp_path / "moved.jsonl"  # same bytes at a new path: allowed, recorded
    shutil.copy(base["data"], moved)
    first = pd.read_csv(run / "logs" / "metrics.csv")
    over = [*base["over"], f"data.train_path={moved}", "trainer.max_steps=12", f"output_dir={run}"]
    summary = train(compose("train", [*over, "resume=auto"]))
    assert summary["steps"] == 12
    (resume,) = summary["resumes"]
    assert resume["step"] == 8
    moved_run = [str(base["run"]), str(run)]  # the copied run dir is recorded as moved too
    assert resume["changed"] == {
        "output_dir": moved_run,
        "logger.save_dir": moved_run,
        "trainer.max_steps": [8, 12],
        "data.train_path": [str(base["data"].resolve()), str(moved.resolve())],
    }
    assert summary["eval_loss_initial"] == base["summary"]["eval_loss_initial"] is not None
    logged = pd.read_csv(run / "logs" / "metrics.csv")
    pd.testing.assert_frame_equal(logged.iloc[: len(first)][first.columns], first)
    assert logged["step"].max() == 12
    # the new checkpoint carries the history: a second resume lists both
    again = train(compose("train", [*over, "trainer.max_steps=16", "resume=auto"]))
    assert [r["step"] for r in again["resumes"]] == [8, 12]
    assert again["resumes"][1]["changed"] == {"trainer.max_steps": [12, 16]}


def test_killed_run_keeps_history_of_uninterrupted_run(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides,
        "strategy=rnb",
        "trainer.max_steps=16",
        "checkpoint.every_n_train_steps=3",
    ]
    full = train(compose("train", [*over, f"output_dir={tmp_path / 'full'}"]))
    part = [*over, f"output_dir={tmp_path / 'part'}"]
    with pytest.raises(Crash):  # last checkpoint at step 9; the killed run logged step 10 too
        train(compose("train", part), callbacks=[CrashAt(10)])
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)["callbacks"]["RunRecord"]["wall_time_s"]
    resumed = train(compose("train", [*part, "resume=auto"]))

    assert resumed["eval_loss_initial"] == full["eval_loss_initial"] is not None
    assert [r["step"] for r in resumed["resumes"]] == [9]
    a = pd.read_csv(tmp_path / "full" / "logs" / "metrics.csv")
    b = pd.read_csv(tmp_path / "part" / "logs" / "metrics.csv")
    assert len(a) > 10
    cols = ["step", "train/loss", "val/loss", *[c for c in a.columns if c.startswith("balance/")]]
    pd.testing.assert_frame_equal(a[cols], b[cols])

    # wall_time_s is the whole trajectory's: the killed invocation's time up to its last
    # checkpoint (recorded there) plus the resumed one's -- not the last invocation alone
    assert 0 < before < resumed["wall_time_s"]


def test_resume_of_a_finished_run_changes_nothing(base: dict, tmp_path: Path) -> None:
    """A run that already reached trainer.max_steps has nothing to train: a resume returns
    its summary and leaves the run dir byte-identical (it used to re-validate and append a
    duplicate eval row to metrics.csv)."""
    run = _copy_run(base, tmp_path)
    over = [*base["over"], f"output_dir={run}", "resume=auto"]
    # the copied dir is a moved run; rewrite nothing but compare every byte
    before = _snapshot(run)
    summary = train(compose("train", over))
    assert _snapshot(run) == before
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["status"] == "completed"


def _rnb_train(run: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rnb.train", *overrides, f"hydra.run.dir={run}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_refused_resume_leaves_hydra_run_dir_byte_identical(tmp_path: Path) -> None:
    """Reproducer (c) through `rnb-train`: Hydra's own files in the run dir included."""
    run = tmp_path / "run"
    base = [*TINY, *REGROUP, "trainer.max_steps=4", "resume=auto"]
    first = _rnb_train(run, base)  # resume=auto without a checkpoint: a fresh run
    assert first.returncode == 0, first.stderr[-3000:]
    for name in (".hydra/config.yaml", "train.log", "regroup.md", "logs/metrics.csv"):
        assert (run / name).stat().st_size > 0, name
    before = _snapshot(run)
    log_before = (run / "train.log").read_bytes()

    refused = _rnb_train(run, [*base, "regroup.k_values=[3,5]"])
    assert refused.returncode != 0
    assert "regroup.k_values: [4, 6, 8] -> [3, 5]" in refused.stderr + refused.stdout
    assert _snapshot(run) == before

    more = _rnb_train(run, [*base, "trainer.max_steps=8"])
    assert more.returncode == 0, more.stderr[-3000:]
    after = _snapshot(run)
    assert after[".hydra/config.yaml"] == before[".hydra/config.yaml"]  # the first run's
    log_after = (run / "train.log").read_bytes()
    assert log_after.startswith(log_before) and len(log_after) > len(log_before)
    assert "trainer.max_steps=8" in (run / "resumes" / "01" / "overrides.yaml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["eval_loss_initial"] is not None
    (resume,) = summary["resumes"]
    assert resume["changed"] == {"trainer.max_steps": [4, 8]}
    assert resume["config_dir"] == str(run / "resumes" / "01")
