"""Console output of a run: step progress bar, Lightning noise filters, the threads key."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from threadpoolctl import threadpool_info, threadpool_limits

from rnb.config import compose
from rnb.console import StepProgressBar, quiet_lightning
from rnb.train import _set_threads


def _fit(tmp_path, bar: StepProgressBar, **kw) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", callbacks=[bar], logger=False, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0, **kw,
    )  # fmt: skip
    trainer.fit(BoringModel())
    return trainer


def test_progress_bar_counts_optimizer_steps_of_max_steps(tmp_path) -> None:
    bar = StepProgressBar()
    # 64 batches per epoch, 2 batches per optimizer step: 10 steps end mid-epoch 0
    trainer = _fit(tmp_path, bar, max_steps=10, max_epochs=-1, accumulate_grad_batches=2)
    pb = bar.train_progress_bar
    assert trainer.global_step == 10
    assert pb.total == 10 and pb.n == 10  # not "Epoch 0/-2": steps of max_steps
    assert pb.desc.startswith("Training steps")


def test_progress_bar_epoch_runs_unchanged(tmp_path) -> None:
    bar = StepProgressBar()
    _fit(tmp_path, bar, max_epochs=1, limit_train_batches=5)
    assert bar.train_progress_bar.total == 5 and bar.train_progress_bar.desc.startswith("Epoch")


@pytest.fixture
def _filters() -> Iterator[None]:
    with warnings.catch_warnings():
        yield
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).filters.clear()


@pytest.mark.usefixtures("_filters")
def test_quiet_lightning_drops_only_the_known_noise(caplog: pytest.LogCaptureFixture) -> None:
    from lightning.pytorch.utilities._pytree import _tree_flatten

    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        _tree_flatten([1, {"a": 2}])  # Lightning's own call of torch's deprecated LeafSpec()
    assert any("LeafSpec" in str(w.message) for w in before)  # the noise exists unfiltered

    quiet_lightning()
    quiet_lightning()  # idempotent
    with warnings.catch_warnings(record=True) as after:
        _tree_flatten([1, {"a": 2}])
        warnings.warn("a real deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in after] == ["a real deprecation"]

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert "litlogger" not in caplog.text and "GPU available" in caplog.text


def test_threads_key() -> None:
    assert compose("train", []).threads is None  # default: the libraries' own choice
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS/OpenMP pools on exit
        try:
            _set_threads(1)
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info())
        finally:
            torch.set_num_threads(before)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"threads: need a positive integer"):
            _set_threads(bad)
