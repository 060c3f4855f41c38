"""``ReferenceModel``: per-token excess loss vs brute force; loading and refusing references."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import build_services
from rnb.balance.services.reference import ReferenceModel
from rnb.balance.strategies.doremi import DoReMi
from rnb.models.lm import CausalLMModule, per_token_loss
from rnb.run.fingerprint import tokenizer_digest
from tests.service_stubs import (
    NAMES,
    VOCAB,
    Tokenizer,
    batch,
    datamodule,
    split,
    tiny_model,
    trainer,
)

TRAIN_DOMAINS = [0, 1, 0, 2, 1, 0, 0, 1]  # domain 2 has one example


def _save_ckpt(path: Path, model, tokenizer: Tokenizer | None = None) -> Path:
    """A checkpoint shaped like Lightning's: hparams, state_dict, RunRecord fingerprint."""
    state = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    if tokenizer is not None:
        state["callbacks"] = {
            "RunRecord": {"fingerprint": {"tokenizer": tokenizer_digest(tokenizer)}}
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _service(ref_path: Path | str, model, dm, meter=None) -> ReferenceModel:
    svc = ReferenceModel.from_config({}, DoReMi(reference=str(ref_path)))
    svc.setup(trainer(), model, dm, meter or OverheadMeter())
    return svc


def _step(svc: ReferenceModel, model, b: dict) -> None:
    """What the callback hands the service after a training step: the model's outputs."""
    tok, valid = model.token_losses(b)
    out = {"token_loss": tok.detach(), "token_valid": valid, "domain": b["domain"]}
    svc.on_train_batch_end(trainer(), model, b, out)


def brute_force(model, ref, rows, idx) -> dict[str, np.ndarray]:
    sums = {k: np.zeros(3) for k in ("clipped", "excess", "tokens")}
    for i in idx:
        b = batch(rows, [i])
        with torch.no_grad():
            lm, valid = per_token_loss(model(b["input_ids"], b["attention_mask"]), b["labels"])
            lr, _ = per_token_loss(ref(b["input_ids"], b["attention_mask"]), b["labels"])
        d = int(b["domain"][0])
        for t in range(valid.shape[1]):
            if valid[0, t]:
                e = float(lm[0, t]) - float(lr[0, t])
                sums["clipped"][d] += max(e, 0.0)
                sums["excess"][d] += e
                sums["tokens"][d] += 1
    return sums


def test_excess_loss_equals_brute_force(tmp_path: Path) -> None:
    model, ref = tiny_model(seed=0), tiny_model(seed=1)
    dm = datamodule([0, 1, 2])
    meter = OverheadMeter()
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", ref, dm.tokenizer), model, dm, meter)
    assert model.keep_token_losses  # the model hands its training-forward token losses over
    rows = split(TRAIN_DOMAINS, seed=5)
    for idx in ([0, 1, 2, 3], [4, 5, 6, 7]):  # two steps of one round
        _step(svc, model, batch(rows, idx))
    out = svc.collect(trainer(), model, None)["excess_loss"]
    want = brute_force(model, ref.eval(), rows, range(8))
    np.testing.assert_allclose(out["tokens"].numpy(), want["tokens"])
    np.testing.assert_allclose(out["clipped"].numpy(), want["clipped"] / want["tokens"], rtol=1e-5)
    np.testing.assert_allclose(out["mean"].numpy(), want["excess"] / want["tokens"], rtol=1e-5)
    assert (out["clipped"] >= out["mean"]).all() and (out["clipped"] > out["mean"]).any()
    assert out["vocab_size"] == 50
    svc.teardown()
    assert svc.ref is None and not model.keep_token_losses
    n_ref = sum(p.numel() for p in ref.parameters())
    assert meter.extra_flops == pytest.approx(2.0 * n_ref * 8 * 12)  # one forward per row


def test_reset_and_absent_domain(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1)), model, dm)
    rows = split(TRAIN_DOMAINS, seed=5)
    _step(svc, model, batch(rows, [0, 1]))
    svc.reset()
    _step(svc, model, batch(rows, [0, 2]))  # domain 0 only
    out = svc.collect(trainer(), model, None)["excess_loss"]
    assert out["tokens"][0] > 0 and out["tokens"][1:].tolist() == [0.0, 0.0]
    assert torch.isnan(out["clipped"][1:]).all() and torch.isnan(out["mean"][1:]).all()


