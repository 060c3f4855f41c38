"""rnb-report's figures on hand-made runs with 100 domains: only the top domains plus
``other`` are drawn, names are shortened, KL and R² are the documented formulas, and the
k-sweep note comes from the shared edge / flat judgement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnb.regroup.advice import advise
from rnb.report.build import k_notes, write_report
from rnb.report.groups import group_runs
from rnb.report.ksweep import k_sweep, k_sweep_data, r_squared
from rnb.report.plots import (
    eval_curves,
    kl_divergence,
    mixture_trajectories,
    shorten,
    top_domains,
    weights_vs_eval,
)
from rnb.report.runs import find_runs

M = 100
NAMES = [f"a_very_long_domain_name_number_{i:03d}" for i in range(M)]
K_VALUES = [8, 12, 16, 20]


def _regroup(k: int, sil: dict[int, float]) -> dict:
    rows = [
        {"value": v, "k_found": v, "silhouette": s, "davies_bouldin": 1.0,
         "calinski_harabasz": 1.0, "excluded": None}
        for v, s in sil.items()
    ]  # fmt: skip
    return {"k": k, "fingerprint": f"fp{k}", "param": "n_clusters", "metric": "silhouette",
            "chosen": {"value": k, "k": k}, "scores": rows}  # fmt: skip


def _run(root: Path, k: int, seed: int, loss: float, sil: float) -> None:
    rng = np.random.default_rng(k * 10 + seed)
    folder = root / f"k{k}_s{seed}"
    (folder / "logs").mkdir(parents=True)
    traj = [{"step": s, "weights": rng.dirichlet(np.ones(M)).tolist()} for s in (0, 4, 8)]
    summary = {
        "status": "completed",
        "eval_loss": loss,
        "eval_loss_per_domain": dict(zip(NAMES, rng.uniform(1, 3, M).tolist(), strict=True)),
        "domains": NAMES,
        "eval_proportions": rng.dirichlet(np.ones(M)).tolist(),
        "average_weights": rng.dirichlet(np.ones(M)).tolist(),
        "weights_trajectory": traj,
        "steps": 12,
        "strategy": {"name": "RnB"},
        "seed": seed,
        "overhead": {"flops_pct": 1.0, "wall_pct": 2.0},
        "regroup": _regroup(k, {k: sil}),
        "config": {"seed": seed, "strategy": {"_target_": "x.RnB"},
                   "regroup": {"clusterer": {"_target_": "sklearn.cluster.KMeans"},
                               "k_values": [k], "seed": seed}},
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"step": [0, 5, 11], "val/loss": [5.0, 4.0, loss]}).to_csv(
        folder / "logs" / "metrics.csv", index=False
    )


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    # eval loss falls with k while the silhouette rises: chosen k = 20, the sweep's edge
    for i, k in enumerate(K_VALUES):
        for seed in (0, 1):
            _run(tmp_path, k, seed, loss=3.0 - 0.1 * i + 0.01 * seed, sil=0.2 + 0.05 * i)
    return tmp_path


def test_helpers() -> None:
    assert shorten("information_extraction") == "informat…xtraction" and shorten("ab") == "ab"
    assert shorten(NAMES[41]) != shorten(NAMES[42])
    assert top_domains(np.array([0.1, 0.5, 0.2, 0.9]), n=2) == [1, 3]
    assert top_domains(np.array([0.1, 0.5, 0.2]), n=2) == [0, 1, 2]  # no 1-domain "other"
    q, p = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert kl_divergence(q, p) == pytest.approx(math.log(2))
    assert math.isnan(r_squared([1, 2], [1, 2]))
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 2.9, 4.2]
    assert r_squared(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)


def test_figures_draw_top_domains_and_other(runs_dir: Path) -> None:
    groups = group_runs(find_runs([runs_dir]))
    assert [len(g.completed) for g in groups] == [2] * len(K_VALUES)  # k_values splits rows
    fig = mixture_trajectories(groups, top=8)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert len(labels) == 9 and labels[-1] == f"other ({M - 8})"
    assert all(len(t) <= 18 for t in labels[:-1])
    bars = weights_vs_eval(groups, top=12)
    ticks = [t.get_text() for t in bars.axes[0].get_xticklabels()]
    assert len(ticks) == 13 and ticks[-1] == f"other ({M - 12})"
    assert "KL(q‖p̄) = " in bars.axes[0].get_title()
    curves = eval_curves(groups)
    assert len(curves.axes[0].get_lines()) == len(K_VALUES)
    assert np.allclose(curves.axes[0].get_lines()[0].get_ydata(), [5.0, 4.0, 3.005])


def test_k_sweep_figure_and_note(runs_dir: Path, tmp_path: Path) -> None:
    groups = group_runs(find_runs([runs_dir]))
    data = k_sweep_data(groups)
    assert data is not None and data.chosen == 20 and list(data.curve) == K_VALUES
    assert data.advice == advise(K_VALUES, [0.2 + 0.05 * i for i in range(4)], 20)
    assert data.advice.edge == "high"
    fig = k_sweep(groups, data)
    legend = fig.axes[1].get_legend_handles_labels()[1]
    sil = [0.2 + 0.05 * (i // 2) for i in range(8)]
    loss = [3.0 - 0.1 * (i // 2) + 0.01 * (i % 2) for i in range(8)]
    assert legend == [f"RnB: R² = {r_squared(sil, loss):.2f}"]
    notes = k_notes(groups)
    assert notes == [f"Across the runs' sweeps: {data.advice.message}"]
    report = write_report([runs_dir], tmp_path / "out")
    text = report.read_text()
    assert f"**Note:** Across the runs' sweeps: {data.advice.message}" in text
    for name in ("k_sweep", "eval_curves", "trajectories", "weights_vs_eval"):
        assert f"(figures/{name}.png)" in text
        assert (report.parent / "figures" / f"{name}.png").stat().st_size > 10_000
