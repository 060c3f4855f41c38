"""experiment=digits through rnb-train's train(): Regroup on pixel features + R&B on an MLP head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rnb.config import compose
from rnb.models.classifier import ClassifierModule
from rnb.train import build_datamodule, train
from tests.conftest import DIGITS_TINY
from tests.helpers import full_and_resumed
from tests.integration.test_readme_claims import DOCUMENTED_KEYS

DIGITS = ["experiment=digits", *DIGITS_TINY]  # a few seconds per run: 4 rounds of 10 steps
REGROUP = ["regroup=kmeans", "regroup/embedder=features", "regroup.k_values=[6,10]"]


def _recomputed_eval(cfg, ckpt: Path) -> tuple[float, float, dict[str, float]]:
    """Cross-entropy, accuracy and per-domain CE of a checkpoint on the eval split, by hand."""
    dm = build_datamodule(cfg)
    model = ClassifierModule.load_from_checkpoint(
        ckpt, weights_only=False, net=None, **dm.model_inputs(), domain_names=dm.domain_names
    )
    model.eval()
    split = dm.eval_data
    with torch.no_grad():
        logits = model(torch.as_tensor(split.features))
    target = torch.as_tensor(split.target)
    ce = F.cross_entropy(logits, target, reduction="none").double()
    per = {n: float(ce[split.domain == i].mean()) for i, n in enumerate(dm.domain_names)}
    acc = float((logits.argmax(-1) == target).double().mean())
    return float(ce.mean()), acc, per


def test_digits_regroup_and_rnb_summary_is_complete(tmp_path: Path) -> None:
    cfg = compose("train", [*DIGITS, *REGROUP, "strategy=rnb", f"output_dir={tmp_path}"])
    summary = train(cfg)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(DOCUMENTED_KEYS) <= set(on_disk)  # the README's summary contract, complete
    assert on_disk["eval_accuracy"] == summary["eval_accuracy"]
    assert summary["status"] == "completed" and summary["steps"] == 40
    # Regroup clustered the 64-d pixel vectors (k picked from the sweep), eval by centroid
    reg = summary["regroup"]
    assert reg["k"] in (6, 10) and reg["chosen"]["k"] == reg["k"]
    m = len(summary["domains"])
    assert summary["domains"] == [f"c{i:02d}" for i in range(m)]
    assert sum(summary["domain_sizes"]) == 1438 and abs(sum(summary["eval_proportions"]) - 1) < 1e-9
    assert (tmp_path / "regroup.md").exists() and (tmp_path / "regroup_sweep.png").exists()
    # eval_loss is the cross-entropy of the final model, accuracy its hit rate (recomputed)
    ce, acc, per = _recomputed_eval(cfg, tmp_path / "checkpoints" / "last.ckpt")
    assert summary["eval_loss"] == pytest.approx(ce, rel=1e-5)
    assert summary["eval_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert summary["eval_loss_per_domain"] == pytest.approx(per, rel=1e-5)
    assert set(summary["eval_accuracy_per_domain"]) == set(summary["domains"])
    assert summary["eval_loss"] < summary["eval_loss_initial"] - 1.0  # it learned (2.3 -> <1.3)
    assert acc > 0.5  # 10 classes: chance is 0.1
    # R&B on the classifier head: weights move and stay on the simplex; G saved per round
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    assert traj.shape == (5, m)  # p0 + 4 rounds
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)
    assert (traj >= 0).all() and np.abs(traj[1:] - traj[0]).max() > 1e-3
    assert len(summary["gram_rounds"]) == 4
    assert np.load(summary["gram_rounds"][0]).shape == (m, m)
    # exact accumulators of the 10 x 64 head (mode=auto)
    assert summary["balance_memory_bytes"] >= 4 * m * 10 * 64
    # for a classifier one example is one token; FLOPs relative to 6 N per example
    assert summary["tokens_per_domain"] == summary["examples_per_domain"]
    assert sum(summary["examples_per_domain"].values()) == 40 * 32
    over = summary["overhead"]
    train_flops = 6.0 * summary["num_parameters"] * 40 * 32
    assert over["flops_pct"] == pytest.approx(100 * over["extra_flops"] / train_flops)
    assert 0 < over["flops_pct"] < 100 and over["wall_pct"] > 0


def test_digits_predefined_rnb_resumes_exactly(tmp_path: Path) -> None:
    over = [*DIGITS, "strategy=rnb", "initial_eval=false"]
    full, resumed = full_and_resumed(over, tmp_path, crash_at=25)  # resumes from step 20
    assert full["domains"] == [f"digit{d}" for d in range(10)]
    assert full["regroup"] is None
    a = np.array([t["weights"] for t in full["weights_trajectory"]])
    b = np.array([t["weights"] for t in resumed["weights_trajectory"]])
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert np.abs(a[1:] - 0.1).max() > 1e-3
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], abs=1e-6)
    assert resumed["eval_accuracy"] == pytest.approx(full["eval_accuracy"], abs=1e-9)
    assert resumed["resumes"][0]["step"] == 20


def test_digits_stratified_with_domain_groups(tmp_path: Path) -> None:
    groups = "data.domain_groups={round: [0, 6, 8, 9], straight: [1, 4, 7], curved: [2, 3, 5]}"
    summary = train(compose("train", [*DIGITS, groups, f"output_dir={tmp_path}"]))
    assert summary["domains"] == ["curved", "round", "straight"]
    assert all(w == pytest.approx(1 / 3) for w in summary["final_weights"])
    assert summary["strategy"]["name"] == "Stratified"
    assert summary["overhead"]["flops_pct"] == 0


def test_digits_regroup_needs_the_features_embedder(tmp_path: Path) -> None:
    cfg = compose("train", [*DIGITS, "regroup=kmeans", "regroup/embedder=tfidf"])
    with pytest.raises(
        InstantiationException, match=r"column 'features' \(regroup/embedder=features\)"
    ):
        build_datamodule(cfg)


def test_digits_gradient_probe_strategy_batches_feature_rows(tmp_path: Path) -> None:
    """Probe services batch a feature split by its own keys; FLOPs count one row per image."""
    over = [*DIGITS, "strategy=doge", "trainer.max_steps=20", "initial_eval=false"]
    summary = train(compose("train", [*over, f"output_dir={tmp_path}"]))
    assert summary["status"] == "completed" and summary["rounds"] == 2
    # per round m = 10 probe batches of 16 images vs 10 steps x 32 images: 160 / 320
    assert summary["overhead"]["flops_pct"] == pytest.approx(50.0)
    traj = np.array([t["weights"] for t in summary["weights_trajectory"]])
    np.testing.assert_allclose(traj.sum(axis=1), 1.0)


@pytest.mark.parametrize(("seed", "ari"), [(0, 0.73), (1, 0.65), (2, 0.66)])
def test_readme_digits_claims(seed: int, ari: float) -> None:
    """The README's numbers about the data, the model and Regroup on the digits."""
    cfg = compose("train", ["experiment=digits", *REGROUP[:2], f"seed={seed}", "threads=1"])
    dm = build_datamodule(cfg)
    reg = dm.regroup_summary
    assert reg["k"] == 12  # the default k sweep with silhouette
    assert round(reg["agreement"]["clusters_vs_reference"]["ari"], 2) == ari
    assert (len(dm.train_data), len(dm.eval_data)) == (1438, 359)
    if seed == 0:  # 1s and 5s each split into two style clusters of their own
        target = dm.train_data.target
        for digit, sizes in ((1, [46, 83]), (5, [59, 76])):
            counts = np.bincount(dm.labels.train[target == digit], minlength=12)
            assert sorted(counts)[-2:] == sizes, (digit, counts)
            for c in np.argsort(counts)[-2:]:  # clusters made mostly of that digit
                assert counts[c] / (dm.labels.train == c).sum() > 0.6
        model = instantiate(cfg.model, domain_names=dm.domain_names, **dm.model_inputs())
        assert model.num_parameters() == 4810


def test_digits_doremi_is_refused_by_name(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    over = [*DIGITS, "trainer.max_steps=10", "initial_eval=false"]
    train(compose("train", [*over, f"output_dir={ref}"]))
    doremi = [*over, "strategy=doremi", f"strategy.reference={ref}", f"output_dir={tmp_path / 'x'}"]
    with pytest.raises(ValueError, match=r"strategy=doremi .* DigitsDataModule .* has no tokens"):
        train(compose("train", doremi))
    assert json.loads((tmp_path / "x" / "summary.json").read_text())["status"] == "failed"