def test_reference_is_frozen_and_grads_untouched(tmp_path: Path) -> None:
    model, ref = tiny_model(seed=0), tiny_model(seed=1)
    dm = datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", ref), model, dm)
    assert svc.ref is not None and not svc.ref.training
    assert not any(p.requires_grad for p in svc.ref.parameters())
    for a, b in zip(svc.ref.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # the checkpoint's weights, loaded exactly
    _step(svc, model, batch(split(TRAIN_DOMAINS), [0, 1]))
    assert all(p.grad is None for p in svc.ref.parameters())
    assert not any(svc.ref is m for m in model.modules())  # not part of the trained model


def test_state_round_trip_and_changed_reference(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    svc = _service(path, model, dm)
    _step(svc, model, batch(split(TRAIN_DOMAINS), [0, 1, 3]))
    state = svc.state_dict()
    other = _service(path, model, dm)
    other.load_state_dict(state)
    a = svc.collect(trainer(), model, None)["excess_loss"]
    b = other.collect(trainer(), model, None)["excess_loss"]
    torch.testing.assert_close(a["clipped"], b["clipped"], equal_nan=True)
    _save_ckpt(path, tiny_model(seed=2))  # the reference was retrained in place
    with pytest.raises(ValueError, match=r"strategy.reference=.*changed"):
        _service(path, model, dm).load_state_dict(state)


def test_vocabulary_mismatch_names_the_key(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1, vocab=60))
    with pytest.raises(ValueError, match=r"strategy.reference=.*60 tokens, this run's 50"):
        _service(path, model, dm)


def test_tokenizer_mismatch_names_the_key(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1), Tokenizer(salt="x"))
    with pytest.raises(ValueError, match=r"strategy.reference=.*tokenizer differs"):
        _service(path, model, dm)


def test_short_context_reference_is_refused(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1, positions=8))
    with pytest.raises(ValueError, match=r"strategy.reference=.*8 positions.*data.max_length"):
        _service(path, model, dm)


def _run_dir(root: Path, status: str | None, ckpt: bool = True) -> Path:
    root.mkdir(parents=True)
    if status is not None:
        summary = {"status": status, "failure": {"step": 7, "reason": "boom"}}
        (root / "summary.json").write_text(json.dumps(summary))
    if ckpt:
        _save_ckpt(root / "checkpoints" / "last.ckpt", tiny_model(seed=1))
    return root


def test_run_dir_resolution(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    done = _run_dir(tmp_path / "done", "completed")
    svc = _service(done, model, dm)
    assert svc.ckpt_path == done / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"strategy.reference=.*failed at step 7 \(boom\)"):
        _service(_run_dir(tmp_path / "failed", "failed"), model, dm)
    with pytest.raises(ValueError, match=r"strategy.reference=.*no summary.json"):
        _service(_run_dir(tmp_path / "running", None), model, dm)
    with pytest.raises(FileNotFoundError, match=r"strategy.reference=.*last.ckpt"):
        _service(_run_dir(tmp_path / "nockpt", "completed", ckpt=False), model, dm)
    with pytest.raises(FileNotFoundError, match=r"strategy.reference=.*does not exist"):
        _service(tmp_path / "nowhere", model, dm)


def test_missing_reference_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"strategy.reference is not set"):
        build_services(DoReMi().needs, {}, DoReMi())


def test_model_without_token_losses_is_a_clear_error(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1)), model, dm)
    b = batch(split(TRAIN_DOMAINS), [0, 1])
    with pytest.raises(ValueError, match="token_loss"):
        svc.on_train_batch_end(trainer(), model, b, {"loss": torch.tensor(1.0)})


def _sums(svc: ReferenceModel) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in svc.sums.items()}


