"""``resolve_reference`` and ``ReferenceModel.setup``: exact refusals, defaults, logging.

Complements ``test_reference_service.py`` (whose helpers it reuses): the full text of each
refusal, a summary without ``status``, reference classes without a GPT-style ``config``,
the service's state before ``setup`` and its one log line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from rnb.accounting import OverheadMeter
from rnb.balance.services.reference import ReferenceModel, resolve_reference
from rnb.models.lm import per_token_loss
from tests.service_stubs import VOCAB, batch, datamodule, split, tiny_model, trainer
from tests.unit.test_reference_service import TRAIN_DOMAINS, _save_ckpt, _service

NOT_SET = (
    "strategy.reference is not set: DoReMi needs a reference model. Train one first (e.g. "
    "`rnb-train strategy=stratified hydra.run.dir=outputs/doremi/reference`) and pass "
    "strategy.reference=<its run dir or a .ckpt>"
)


def _exactly(msg: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for the whole message and nothing else."""
    return "^" + re.escape(msg) + "$"


def _run_dir(root: Path, summary: dict[str, Any] | None) -> Path:
    """A run dir with ``checkpoints/last.ckpt`` and, unless None, this ``summary.json``."""
    _save_ckpt(root / "checkpoints" / "last.ckpt", tiny_model(seed=1))
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


# ---------------------------------------------------------------- resolve_reference
@pytest.mark.parametrize("path", [None, ""])
def test_unset_reference_message_is_exact(path: str | None) -> None:
    """``None`` and the empty string (``strategy.reference=``) are both 'not set'."""
    with pytest.raises(ValueError, match=_exactly(NOT_SET)):
        resolve_reference(path)


def test_run_dir_without_summary_message_is_exact(tmp_path: Path) -> None:
    root = _run_dir(tmp_path / "running", None)
    want = (
        f"strategy.reference='{root}' has no summary.json: the run has not finished (or is no "
        "rnb run dir); let it complete, or pass one of its checkpoints as "
        "strategy.reference=<run dir>/checkpoints/<name>.ckpt"
    )
    with pytest.raises(ValueError, match=_exactly(want)):
        resolve_reference(root)


@pytest.mark.parametrize(
    ("summary", "tail"),
    [
        (
            {"status": "diverged", "failure": {"step": 12, "reason": "loss is nan"}},
            "12 (loss is nan)",
        ),
        ({"status": "running", "failure": None}, "None (None)"),  # no failure record yet
    ],
)
def test_run_dir_not_completed_message_is_exact(
    tmp_path: Path, summary: dict[str, Any], tail: str
) -> None:
    root = _run_dir(tmp_path / "run", summary)
    want = (
        f"strategy.reference='{root}': that run {summary['status']} at step {tail}; a "
        "reference must be a completed run: point strategy.reference at a completed run dir"
    )
    with pytest.raises(ValueError, match=_exactly(want)):
        resolve_reference(root)


def test_summary_without_status_counts_as_completed(tmp_path: Path) -> None:
    """A summary written before ``status`` existed is a completed run's: it resolves."""
    summary = {"config": {"model": {"_target_": "rnb.models.lm.CausalLMModule"}}}
    root = _run_dir(tmp_path / "old", summary)
    assert resolve_reference(root) == (root / "checkpoints" / "last.ckpt", summary)


