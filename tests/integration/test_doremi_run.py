"""DoReMi through ``rnb.train``: planted signal, exact mid-round resume, DDP, README pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from rnb.config import compose
from rnb.train import train
from tests.conftest import TINY
from tests.helpers import full_and_resumed
from tests.integration.test_readme_commands import README, readme_commands

QUIET = ["initial_eval=false", "logger=none"]


@pytest.fixture(scope="module")
def one_domain_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference trained on domain 0 only: its loss is low there and high elsewhere, so
    the excess loss ``ℓ − ℓ_ref`` of a fresh proxy is largest on domain 0."""
    out = tmp_path_factory.mktemp("reference") / "run"
    cache = tmp_path_factory.getbasetemp() / "rnb_cache"  # the autouse fixture's cache
    over = ["strategy=static", "strategy.weights=[1,0,0,0,0,0]", f"data.cache_dir={cache}"]
    train(compose("train", [*TINY, *QUIET, *over, f"output_dir={out}"]))
    return out


class LossWeightsAtEnd(L.Callback):
    """Records what the model and the sampler use at the end of training."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loss_weights = pl_module.domain_loss_weights
        self.sampling = trainer.datamodule.sampler.weights


@pytest.mark.parametrize("mode", ["reweight", pytest.param("resample", marks=pytest.mark.slow)])
def test_doremi_raises_the_domain_with_the_largest_excess_loss(
    tmp_path: Path, one_domain_reference: Path, mode: str
) -> None:
    spy = LossWeightsAtEnd()
    over = [
        *TINY,
        *QUIET,
        "strategy=doremi",
        f"strategy.reference={one_domain_reference}",
        f"strategy.mode={mode}",
        "balance.steps_per_round=null",  # DoReMi's default: an update every step
        f"output_dir={tmp_path}",
    ]
    s = train(compose("train", over), callbacks=[spy])
    m = len(s["domains"])
    assert s["steps_per_round"] == 1 and s["rounds"] == 12
    traj = np.array([t["weights"] for t in s["weights_trajectory"]])
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)
    assert (traj > 0).all()
    scores = np.array(s["strategy"]["scores"], dtype=float)
    assert np.nanargmax(scores) == 0  # the planted domain has the largest excess loss ...
    avg = np.array(s["average_weights"])
    assert avg.argmax() == 0 and avg[0] > 2.0 / m  # ... and DoReMi raised it above uniform
    # one reference forward (2N) per training step (6N), equal-size models
    assert s["overhead"]["flops_pct"] == pytest.approx(100.0 / 3.0, rel=1e-9)
    if mode == "reweight":  # proxy samples uniformly; α multiplies the per-domain losses
        np.testing.assert_allclose(spy.sampling, np.full(m, 1.0 / m))
        np.testing.assert_allclose(spy.loss_weights.numpy(), s["final_weights"], rtol=1e-12)
    else:  # the online variant samples with α and leaves the loss alone
        np.testing.assert_allclose(spy.sampling, s["final_weights"], rtol=1e-12)
        assert spy.loss_weights is None


@pytest.mark.slow
def test_doremi_resume_mid_round_is_exact(tmp_path: Path, one_domain_reference: Path) -> None:
    over = [
        *TINY,
        *QUIET,
        "strategy=doremi",
        f"strategy.reference={one_domain_reference}",
        "checkpoint.every_n_train_steps=3",
    ]
    full, resumed = full_and_resumed(
        over, tmp_path, crash_at=7
    )  # last checkpoint at step 6: two steps into round 2 (K = 4)
    a = np.array([t["weights"] for t in full["weights_trajectory"]])
    b = np.array([t["weights"] for t in resumed["weights_trajectory"]])
    assert a.shape == (4, 6) and np.abs(a[-1] - a[0]).max() > 1e-3  # the weights moved
    np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(full["strategy"]["scores"], resumed["strategy"]["scores"])
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-5)


# ---------------------------------------------------------------- README pipeline


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


PIPELINE = [
    c
    for c in readme_commands(README.read_text(encoding="utf-8"))
    if any(o.startswith("hydra.run.dir=outputs/doremi/") for o in c.overrides)
]


def test_readme_doremi_pipeline_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's three commands, verbatim (plus tiny overrides), in one working dir: the
    final run trains on exactly the proxy's ``average_weights``."""
    strategies = [_key_value(c.overrides, "strategy") for c in PIPELINE]
    assert strategies == ["stratified", "doremi", "static"], [c.text for c in PIPELINE]
    monkeypatch.chdir(tmp_path)  # the commands' relative paths
    # DoReMi's own K = 1; 8 steps per stage, validated once at the end
    mine = ("balance.steps_per_round", "trainer.max_steps", "trainer.val_check_interval")
    small = [o for o in TINY if _key(o) not in mine]
    small += ["trainer.max_steps=8", "trainer.val_check_interval=8"]
    summaries = []
    for cmd in PIPELINE:
        own = {_key(o) for o in cmd.overrides}
        over = [
            f"output_dir={o.split('=', 1)[1]}" if o.startswith("hydra.run.dir=") else o
            for o in cmd.overrides
        ]
        extra = [o for o in [*small, *QUIET] if _key(o) not in own]
        summaries.append(train(compose("train", [*extra, *over])))
    reference, proxy, final = summaries
    assert reference["status"] == proxy["status"] == final["status"] == "completed"
    assert proxy["strategy"]["name"] == "DoReMi" and proxy["steps_per_round"] == 1
    avg = np.array(proxy["average_weights"])
    assert np.abs(avg - 1.0 / len(avg)).max() > 1e-3  # the proxy learned non-uniform weights
    assert final["strategy"]["transfer"]["average"] == "average_weights"
    np.testing.assert_allclose(final["final_weights"], avg, rtol=1e-12)
    saved = json.loads((tmp_path / "outputs/doremi/proxy/summary.json").read_text())
    assert saved["average_weights"] == proxy["average_weights"]


