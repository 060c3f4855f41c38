"""A real R&B run, pinned end to end: every round's mixture is the documented formula.

For each round ``t`` the run saves ``gram/round_XXXX.npy`` (``G_ij = <g_i, g_j>/(n_i n_j)``)
and logs the next mixture in ``weights_trajectory``. Recomputing
``softmax(λ · Gq/‖Gq‖)`` (or ``softmax(λ · Gq)``) from the saved ``G`` and the run's ``q`` with
a brute-force NumPy loop must give exactly the logged weights. This pins the strategy, the
saved files and the wiring between them at once: a strategy that skips the ``n_i n_j``
division, ignores ``q`` or reads another round's statistics disagrees with the file; a file
written without the normalisation disagrees with the strategy (per-round counts differ
between domains, so the division is not a common scale that the normalised form cancels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnb.config import compose
from rnb.train import train


def formula(G: np.ndarray, q: np.ndarray, lam: float, form: str) -> np.ndarray:
    """method.md §Stage 2, written out element by element."""
    m = len(q)
    q = np.asarray(q, dtype=np.float64) / float(np.sum(q))
    gq = [sum(G[i][j] * q[j] for j in range(m)) for i in range(m)]
    norm = sum(x * x for x in gq) ** 0.5
    logits = [lam * x / norm if form == "normalized" else lam * x for x in gq]
    top = max(logits)
    e = [np.exp(x - top) for x in logits]
    return np.array([x / sum(e) for x in e])


CASES = {
    # name: (overrides, objective q as a function of the summary, λ, form)
    "eval_proportions": ([], lambda s: s["eval_proportions"], 3.0, "normalized"),
    "uniform": (["strategy.objective=uniform"], lambda s: np.ones(len(s["domains"])), 3.0, "normalized"),
    "explicit_q": (
        ["strategy.objective=[5,0,1,0,2,1]", "strategy.lambda_=2"],
        lambda s: [5, 0, 1, 0, 2, 1], 2.0, "normalized",
    ),
    # unnormalized: Gq is small on a tiny model, so a large λ makes the weights move
    "unnormalized": (
        ["strategy.form=unnormalized", "strategy.lambda_=2000"],
        lambda s: s["eval_proportions"], 2000.0, "unnormalized",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_rnb_round_weights_follow_the_formula(
    tmp_path: Path, tiny_overrides: list[str], case: str
) -> None:
    over, q_of, lam, form = CASES[case]
    cfg = compose(
        "train",
        [*tiny_overrides, "strategy=rnb", "initial_eval=false", "logger=none", *over,
         f"output_dir={tmp_path}"],
    )  # fmt: skip
    train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    q = np.asarray(q_of(summary), dtype=np.float64)
    assert len(summary["domains"]) == 6 and len(q) == 6
    if case == "eval_proportions":
        assert np.ptp(q) > 0.05  # a non-uniform q, so ignoring it is visible
    traj = summary["weights_trajectory"]
    files = sorted((tmp_path / "gram").glob("round_*.npy"))
    assert [Path(p).name for p in summary["gram_rounds"]] == [f.name for f in files]
    assert [f.name for f in files] == ["round_0000.npy", "round_0001.npy", "round_0002.npy"]
    assert [t["step"] for t in traj] == [0, 4, 8, 12]
    np.testing.assert_allclose(traj[0]["weights"], np.full(6, 1 / 6))
    assert len(summary["gq_norms"]) == len(files)
    moved = 0.0
    for t, f in enumerate(files):
        G = np.load(f)
        assert G.shape == (6, 6)
        expected = formula(G, q, lam, form)
        np.testing.assert_allclose(traj[t + 1]["weights"], expected, rtol=1e-6, atol=1e-9)
        qn = q / q.sum()
        gq_norm = sum(sum(G[i][j] * qn[j] for j in range(6)) ** 2 for i in range(6)) ** 0.5
        assert summary["gq_norms"][t] == pytest.approx(gq_norm, rel=1e-6)
        moved = max(moved, float(np.abs(expected - 1 / 6).max()))
    assert moved > 0.02  # the check is not vacuous: the rounds really moved the mixture
    np.testing.assert_allclose(summary["final_weights"], traj[-1]["weights"])
