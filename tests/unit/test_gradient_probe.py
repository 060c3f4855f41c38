"""The gradient probe: brute-force gradients, nothing of the model's state touched, seeded draws."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from rnb.accounting import OverheadMeter
from rnb.balance.services.gradient_probe import GradientProbe, select_parameters
from rnb.config import compose
from rnb.train import build_datamodule
from tests.conftest import TINY

SUBSET = "*.h.0.mlp.*"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A TINY DataModule (6 domains) and a fresh tiny model."""
    cache = tmp_path_factory.mktemp("probe_cache")
    cfg = compose("train", [*TINY, f"data.cache_dir={cache}", "output_dir=/nonexistent"])
    dm = build_datamodule(cfg)
    torch.manual_seed(0)
    model = instantiate(
        cfg.model,
        vocab_size=dm.vocab_size,
        domain_names=dm.domain_names,
        eos_token_id=dm.tokenizer.eos_token_id,
        _convert_="all",
    )
    return SimpleNamespace(dm=dm, model=model)


def _service(run: SimpleNamespace, rank: int = 0, world: int = 1, **kw: Any) -> GradientProbe:
    svc = GradientProbe(**{"batch_size": 8, "eval_size": 40, "seed": 3, **kw})
    svc.setup(
        SimpleNamespace(global_rank=rank, world_size=world), run.model, run.dm, OverheadMeter()
    )
    return svc


def _brute_force(model: Any, split: Any, idx: np.ndarray, params: list) -> torch.Tensor:
    """Gradient by ``.backward()`` on a copy of the model (eval mode, example-mean loss)."""
    clone = copy.deepcopy(model).eval()
    names = {n for n, _ in params}
    batch = {
        k: torch.as_tensor(getattr(split, k)[idx])
        for k in ("input_ids", "attention_mask", "labels")
    }
    loss_sum, tokens = clone.example_losses(batch)
    (loss_sum / tokens).mean().backward()
    grads = []
    for n, p in clone.named_parameters():
        if n in names:
            grads.append(torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1))
    return torch.cat(grads)


@pytest.mark.parametrize("params", [None, SUBSET])
def test_rows_equal_brute_force_autograd(run: SimpleNamespace, params: str | None) -> None:
    svc = _service(run, params=params)
    batches = svc.draw(0)
    matrix = svc.probe(run.model).clone()
    m = len(run.dm.domain_names)
    assert matrix.shape == (m + 1, svc.num_probed)
    if params is None:
        assert svc.num_probed == run.model.num_parameters()
    else:
        assert 0 < svc.num_probed < run.model.num_parameters()
    for row, idx in enumerate(batches):
        split = run.dm.train_data if row < m else run.dm.eval_data
        if row < m:  # a domain batch holds batch_size examples of that domain
            assert idx.size == 8 and (run.dm.train_data.domain[idx] == row).all()
        ref = _brute_force(run.model, split, idx, svc.named)
        err = float((matrix[row] - ref).norm() / ref.norm())
        assert err <= 1e-5, (row, err)
    # the target batch is drawn from the stratified eval probe subset
    assert set(batches[m]) <= set(svc.target_index) and len(svc.target_index) == 40


def test_model_grad_params_optimizer_and_rng_untouched(run: SimpleNamespace) -> None:
    model = run.model
    model.train()
    model.model.transformer.h[0].attn.eval()  # a submodule in its own mode stays so
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # optimizer state exists
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [p.grad.clone() for p in model.parameters()],
        "opt": copy.deepcopy(opt.state_dict()),
        "rng": torch.get_rng_state(),
    }
    svc = _service(run)
    try:
        svc.collect(SimpleNamespace(), model, None)
    finally:
        after_params = [p.detach().clone() for p in model.parameters()]
        after_grads = [p.grad.clone() for p in model.parameters()]
        for p in model.parameters():
            p.grad = None
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after_params, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before["grads"], after_grads, strict=True))
    state = opt.state_dict()
    for k, v in before["opt"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, state["state"][k][name]), (k, name)
    assert torch.equal(before["rng"], torch.get_rng_state())
    assert model.training and not model.model.transformer.h[0].attn.training
    assert model.model.transformer.h[0].mlp.training
    model.model.transformer.h[0].attn.train()


def test_params_pattern_without_match_names_the_key(run: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"balance\.probe\.params.*names look like"):
        select_parameters(run.model, ["*no_such_layer*"])
    chosen = select_parameters(run.model, [SUBSET, "*.wte.*"])
    names = [n for n, _ in chosen]
    assert names and all(".h.0.mlp." in n or ".wte." in n for n in names)


def test_draws_are_seeded_per_probe_and_rank_and_resume(run: SimpleNamespace) -> None:
    a, b, other_rank = _service(run), _service(run), _service(run, rank=1, world=2)
    for x, y in zip(a.draw(0), b.draw(0), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a.draw(0), a.draw(1), strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a.draw(0), other_rank.draw(0), strict=True))
    a.probe(run.model)
    a.probe(run.model)
    state = json.loads(json.dumps(a.state_dict()))  # plain numbers: weights_only-loadable
    b.load_state_dict(state)
    assert b.probes == 2
    for x, y in zip(a.draw(a.probes), b.draw(b.probes), strict=True):
        np.testing.assert_array_equal(x, y)