def _key_value(overrides: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if _key(o) == key), None)


# ---------------------------------------------------------------- DDP


def _rnb_train(out: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rnb.train", *overrides, f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.ddp
def test_doremi_ddp_ranks_agree_and_match_single_process(
    tmp_path: Path, one_domain_reference: Path
) -> None:
    """Resample mode (plain mean loss): 2 ranks x 4 = one process x 8, scores and weights.

    Reweight mode too: the re-weighted loss is normalised over the global batch (per-domain
    counts summed over ranks), so 2 ranks x 4 follow one process x 8 (per-rank normalisers
    drifted by 2.3e-4 in the weights after 12 steps).
    """
    base = [o for o in TINY if not o.startswith("data.batch_size")]
    common = [
        *base,
        *QUIET,
        "strategy=doremi",
        f"strategy.reference={one_domain_reference}",
    ]  # RNB_CACHE_DIR (autouse fixture) is inherited: the reference's tokenizer
    resample = [*common, "strategy.mode=resample"]
    ddp = _rnb_train(tmp_path / "ddp", [*resample, "trainer=ddp_cpu", "data.batch_size=4"])
    single = _rnb_train(tmp_path / "single", [*resample, "data.batch_size=8"])
    assert ddp["rank_weight_spread"] == 0.0
    assert ddp["rank_checks"] == ddp["rounds"] == 3
    for a, b in zip(ddp["weights_trajectory"], single["weights_trajectory"], strict=True):
        assert a["step"] == b["step"]
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-5)
    # the excess loss was summed over both ranks' halves of each global batch
    np.testing.assert_allclose(ddp["strategy"]["scores"], single["strategy"]["scores"], atol=1e-5)
    reweight = _rnb_train(tmp_path / "reweight", [*common, "trainer=ddp_cpu", "data.batch_size=4"])
    assert reweight["rank_weight_spread"] == 0.0
    assert reweight["rank_checks"] == reweight["rounds"] == 3
    reweight_single = _rnb_train(tmp_path / "reweight1", [*common, "data.batch_size=8"])
    for a, b in zip(
        reweight["weights_trajectory"], reweight_single["weights_trajectory"], strict=True
    ):
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-5)