def test_state_restores_exact_sums_per_rank(tmp_path: Path) -> None:
    """Rank 0 takes the saved (rank-summed) sums, other ranks start at zero; keys exact."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    svc = _service(path, model, dm)
    rows = split(TRAIN_DOMAINS, seed=5)
    _step(svc, model, batch(rows, [0, 1, 2]))  # domains 0, 1, 0
    state = svc.state_dict()
    assert set(state) == {"sums", "reference", "sha256"}
    assert state["reference"] == str(path) and state["sha256"] == svc.sha256
    saved = _sums(svc)
    assert saved["tokens"][2] == 0.0 and min(saved["tokens"][:2]) > 0
    rank0 = _service(path, model, dm)
    rank0.load_state_dict(state)
    assert _sums(rank0) == saved  # exact: no scaling
    rank1 = ReferenceModel.from_config({}, DoReMi(reference=str(path)))
    rank1.setup(trainer(rank=1, world=2), model, dm, OverheadMeter())
    rank1.load_state_dict(state)
    assert _sums(rank1) == {k: [0.0, 0.0, 0.0] for k in saved}
    # the next step continues identically on the restored service
    for s in (svc, rank0):
        _step(s, model, batch(rows, [4, 5]))
    assert _sums(rank0) == _sums(svc)


def test_state_before_setup_restores_and_saves(tmp_path: Path) -> None:
    """A service not set up yet (no trainer: rank 0) loads, saves and tears down."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    svc = _service(path, model, dm)
    _step(svc, model, batch(split(TRAIN_DOMAINS, seed=5), [0, 1]))
    state = svc.state_dict()
    fresh = ReferenceModel(str(path))
    fresh.load_state_dict(state)
    assert _sums(fresh) == _sums(svc)
    assert {k: v.tolist() for k, v in fresh.state_dict()["sums"].items()} == _sums(svc)
    fresh.teardown()
    assert fresh.ref is None


def test_changed_reference_message_names_both_digests(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    svc = _service(path, model, dm)
    state = svc.state_dict()
    _save_ckpt(path, tiny_model(seed=2))  # the reference was retrained in place
    new = _service(path, model, dm)
    old_sha, new_sha = state["sha256"], new.sha256
    assert old_sha != new_sha
    want = (
        f"strategy.reference='{path}': the reference checkpoint {path} changed since this "
        f"run's checkpoint (sha256 {old_sha[:12]} -> {new_sha[:12]}); resume with the "
        "original reference or start a new run"
    )
    with pytest.raises(ValueError) as err:
        new.load_state_dict(state)
    assert str(err.value) == want


def test_one_token_domain_is_present(tmp_path: Path) -> None:
    """A domain with exactly one loss-bearing token this round has a mean, not nan."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1)), model, dm)
    svc.sums["clipped"][:] = torch.tensor([0.5, 0.0, 3.0], dtype=torch.float64)
    svc.sums["excess"][:] = torch.tensor([-0.25, 0.0, 3.0], dtype=torch.float64)
    svc.sums["tokens"][:] = torch.tensor([1.0, 0.0, 4.0], dtype=torch.float64)
    out = svc.collect(trainer(), model, None)["excess_loss"]
    assert out["clipped"][0].item() == 0.5 and out["mean"][0].item() == -0.25
    assert torch.isnan(out["clipped"][1]) and out["clipped"][2].item() == 0.75
    assert out["tokens"].tolist() == [1.0, 0.0, 4.0]


def test_teardown_before_setup_and_flag_is_false(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    ReferenceModel(str(path)).teardown()  # a run failing before setup still tears down
    svc = _service(path, model, dm)
    svc.teardown()
    assert model.keep_token_losses is False


def test_missing_token_loss_message_is_exact(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1)), model, dm)
    b = batch(split(TRAIN_DOMAINS), [0, 1])
    with pytest.raises(ValueError) as err:
        svc.on_train_batch_end(trainer(), model, b, {"loss": torch.tensor(1.0)})
    assert str(err.value) == (
        "the model (CausalLMModule, model._target_) returned no token_loss/token_valid from "
        "training_step although keep_token_losses is set; DoReMi's reference service needs "
        "the per-token losses of the training forward"
    )


def test_reference_and_sums_follow_the_token_losses_device(tmp_path: Path) -> None:
    """The reference and the sums move to the device of the model's token losses."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    svc = _service(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1)), model, dm)
    b = batch(split(TRAIN_DOMAINS), [0, 1])
    tok, valid = model.token_losses(b)
    meta = torch.device("meta")
    b = {
        k: v if k == "domain" else v.to(meta) for k, v in b.items()
    }  # domain ids may stay on the host
    out = {"token_loss": tok.detach().to(meta), "token_valid": valid.to(meta)}
    svc.on_train_batch_end(trainer(), model, b, out)
    assert svc.ref is not None and next(svc.ref.parameters()).device == meta
    assert {v.device for v in svc.sums.values()} == {meta}


class FeatureData:
    """A datamodule of feature vectors (like data=digits): no tokenizer attribute at all."""

    domain_names = ("a", "b", "c")


def test_feature_data_is_refused_with_the_exact_message(tmp_path: Path) -> None:
    model = tiny_model(seed=0)
    svc = ReferenceModel(str(_save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))))
    with pytest.raises(ValueError) as err:
        svc.setup(trainer(), model, FeatureData(), OverheadMeter())
    assert str(err.value) == (
        "strategy=doremi compares per-token LM losses with a reference LM; FeatureData "
        "(data._target_) has no tokens: use a strategy without a reference model "
        "(e.g. strategy=rnb, doge, odm)"
    )


