"""Every claim the README makes about a run, asserted on a real (tiny) run.

Covered here: the documented ``summary.json`` keys, ``data=files`` training, the prefetch
lag of a weight change with and without loader workers, ``balance.capture.mode: auto``
choosing exact vs sketch at the documented 64 MiB, ``rnb-regroup``'s table and files, a
Hydra multirun sweep, and ``experiment=quick``. The console scripts run in-process
(``tests/cli.run_main``); ``test_readme_commands.py`` starts each one once as a subprocess.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from rnb.balance.callback import BalanceCallback
from rnb.config import compose
from rnb.train import train
from tests.cli import run_main
from tests.conftest import TINY

README = Path(__file__).resolve().parents[2] / "README.md"

#: The README's "summary.json keys (later versions only add keys)" list, verbatim.
DOCUMENTED_KEYS = [
    "status", "failure", "eval_loss", "eval_loss_per_domain", "eval_loss_initial", "domains", "eval_proportions",
    "domain_sizes", "strategy", "steps", "wall_time_s", "weights_trajectory", "final_weights",
    "average_weights", "steps_per_round", "tokens_per_domain", "examples_per_domain",
    "epochs_per_domain", "starved_domains", "starved_since_round", "rounds", "seed", "num_parameters", "overhead", "gram_rounds", "gq_norms", "balance_memory_bytes",
    "detours", "regroup", "resumed_from", "resumes", "config",
]  # fmt: skip


def _readme_summary_keys() -> list[str]:
    text = README.read_text()
    start = text.index("`summary.json` keys")
    block = text[start : text.index("(resolved)", start)]
    block = re.sub(r"\([^)]*\)", "", block.split(":", 1)[1])  # drop nested "(…)" remarks
    return re.findall(r"`([a-z_]+)`", block)


def test_readme_key_list_is_the_one_tested() -> None:
    assert _readme_summary_keys() == DOCUMENTED_KEYS


def test_data_files_training_and_summary_keys(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """``rnb-train data=files data.train_path=my.jsonl data.text_fields=[text] data.domain_field=source``."""
    rng = np.random.default_rng(0)
    topics = {"math": "add {a} and {b} gives {c}", "code": "def f{a}(): return {b}",
              "chat": "hello friend number {a}, how are you {b}"}  # fmt: skip
    rows = []
    for i in range(360):
        src = list(topics)[i % 3] if i % 5 else "math"  # unequal domain sizes
        a, b = rng.integers(0, 50, size=2)
        rows.append({"text": topics[src].format(a=a, b=b, c=a + b), "source": src, "id": i})
    path = tmp_path / "my.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keep = [o for o in tiny_overrides if not o.startswith("data.")]
    over = [
        *keep, "data=files", f"data.train_path={path}", "data.text_fields=[text]",
        "data.domain_field=source", "data.eval_fraction=0.2", "data.batch_size=8",
        "data.tokenizer.vocab_size=500", "data.max_length=32", "strategy=rnb",
        f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    summary = train(compose("train", over))
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(DOCUMENTED_KEYS) <= set(on_disk)
    assert on_disk["domains"] == ["chat", "code", "math"]
    assert sum(on_disk["domain_sizes"]) == 360 - 72  # a seeded 20 % eval split
    assert on_disk["domain_sizes"][2] > on_disk["domain_sizes"][0]  # math is the big one
    assert on_disk["steps"] == 12 and on_disk["rounds"] == 3
    assert len(on_disk["gram_rounds"]) == 3
    assert on_disk["eval_loss"] < on_disk["eval_loss_initial"]
    assert set(on_disk["overhead"]) >= {"wall_pct", "flops_pct"}
    assert on_disk["config"]["data"]["train_path"] == str(path)  # resolved config
    assert on_disk["resumed_from"] is None and on_disk["regroup"] is None
    assert summary["eval_loss"] == pytest.approx(on_disk["eval_loss"])


class _SwitchWeights(L.Callback):
    """After batch ``at``, puts all mass on domain 0 and records every batch's domains."""

    def __init__(self, at: int) -> None:
        self.at, self.domains, self.first_new = at, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.domains.append(batch["domain"].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at:
            m = len(trainer.datamodule.domain_names)
            self.first_new = trainer.datamodule.sampler.set_weights(np.eye(m)[0])


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_weight_change_lag_with_workers(
    tmp_path: Path, tiny_overrides: list[str], workers: int
) -> None:
    """README: up to ``2·w + 1`` batches in flight with ``w`` workers (0 workers: 1)."""
    switch = _SwitchWeights(at=3)
    over = [
        *tiny_overrides, f"data.num_workers={workers}", "trainer.max_steps=12",
        "balance.steps_per_round=1000", "initial_eval=false", "logger=none",
        "trainer.val_check_interval=1000", f"output_dir={tmp_path}",
    ]  # fmt: skip
    train(compose("train", over), callbacks=[switch])
    consumed = switch.at + 1
    lag = switch.first_new - consumed
    assert lag == 2 * workers + 1
    # the batches already in flight keep the old mixture, every later one is domain 0 only
    assert any(d != 0 for d in switch.domains[switch.first_new - 1])
    assert all(set(b) == {0} for b in switch.domains[switch.first_new :])
    assert len(switch.domains[switch.first_new :]) >= 2


class _Stop(Exception):
    pass


class _CaptureMode(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        (cb,) = [c for c in trainer.callbacks if isinstance(c, BalanceCallback)]
        head = pl_module.head
        self.mode, self.limit = cb.capture.mode, cb.exact_limit_bytes
        self.exact_bytes = 4 * len(cb.domain_names) * head.in_features * head.out_features
        raise _Stop


def _capture_mode(tmp: Path, over: list[str]) -> _CaptureMode:
    probe = _CaptureMode()
    cfg = compose("train", [*TINY, "strategy=rnb", "initial_eval=false", "logger=none",
                            *over, f"output_dir={tmp}"])  # fmt: skip
    with pytest.raises(_Stop):
        train(cfg, callbacks=[probe])
    return probe


def test_capture_mode_auto_threshold(tmp_path: Path) -> None:
    """``mode=auto``: exact while ``m·V·d`` fp32 fits in 64 MiB (``balance.exact_limit_bytes``)."""
    assert compose("train", []).balance.exact_limit_bytes == 64 * 2**20
    assert compose("train", []).balance.capture.mode == "auto"
    default = _capture_mode(tmp_path / "a", [])
    assert default.limit == 64 * 2**20 and default.exact_bytes < 64 * 2**20
    assert default.mode == "exact"
    at = _capture_mode(tmp_path / "b", [f"balance.exact_limit_bytes={default.exact_bytes}"])
    assert at.mode == "exact"  # the limit is inclusive
    below = _capture_mode(tmp_path / "c", [f"balance.exact_limit_bytes={default.exact_bytes - 1}"])
    assert below.mode == "sketch"


def test_rnb_regroup_prints_table_and_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "regroup"
    proc = run_main(
        ["rnb-regroup", "data.synthetic.n_train=600", "data.synthetic.n_eval=120",
         "regroup/embedder=tfidf", "regroup.embedder.progress=false", "regroup.k_values=[4,8]",
         f"hydra.run.dir={out}"],
        tmp_path,
    )  # fmt: skip
    text = proc.stdout
    summary = json.loads((out / "regroup_summary.json").read_text())
    assert f"chosen k = {summary['k']}" in text
    assert re.search(r"^\s+4\s+\d+\s+[\d.]+", text, re.M) and re.search(r"^\s+8\s+\d+", text, re.M)
    assert re.search(r"clusters_vs_reference: ARI [\d.]+\s+NMI [\d.]+", text)
    assert sum(summary["sizes"]) == 600 and len(summary["sizes"]) == summary["k"]
    for name in ("regroup.json", "regroup.md", "regroup_sweep.json", "regroup_sweep.png"):
        assert (out / name).stat().st_size > 0, name
    assert f"{summary['k']}" in (out / "regroup.md").read_text()


def test_multirun_sweep_writes_one_run_per_combination(tmp_path: Path) -> None:
    """``rnb-train -m strategy=stratified,natural seed=0,1``."""
    sweep = tmp_path / "multirun"
    small = [o.replace("trainer.max_steps=12", "trainer.max_steps=4") for o in TINY]
    run_main(
        ["rnb-train", "-m", "strategy=stratified,natural", "seed=0,1", *small,
         "initial_eval=false", "logger=none", f"hydra.sweep.dir={sweep}",
         # the default subdir names every override: with TINY's ~20 it exceeds 255 bytes
         "hydra.sweep.subdir=${hydra.job.num}"],
        tmp_path,
    )  # fmt: skip
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    combos = sorted((r["strategy"]["name"], r["seed"]) for r in runs)
    assert combos == [("Natural", 0), ("Natural", 1), ("Stratified", 0), ("Stratified", 1)]
    assert all(r["steps"] == 4 for r in runs)


def test_experiment_quick_is_a_small_run() -> None:
    """``experiment=quick``: small data, few steps (the smoke run)."""
    cfg = compose("train", ["experiment=quick"])
    assert cfg.trainer.max_steps == 60 < compose("train", []).trainer.max_steps
    assert cfg.data.synthetic.n_train == 4000 and cfg.data.synthetic.n_eval == 400
    assert cfg.balance.steps_per_round == 10


@pytest.mark.slow
def test_experiment_quick_runs_in_about_a_minute(tmp_path: Path) -> None:
    import time

    t0 = time.perf_counter()
    summary = train(compose("train", ["experiment=quick", f"output_dir={tmp_path}"]))
    assert time.perf_counter() - t0 < 120
    assert summary["steps"] == 60 and summary["eval_loss"] < summary["eval_loss_initial"]