def test_ddp_average_is_the_gradient_of_the_union_batch(run: SimpleNamespace) -> None:
    ranks = [_service(run, rank=r, world=2) for r in range(2)]
    local = [s.probe(run.model).clone() for s in ranks]
    for s in ranks:
        s.probes = 0
    other_rank = iter(local[1])  # a sum over two ranks, row by row as collect reduces
    out = ranks[0].collect(SimpleNamespace(), run.model, lambda t: t + next(other_rank))
    m = len(run.dm.domain_names)
    union = np.concatenate([ranks[0].draw(0)[1], ranks[1].draw(0)[1]])
    ref = _brute_force(run.model, run.dm.train_data, union, ranks[0].named)
    assert float((out["domain_grads"][1] - ref).norm() / ref.norm()) <= 1e-5
    assert out["target_grad"].shape == (ranks[0].num_probed,)
    assert out["domain_grads"].shape == (m, ranks[0].num_probed)


def test_domain_without_examples_gets_zero_row(run: SimpleNamespace) -> None:
    dm = SimpleNamespace(
        domain_names=[*run.dm.domain_names, "empty"],
        train_data=run.dm.train_data,
        eval_data=run.dm.eval_data,
    )
    svc = GradientProbe(batch_size=4, target=None)
    svc.setup(SimpleNamespace(), run.model, dm, OverheadMeter())
    out = svc.collect(SimpleNamespace(), run.model, None)
    m = len(dm.domain_names)
    assert "target_grad" not in out and out["domain_grads"].shape[0] == m
    assert out["grad_present"].tolist() == [True] * (m - 1) + [False]
    assert float(out["domain_grads"][-1].abs().max()) == 0.0
    assert float(out["domain_grads"][0].abs().max()) > 0.0


def test_flops_are_six_n_tokens_per_probe_batch(run: SimpleNamespace) -> None:
    svc = _service(run)
    first = svc.probe(run.model)
    assert svc.probe(run.model) is first  # preallocated: the same buffer every round
    svc.teardown()
    assert svc.matrix is None
    svc.meter.extra_flops = 0.0
    svc.probe(run.model)  # a fit after teardown allocates it again
    rows = len(run.dm.domain_names) + 1
    tokens = rows * 8 * run.dm.max_length
    assert svc.meter.extra_flops == 6.0 * run.model.num_parameters() * tokens


def test_target_file_is_tokenised_like_training_data(run: SimpleNamespace, tmp_path: Path) -> None:
    path = tmp_path / "target.jsonl"
    recs = run.dm.eval_records[:5]
    path.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n" for r in recs)
    )
    svc = _service(run, target="file", target_path=str(path))
    np.testing.assert_array_equal(svc.target_split.input_ids, run.dm.eval_data.input_ids[:5])
    np.testing.assert_array_equal(svc.target_split.labels, run.dm.eval_data.labels[:5])
    assert svc.draw(0)[-1].tolist() == [0, 1, 2, 3, 4]  # fewer than batch_size: all of them
    ref = _brute_force(run.model, svc.target_split, np.arange(5), svc.named)
    row = svc.probe(run.model)[-1]
    assert float((row - ref).norm() / ref.norm()) <= 1e-5


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target": "file"}, r"strategy\.target=file needs balance\.probe\.target_path"),
        ({"target": "eval", "target_path": "t.jsonl"}, r"target_path='t\.jsonl' is set but"),
        ({"target": None, "target_path": "t.jsonl"}, r"strategy\.target=train uses no target"),
        ({"batch_size": 0}, r"balance\.probe\.batch_size must be >= 1"),
        ({"target": "mix"}, r"strategy\.target='mix'"),
    ],
)
def test_bad_settings_name_the_key(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradientProbe(**kw)


def test_from_config_takes_the_target_from_the_strategy(tmp_path: Path) -> None:
    from rnb.balance.services.base import build_services
    from rnb.balance.strategies.dga import DGA
    from rnb.balance.strategies.doge import DoGE

    probe = {"batch_size": 4, "eval_size": 32, "params": None, "target_path": None, "seed": 1}
    (svc,) = build_services(DoGE().needs, probe, DoGE())  # target: train
    assert isinstance(svc, GradientProbe) and svc.target is None and svc.batch_size == 4
    (svc,) = build_services(DGA.needs, probe, DGA())
    assert svc.target == "eval" and svc.eval_size == 32 and svc.seed == 1
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "x"}\n')
    file_probe = {**probe, "target_path": str(target)}
    (svc,) = build_services(DGA.needs, file_probe, DGA(target="file"))
    assert svc.target == "file" and svc.target_path == str(target)
    with pytest.raises(ValueError, match=r"strategy\.target=train uses no target"):
        build_services(DoGE().needs, file_probe, DoGE())


def test_missing_target_file_fails_at_build_time(tmp_path: Path) -> None:
    """A typo in balance.probe.target_path used to fail only after data prep and the
    initial evaluation (a failed run dir with logs); now the service refuses it when built."""
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError, match=r"balance\.probe\.target_path=.*missing\.jsonl"):
        GradientProbe(target="file", target_path=str(missing))
    missing.write_text('{"text": "x"}\n')
    assert GradientProbe(target="file", target_path=str(missing)).target_path == str(missing)
