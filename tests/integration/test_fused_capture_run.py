"""`balance.capture.fused` through rnb-train: the same R&B mixture trajectory as the hooks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from rnb.balance.callback import BalanceCallback
from rnb.config import compose
from rnb.train import train


class CaptureKind(L.Callback):
    """Records which capture path the run's R&B callback built."""

    def __init__(self) -> None:
        self.fused: bool | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        balance = next(c for c in trainer.callbacks if isinstance(c, BalanceCallback))
        self.fused = balance.capture.fused


def test_fused_and_hook_capture_give_the_same_trajectory(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "strategy=rnb", "balance.capture.mode=exact", "initial_eval=false"]
    runs = {}
    for fused in ("true", "false"):
        kind = CaptureKind()
        cfg = compose(
            "train", [*over, f"balance.capture.fused={fused}", f"output_dir={tmp_path / fused}"]
        )
        runs[fused] = train(cfg, callbacks=[kind])
        assert kind.fused is (fused == "true")
    traj = {k: np.array([t["weights"] for t in s["weights_trajectory"]]) for k, s in runs.items()}
    assert traj["true"].shape == traj["false"].shape == (4, traj["true"].shape[1])
    assert np.abs(traj["true"][1:] - traj["true"][0]).max() > 1e-3  # the mixture moved
    # Same sums up to float summation order (the fused weight gradient also trains the model).
    np.testing.assert_allclose(traj["true"], traj["false"], rtol=0, atol=1e-4)
    for a, b in zip(runs["true"]["gram_rounds"], runs["false"]["gram_rounds"], strict=True):
        np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-3, atol=1e-9)
    # Fused: the products are the weight gradient, so the analytic extra FLOPs are the Gram only.
    assert runs["true"]["overhead"]["flops_pct"] < runs["false"]["overhead"]["flops_pct"]
