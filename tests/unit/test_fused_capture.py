"""Fused capture (`balance.capture.fused`): the head's weight gradient computed per domain.

Checked against plain autograd (every parameter's gradient, tied embedding included) and
against brute-force per-domain gradients / the hook path (the accumulators).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.capture.fused import FusedLinear


def tied_lm(V: int = 97, d: int = 16) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.GPTNeoConfig(
        vocab_size=V, hidden_size=d, num_layers=1, num_heads=2, intermediate_size=32,
        attention_types=[[["global"], 1]], max_position_embeddings=16, embed_dropout=0.0,
        attention_dropout=0.0, resid_dropout=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPTNeoForCausalLM(cfg).train()
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


def lm_batch(seed: int, B: int = 6, T: int = 10, V: int = 97) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, : T // 2] = -100  # loss on the second half only (instruction tuning)
    return {"input_ids": ids, "labels": labels}


def row_mask(labels: torch.Tensor) -> torch.Tensor:
    valid = labels[:, 1:] != -100
    return torch.cat([valid, torch.zeros_like(valid[:, :1])], dim=1)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def run_lm(model: nn.Module, cap: HeadGradientCapture | None, use_mask: bool) -> None:
    micro = [(lm_batch(1), [2, 0, 2, 1, 0, 0]), (lm_batch(2), [1, 1, 0, 2, 2, 1])]
    for batch, dom in micro:  # two micro-batches: gradients and accumulators add up
        if cap is not None:
            cap.set_batch(torch.tensor(dom), row_mask(batch["labels"]) if use_mask else None)
        (model(**batch).loss / 2).backward()


@pytest.mark.parametrize("use_mask", [False, True])
def test_fused_tied_lm_gradients_equal_autograd_and_accumulators_equal_hooks(
    use_mask: bool,
) -> None:
    plain, fused, hooked = tied_lm(), tied_lm(), tied_lm()
    m = 4
    cap_f = HeadGradientCapture(fused.lm_head, m, mode="exact", fused=True, buffer_mb=0)
    cap_h = HeadGradientCapture(hooked.lm_head, m, mode="exact", fused=False)
    cap_f.attach()
    cap_h.attach()
    assert cap_f.fused and not cap_h.fused
    run_lm(plain, None, use_mask)
    run_lm(fused, cap_f, use_mask)
    run_lm(hooked, cap_h, use_mask)
    ref, got = grads(plain), grads(fused)
    assert ref.keys() == got.keys()
    for name, g in ref.items():  # tied wte/lm_head: embedding + head contributions both there
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(cap_f.accumulators, cap_h.accumulators, rtol=1e-5, atol=1e-7)
    assert cap_f.counts.tolist() == cap_h.counts.tolist() == [4.0, 4.0, 4.0, 0.0]
    assert float(cap_f.accumulators[1].abs().max()) > 0
    assert float(cap_f.accumulators[3].abs().max()) == 0.0
    cap_f.detach()
    assert "forward" not in vars(fused.lm_head)  # the plain nn.Linear forward is back


@pytest.mark.parametrize("include_bias", [False, True])
def test_fused_classifier_bias_matches_brute_force(include_bias: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 5)).train()
    ref_model = copy.deepcopy(model)
    head, m = model[2], 3
    cap = HeadGradientCapture(head, m, mode="exact", include_bias=include_bias, fused=True)
    cap.attach()
    x, y = torch.randn(9, 8), torch.randint(0, 5, (9,))
    dom = torch.tensor([2, 0, 0, 2, 1, 2, 0, 1, 1])
    cap.set_batch(dom)
    nn.functional.cross_entropy(model(x), y).backward()
    nn.functional.cross_entropy(ref_model(x), y).backward()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    with cap.paused():  # the reference forward must not be captured
        per_ex = nn.functional.cross_entropy(model(x), y, reduction="none") / 9
    for i in range(m):
        gw, gb = torch.autograd.grad(
            per_ex[dom == i].sum(), [head.weight, head.bias], retain_graph=True
        )
        ref = torch.cat([gw, gb[:, None]], dim=1) if include_bias else gw
        torch.testing.assert_close(cap.accumulators[i], ref.reshape(-1), rtol=1e-5, atol=1e-7)


def test_fused_grad_scale_divides_accumulators_not_the_weight_gradient() -> None:
    torch.manual_seed(0)
    head = nn.Linear(6, 4)
    cap = HeadGradientCapture(head, 2, mode="exact", fused=True)
    cap.attach()
    x = torch.randn(5, 6, requires_grad=True)
    cap.set_grad_scale(8.0)
    cap.set_batch(torch.tensor([0, 1, 1, 0, 1]))
    (head(x).sum() * 8.0).backward()  # a GradScaler multiplies the loss
    ones = torch.ones(5, 4)
    torch.testing.assert_close(head.weight.grad, 8.0 * ones.T @ x.detach())
    torch.testing.assert_close(x.grad, 8.0 * ones @ head.weight.detach())
    torch.testing.assert_close(head.bias.grad, 8.0 * ones.sum(0))
    total = cap.accumulators.view(2, 4, 6).sum(0)
    torch.testing.assert_close(total, ones.T @ x.detach(), rtol=1e-5, atol=1e-6)


def test_fused_nonfinite_batch_is_skipped_but_trains() -> None:
    head = nn.Linear(4, 3)
    cap = HeadGradientCapture(head, 2, mode="exact", fused=True)
    cap.attach()
    x = torch.randn(4, 4)
    x[1, 2] = float("nan")
    cap.set_batch(torch.tensor([0, 1, 0, 1]))
    head(x).sum().backward()
    assert cap.skipped_nonfinite == 1 and cap.counts.tolist() == [0.0, 0.0]
    assert float(cap.accumulators.abs().max()) == 0.0
    assert not bool(head.weight.grad.isfinite().all())  # the optimizer sees it, as without us
    cap.set_batch(torch.tensor([0, 1, 0, 1]))
    head(torch.randn(4, 4)).sum().backward()
    assert cap.counts.tolist() == [2.0, 2.0]


def test_fused_bf16_autocast_matches_hooks() -> None:
    torch.manual_seed(0)
    fused, hooked = nn.Linear(16, 32), nn.Linear(16, 32)
    hooked.load_state_dict(fused.state_dict())
    caps = [HeadGradientCapture(h, 2, mode="exact", fused=f) for h, f in ((fused, True), (hooked, False))]  # fmt: skip
    x = torch.randn(8, 16)
    for head, cap in zip((fused, hooked), caps, strict=True):
        cap.attach()
        cap.set_batch(torch.tensor([0, 1] * 4))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(x)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
    assert caps[0].accumulators.dtype == torch.float32
    torch.testing.assert_close(caps[0].accumulators, caps[1].accumulators, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.weight.grad, hooked.weight.grad, rtol=2e-2, atol=2e-2)


def test_fused_option_is_checked_and_resolved() -> None:
    head = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="balance.capture.fused"):
        HeadGradientCapture(head, 2, mode="sketch", fused=True)
    with pytest.raises(ValueError, match="balance.capture.fused"):
        HeadGradientCapture(head, 2, mode="exact", rows_per_example=4, fused=True)
    with pytest.raises(ValueError, match="balance.capture.fused"):
        HeadGradientCapture(head, 2, mode="exact", fused="yes")
    assert not HeadGradientCapture(head, 2, mode="sketch", fused="auto").fused
    assert not HeadGradientCapture(head, 2, mode="exact", rows_per_example=2, fused="auto").fused
    assert HeadGradientCapture(head, 2, mode="exact", fused="auto").fused
    assert not HeadGradientCapture(head, 2, mode="exact").fused  # the class default: hooks


def test_fused_linear_without_capture_state_is_plain_linear() -> None:
    torch.manual_seed(0)
    a = torch.randn(3, 5, 4, requires_grad=True)
    w, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, requires_grad=True)

    def products(delta: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return delta.T @ rows

    out = FusedLinear.apply(a, w, b, products, False)
    torch.testing.assert_close(out, nn.functional.linear(a, w, b))
    got = torch.autograd.grad(out.square().sum(), [a, w, b])
    ref = torch.autograd.grad(nn.functional.linear(a, w, b).square().sum(), [a, w, b])
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r)
