"""R&B under ``trainer.precision=bf16-mixed`` (CPU autocast): the capture stays fp32 and the
mixture follows the fp32 run's."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from rnb.balance.callback import BalanceCallback
from rnb.config import compose
from rnb.train import train
from tests.conftest import TINY

pytestmark = pytest.mark.slow


class _CaptureSpy(L.Callback):
    """Records the capture's accumulator dtype and the head output dtype of a training step."""

    def on_train_start(self, trainer, pl_module) -> None:
        self._handle = pl_module.head.register_forward_hook(self._record_output)

    def _record_output(self, module, inputs, output) -> None:
        self.head_dtype = output.dtype  # the first training forward's
        self._handle.remove()

    def on_train_end(self, trainer, pl_module) -> None:
        cb = next(c for c in trainer.callbacks if isinstance(c, BalanceCallback))
        self.acc_dtype = cb.capture.accumulators.dtype


def test_bf16_mixed_rnb_keeps_fp32_capture_and_the_fp32_mixture(tmp_path: Path) -> None:
    runs, spies = {}, {}
    for precision in ("32-true", "bf16-mixed"):
        spies[precision] = spy = _CaptureSpy()
        cfg = compose(
            "train",
            [*TINY, "strategy=rnb", "logger=none", "initial_eval=false", "threads=1",
             f"trainer.precision={precision}", f"output_dir={tmp_path / precision}"],
        )  # fmt: skip
        runs[precision] = train(cfg, callbacks=[spy])
    fp32, bf16 = runs["32-true"], runs["bf16-mixed"]
    assert bf16["status"] == "completed" and bf16["steps"] == 12
    assert spies["bf16-mixed"].head_dtype == torch.bfloat16  # autocast ran the head in bf16 ...
    assert spies["bf16-mixed"].acc_dtype == torch.float32  # ... the accumulators stay fp32
    assert spies["32-true"].head_dtype == torch.float32
    p32 = np.array([r["weights"] for r in fp32["weights_trajectory"]])
    p16 = np.array([r["weights"] for r in bf16["weights_trajectory"]])
    assert p32.shape == p16.shape == (4, 6)
    # Tolerance: bf16 keeps 8 significant bits (rounding 2^-9 = 0.2 % relative) in δ and a;
    # the Gram entries inherit errors of that order and p, a smooth function of them, moves by
    # that fraction of its own update. The updates here move p by > 0.05 from uniform (checked
    # below), so 2e-3 allows ~4 % of a round's move; measured 3.3e-4 (2 CPU cores, torch 2.13).
    moved = np.abs(p32[1:] - 1.0 / 6).max(axis=1)
    assert (moved > 0.05).all(), moved
    gap = np.abs(p32 - p16).max()
    assert 0.0 < gap < 2e-3  # > 0: the bf16 run did compute in bf16
    assert bf16["eval_loss"] == pytest.approx(fp32["eval_loss"], abs=5e-3)
