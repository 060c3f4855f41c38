"""Declaring a batch to the gradient capture reads host copies, never device tensors.

On a GPU, ``set_batch`` planning from the device's ``domain`` / ``labels`` tensors would sync
every step. `MixtureModule.on_before_batch_transfer` makes NumPy copies while the batch is
still on the host; here a real run checks that every ``set_batch`` got exactly those copies
(NumPy, equal to the batch's domains and the LM's head row mask).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnb.balance.capture import HeadGradientCapture
from rnb.config import compose
from rnb.models.base import HOST_DOMAIN, HOST_ROW_MASK, MixtureModule
from rnb.train import train


def test_set_batch_gets_host_copies_made_before_transfer(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    transferred: list[dict] = []
    real_set_batch = HeadGradientCapture.set_batch
    real_hook = MixtureModule.on_before_batch_transfer

    def spy_set_batch(self, domain_ids, row_mask=None):
        calls.append((domain_ids, row_mask))
        return real_set_batch(self, domain_ids, row_mask)

    def spy_hook(self, batch, dataloader_idx):
        out = real_hook(self, batch, dataloader_idx)
        if HOST_DOMAIN in out:
            transferred.append(out)
        return out

    monkeypatch.setattr(HeadGradientCapture, "set_batch", spy_set_batch)
    monkeypatch.setattr(MixtureModule, "on_before_batch_transfer", spy_hook)
    cfg = compose(
        "train",
        [*tiny_overrides, "strategy=rnb", "initial_eval=false", "logger=none",
         "trainer.max_steps=4", f"output_dir={tmp_path}"],
    )  # fmt: skip
    train(cfg)
    assert len(calls) == 4 and len(transferred) == 4  # training batches only, not eval ones
    for (dom, mask), batch in zip(calls, transferred, strict=True):
        assert isinstance(dom, np.ndarray) and isinstance(mask, np.ndarray)
        assert dom is batch[HOST_DOMAIN] and mask is batch[HOST_ROW_MASK]
        np.testing.assert_array_equal(dom, batch["domain"].numpy())
        labels = batch["labels"]
        want = torch.zeros_like(labels, dtype=torch.bool)
        want[:, :-1] = labels[:, 1:] != -100
        np.testing.assert_array_equal(mask, want.numpy())
        assert 0 < mask.sum() < mask.size


def test_capture_is_detached_when_the_run_ends(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """After training, the head is a plain ``nn.Linear`` again (no fused forward, no hooks):
    a notebook that keeps the model must not keep capturing."""
    import lightning as L

    seen: dict[str, L.LightningModule] = {}

    class Keep(L.Callback):
        def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen["module"] = pl_module
            seen["fused"] = "forward" in vars(pl_module.head)

    cfg = compose(
        "train",
        [*tiny_overrides, "strategy=rnb", "initial_eval=false", "logger=none",
         "trainer.max_steps=2", f"output_dir={tmp_path}"],
    )  # fmt: skip
    train(cfg, callbacks=[Keep()])
    head = seen["module"].head
    assert seen["fused"]  # the fused capture was attached during the run
    assert "forward" not in vars(head) and not head._forward_hooks