def test_summary_is_read_as_utf8_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``summary.json`` with raw UTF-8 text is read as UTF-8 under a Latin-1 locale too.

    rnb writes ASCII JSON (non-ASCII escaped), but JSON's encoding is UTF-8 and a summary
    written or edited by other tools may hold raw UTF-8. The locale is emulated (on any host,
    also in Python's UTF-8 mode): a text file opened without an explicit encoding decodes as
    Latin-1, which turns the reason's UTF-8 bytes into mojibake.
    """
    reason = "loss is nan at ∇ · naïve"
    summary = {"status": "failed", "failure": {"step": 3, "reason": reason}}
    root = _run_dir(tmp_path / "run", None)
    (root / "summary.json").write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
    real_open = io.open

    def latin1_locale_open(
        file: Any, mode: str = "r", buffering: int = -1, encoding: Any = None, *a: Any, **k: Any
    ) -> Any:
        if "b" not in mode and encoding in (None, "locale"):
            encoding = "latin-1"
        return real_open(file, mode, buffering, encoding, *a, **k)

    monkeypatch.setattr(io, "text_encoding", lambda enc, *a: "locale" if enc is None else enc)
    monkeypatch.setattr(io, "open", latin1_locale_open)
    # the emulation takes effect on pathlib's default reading, and the reason would change
    assert json.loads((root / "summary.json").read_text())["failure"]["reason"] != reason
    with pytest.raises(ValueError, match=re.escape(f"failed at step 3 ({reason}); a reference")):
        resolve_reference(root)


# ---------------------------------------------------------------- before setup
def test_state_before_setup_has_no_reference_and_an_empty_digest(tmp_path: Path) -> None:
    """Not set up: no reference model, and a saved state carries the empty digest ``""``."""
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    fresh = ReferenceModel(str(path))
    assert fresh.ref is None
    zeros = torch.zeros(3, dtype=torch.float64)
    fresh.load_state_dict({"sums": {k: zeros for k in ("clipped", "excess", "tokens")}})
    state = fresh.state_dict()
    assert state["sha256"] == "" and state["reference"] == str(path)


# ---------------------------------------------------------------- setup
class BigramLM(L.LightningModule):
    """A reference LM without GPT's ``model.config.max_position_embeddings``.

    Args:
        vocab_size: tokens (the checkpoint's ``hyper_parameters`` carry it).
        inner: what ``.model`` is: ``"none"`` (no attribute), ``"no_config"`` (a module
            without ``config``) or ``"no_positions"`` (a config without
            ``max_position_embeddings``).
    """

    def __init__(self, vocab_size: int = VOCAB, inner: str = "none") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.table = nn.Embedding(vocab_size, vocab_size)
        if inner != "none":
            self.model = nn.Identity()
        if inner == "no_positions":
            self.model.config = SimpleNamespace(n_positions=4)  # named otherwise: not read

    def token_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return per_token_loss(self.table(batch["input_ids"]), batch["labels"])


@pytest.mark.parametrize("inner", ["none", "no_config", "no_positions"])
def test_reference_without_a_position_count_loads(tmp_path: Path, inner: str) -> None:
    """No readable context length: the check is skipped, the reference loads and scores."""
    torch.manual_seed(1)
    saved = BigramLM(inner=inner)
    assert (
        not hasattr(saved, "model")
        or not hasattr(saved.model, "config")
        or not hasattr(saved.model.config, "max_position_embeddings")
    )
    torch.manual_seed(0)
    model, dm = BigramLM(inner=inner), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", saved), model, dm)
    assert type(svc.ref) is BigramLM and svc.n_ref == VOCAB * VOCAB
    b = batch(split(TRAIN_DOMAINS, seed=5), [0, 1, 2])
    for got, want in zip(svc.ref.token_losses(b), saved.token_losses(b), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_short_context_message_is_exact(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1, positions=8))
    want = (
        f"strategy.reference='{path}': the reference model takes 8 positions, this run's "
        f"data.max_length is {dm.max_length}; use a reference trained with the same "
        "data.max_length"
    )
    with pytest.raises(ValueError, match=_exactly(want)):
        _service(path, model, dm)


def test_sums_start_on_the_host_whatever_the_default_device(tmp_path: Path) -> None:
    """The round sums are CPU tensors after setup even under another default device.

    (They move to the token losses' device at the first batch.) The reference itself is
    built on the default device, here ``meta``, where loading weights is a no-op.
    """
    model, dm = BigramLM(), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", BigramLM())
    torch.set_default_device("meta")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*meta parameter")
            svc = _service(path, model, dm)
    finally:
        torch.set_default_device(None)
    assert torch.empty(1).device == torch.device("cpu")  # the default was restored
    assert svc.ref is not None and next(svc.ref.parameters()).device == torch.device("meta")
    for k, v in svc.sums.items():
        assert v.device == torch.device("cpu") and v.tolist() == [0.0, 0.0, 0.0], k


def test_setup_logs_the_reference_and_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    ref = tiny_model(seed=1)
    path = _save_ckpt(tmp_path / "ref.ckpt", ref)
    n = sum(p.numel() for p in ref.parameters())
    with caplog.at_level(logging.INFO, logger="rnb.balance.services.reference"):
        svc = ReferenceModel(str(path))
        svc.setup(trainer(), model, dm, OverheadMeter())
    records = [r for r in caplog.records if r.name == "rnb.balance.services.reference"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, f"DoReMi reference: {path} ({n} parameters)")
    ]
