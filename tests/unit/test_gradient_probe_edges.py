"""GradientProbe.setup and _buffer edges: trainer defaults, the precision context, the
target file's key, the matrix's rows, dtype and device, and the setup log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.gradient_probe import GradientProbe


class _Linear(torch.nn.Module):
    """A feature model with the LM's ``example_losses`` contract, plus a large parameter
    the loss does not reach (``extra``: sizes the matrix for the log line's MiB)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1)
        self.extra = torch.nn.Parameter(torch.zeros(2**16))

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        err = self.lin(batch["features"]).squeeze(-1) - batch["target"]
        return err**2, torch.ones_like(err)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _Split(SimpleNamespace):
    """A feature split (``batch_keys`` arrays) with a length, as ``encode_file`` returns."""

    def __len__(self) -> int:
        return len(self.domain)


def _dm(counts: list[int]) -> SimpleNamespace:
    """A feature datamodule with ``counts[i]`` training examples in domain ``i``."""
    n = sum(counts)
    rng = np.random.default_rng(0)
    split = _Split(
        batch_keys=("features", "target", "domain"),
        features=rng.normal(size=(n, 3)).astype(np.float32),
        target=rng.normal(size=n).astype(np.float32),
        domain=np.repeat(np.arange(len(counts)), counts),
    )
    names = [f"d{i}" for i in range(len(counts))]
    return SimpleNamespace(domain_names=names, train_data=split, eval_data=split)


def _setup(trainer: Any, dm: Any = None, **kw: Any) -> tuple[GradientProbe, _Linear]:
    model = _Linear()
    svc = GradientProbe(**{"batch_size": 2, "target": None, "params": "lin.*", **kw})
    svc.setup(trainer, model, dm or _dm([4, 4]), OverheadMeter())  # type: ignore[arg-type]
    return svc, model


def test_trainer_without_rank_attributes_is_rank_zero_of_one() -> None:
    """A trainer without ``global_rank``/``world_size`` is a single process: rank 0's draws,
    and no cross-rank reduction even when a reduce_fn is handed in."""
    bare, model = _setup(SimpleNamespace())
    rank0, _ = _setup(SimpleNamespace(global_rank=0, world_size=1))
    rank1, _ = _setup(SimpleNamespace(global_rank=1, world_size=2))
    assert (bare.rank, bare.world_size) == (0, 1)
    for x, y in zip(bare.draw(0), rank0.draw(0), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(bare.draw(0), rank1.draw(0), strict=True))
    calls: list[torch.Tensor] = []
    bare.collect(SimpleNamespace(), model, lambda t: calls.append(t) or t)  # type: ignore[arg-type]
    assert calls == []


def test_probe_runs_under_the_trainers_precision_context() -> None:
    """The probe's forward passes run in the precision plugin's context (autocast under
    16-mixed), like the training step's."""
    entered: list[bool] = []

    @contextmanager
    def forward_context() -> Iterator[None]:
        entered.append(True)
        yield

    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(forward_context=forward_context))
    svc, model = _setup(trainer)
    svc.probe(model)
    assert entered == [True]


def test_a_domain_with_one_example_is_present() -> None:
    svc, model = _setup(SimpleNamespace(), dm=_dm([4, 1, 0]))
    out = svc.collect(SimpleNamespace(), model, None)  # type: ignore[arg-type]
    assert out["grad_present"].tolist() == [True, True, False]
    assert float(out["domain_grads"][1].abs().max()) > 0.0


def test_no_target_means_no_target_row() -> None:
    svc, model = _setup(SimpleNamespace())
    assert svc.rows == 2
    assert svc.probe(model).shape == (2, svc.num_probed)


def test_target_file_is_encoded_under_its_config_key(tmp_path: Any) -> None:
    """``encode_file`` gets the key its errors must name (``balance.probe.target_path``)."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "x"}\n')
    dm = _dm([4, 4])
    calls: list[tuple[str, str]] = []

    def encode_file(file: str, key: str) -> Any:
        calls.append((file, key))
        return dm.train_data

    dm.encode_file = encode_file
    svc, _ = _setup(SimpleNamespace(), dm=dm, target="file", target_path=str(path))
    assert calls == [(str(path), "balance.probe.target_path")]
    assert svc.target_index.tolist() == list(range(8)) and svc.rows == 3


def test_matrix_is_fp32_whatever_the_default_dtype() -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        svc, _ = _setup(SimpleNamespace())
    finally:
        torch.set_default_dtype(old)
    assert svc.matrix is not None and svc.matrix.dtype == torch.float32


def test_setup_logs_the_matrix_size(caplog: pytest.LogCaptureFixture) -> None:
    """2 rows x 2**16 probed fp32 values = 0.5 MiB; 65540 parameters in all. One probed
    parameter: the matrix's device is the first (only) probed parameter's."""
    name = "rnb.balance.services.gradient_probe"
    with caplog.at_level(logging.INFO, logger=name):
        svc, _ = _setup(SimpleNamespace(), params="extra")
    assert svc.matrix is not None and svc.matrix.device == svc.named[0][1].device
    messages = [r.getMessage() for r in caplog.records if r.name == name]
    assert messages == [
        "gradient probe: 2 x 65536 fp32 matrix (0.5 MiB) over 65536 of 65540 parameters"
    ]


def test_matrix_is_on_the_parameters_device() -> None:
    """The buffer lives where the probed parameters are, not on the default device
    (``meta`` stands in for an accelerator)."""
    with torch.device("meta"):
        model = _Linear()
    svc = GradientProbe(batch_size=2, target=None, params="lin.*")
    svc.setup(SimpleNamespace(), model, _dm([4, 4]), OverheadMeter())  # type: ignore[arg-type]
    assert svc.matrix is not None and svc.matrix.device.type == "meta"
    assert svc.matrix.shape == (2, 4) and svc.matrix.dtype == torch.float32


def test_a_small_domain_does_not_end_the_draw() -> None:
    """A domain with no more examples than ``batch_size`` gives all of them, and the
    domains after it are still drawn and probed."""
    svc, model = _setup(SimpleNamespace(), dm=_dm([1, 2, 4]))
    small, exact, large = svc.draw(0)
    assert small.tolist() == [0] and exact.tolist() == [1, 2]
    assert large.size == 2 and set(large.tolist()) <= {3, 4, 5, 6}
    assert float(svc.probe(model)[2].abs().max()) > 0.0