class ReferenceLM(CausalLMModule):
    """The reference run's own model class (its ``model._target_``), not the trained one's."""


def test_reference_class_comes_from_the_run_config(tmp_path: Path) -> None:
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    root = _run_dir(tmp_path / "done", None)
    target = f"{__name__}.ReferenceLM"
    summary = {"status": "completed", "config": {"model": {"_target_": target}}}
    (root / "summary.json").write_text(json.dumps(summary))
    svc = _service(root, model, dm)
    assert type(svc.ref) is ReferenceLM and type(model) is CausalLMModule


class Payload:
    """Not a tensor or a plain container: unpickling it would run arbitrary code paths."""


def test_reference_holding_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    """The refusal quotes the first line of torch's own UnpicklingError, word for word."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1))
    state = torch.load(path, weights_only=True)
    state["extra"] = Payload()
    torch.save(state, path)
    with pytest.raises(pickle.UnpicklingError) as torch_err:
        torch.load(path, map_location="cpu", weights_only=True)
    lines = str(torch_err.value).splitlines()
    assert len(lines) > 1 and lines[0] != lines[1]  # quoting any other line would differ
    want = (
        f"strategy.reference='{path}': {path} holds objects other than tensors and plain "
        "containers, which are not unpickled (torch.load weights_only=True; "
        f"{lines[0]}): point it at a Lightning checkpoint of an rnb run"
    )
    with pytest.raises(ValueError) as err:
        _service(path, model, dm)
    assert str(err.value) == want
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)


def test_vocabulary_and_tokenizer_mismatch_message_is_exact(tmp_path: Path) -> None:
    """Both problems, joined by '; ', with 12-character digests and the remedy."""
    model, dm = tiny_model(seed=0), datamodule([0, 1, 2])
    theirs = Tokenizer(salt="x")
    path = _save_ckpt(tmp_path / "ref.ckpt", tiny_model(seed=1, vocab=60), theirs)
    digest, mine = tokenizer_digest(theirs), tokenizer_digest(dm.tokenizer)
    assert digest[:12] != mine[:12]
    want = (
        f"strategy.reference='{path}' ({path}) cannot score this run: its vocabulary has 60 "
        f"tokens, this run's 50; its tokenizer differs (sha256 {digest[:12]} vs {mine[:12]}). "
        "Per-token losses compare only under one tokenizer: train the reference with this "
        "run's data and data.tokenizer settings (and the same data.cache_dir)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(want) + "$"):
        _service(path, model, dm)


def test_strategy_without_a_reference_attribute_is_not_set() -> None:
    """A strategy object lacking ``reference`` reads as unset: the same clear error."""
    want = (
        "strategy.reference is not set: DoReMi needs a reference model. Train one first (e.g. "
        "`rnb-train strategy=stratified hydra.run.dir=outputs/doremi/reference`) and pass "
        "strategy.reference=<its run dir or a .ckpt>"
    )
    for strategy in (SimpleNamespace(), SimpleNamespace(reference=None)):
        with pytest.raises(ValueError) as err:
            ReferenceModel.from_config({}, strategy)
        assert str(err.value) == want


class DefaultLM(CausalLMModule):
    """A model class whose defaults alone build the tiny architecture of ``tiny_model``."""

    def __init__(self) -> None:
        arch = {
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 16,
        }
        super().__init__(vocab_size=VOCAB, domain_names=NAMES, arch=arch, eos_token_id=0)


def test_checkpoint_without_hyper_parameters_uses_the_class_defaults(tmp_path: Path) -> None:
    """No ``hyper_parameters`` in the checkpoint: the class is built from its defaults."""
    torch.manual_seed(1)
    saved = DefaultLM()
    path = tmp_path / "ref.ckpt"
    torch.save({"state_dict": saved.state_dict()}, path)
    torch.manual_seed(0)
    model, dm = DefaultLM(), datamodule([0, 1, 2])
    svc = _service(path, model, dm)
    assert type(svc.ref) is DefaultLM and svc.ref is not model
    want = saved.state_dict()
    got = svc.ref.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in want.items())
