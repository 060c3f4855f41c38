"""Per-domain loss re-weighting (DoReMi proxy / DoGE step): value and gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnb.models.weighting import DomainLossWeighting, domain_weighted_mean


def test_weighted_mean_matches_brute_force_over_present_domains() -> None:
    loss = torch.tensor([1.0, 3.0, 2.0, 6.0, 4.0])
    dom = torch.tensor([0, 0, 2, 2, 2])  # domain 1 absent
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = {0: 2.0, 2: 4.0}
    expected = (0.5 * means[0] + 0.2 * means[2]) / (0.5 + 0.2)
    assert float(domain_weighted_mean(loss, dom, w)) == pytest.approx(expected)


def test_weighted_gradient_is_sum_of_weighted_domain_gradients() -> None:
    torch.manual_seed(0)
    theta = torch.randn(3, requires_grad=True)
    x = torch.randn(6, 3)
    dom = torch.tensor([0, 1, 1, 0, 1, 1])
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    domain_weighted_mean((x @ theta) ** 2, dom, w).backward()
    g = theta.grad.clone()
    grads = []
    for i in range(2):
        t = theta.detach().clone().requires_grad_(True)
        ((x[dom == i] @ t) ** 2).mean().backward()
        grads.append(t.grad)
    torch.testing.assert_close(g, 0.25 * grads[0] + 0.75 * grads[1])


def test_zero_weight_on_every_present_domain_gives_zero_not_nan() -> None:
    out = domain_weighted_mean(
        torch.tensor([1.0, 2.0]), torch.tensor([1, 1]), torch.tensor([1.0, 0.0])
    )
    assert float(out) == 0.0


class _Module(DomainLossWeighting):
    pass


def test_mixin_plain_mean_by_default_and_validates() -> None:
    mod = _Module()
    loss, dom = torch.tensor([1.0, 5.0, 3.0]), torch.tensor([0, 1, 1])
    assert float(mod.reduce_example_losses(loss, dom)) == pytest.approx(3.0)
    mod.set_domain_loss_weights(np.array([1.0, 0.0]))
    assert float(mod.reduce_example_losses(loss, dom)) == pytest.approx(1.0)
    mod.set_domain_loss_weights(None)
    assert mod.domain_loss_weights is None
    with pytest.raises(ValueError, match="finite and >= 0"):
        mod.set_domain_loss_weights(np.array([0.5, -0.1]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        mod.set_domain_loss_weights(np.array([np.nan, 1.0]))


def test_ranks_share_the_global_normaliser() -> None:
    """Two ranks' gradients, averaged as DDP does, equal the one-process gradient."""
    torch.manual_seed(1)
    theta = torch.randn(3, requires_grad=True)
    x = torch.randn(8, 3)
    dom = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])  # rank 0 has no domain 2, rank 1 one domain 0
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    domain_weighted_mean((x @ theta) ** 2, dom, w).backward()
    single = theta.grad.clone()
    all_counts = torch.zeros(3, dtype=torch.float32).index_add(0, dom, torch.ones(8))
    grads = []
    for part in (slice(0, 4), slice(4, 8)):
        t = theta.detach().clone().requires_grad_(True)
        domain_weighted_mean(
            (x[part] @ t) ** 2,
            dom[part],
            w,
            sum_over_ranks=lambda c: all_counts.clone(),
            world_size=2,
        ).backward()
        grads.append(t.grad)
    torch.testing.assert_close((grads[0] + grads[1]) / 2, single)
