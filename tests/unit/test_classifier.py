"""The generic classifier: head lookup, losses, and R&B's head capture on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnb.balance.capture import HeadGradientCapture
from rnb.data.digits import class_domains
from rnb.models.classifier import MLP, ClassifierModule


def _module(**kw) -> ClassifierModule:
    torch.manual_seed(0)
    return ClassifierModule(num_features=6, num_classes=4, domain_names=["a", "b", "c"], **kw)


def test_default_head_is_the_last_linear_of_the_mlp() -> None:
    model = _module()
    assert isinstance(model.model, MLP)
    assert model.head is model.model[-1]
    assert (model.head.in_features, model.head.out_features) == (64, 4)


def test_any_network_plugs_in_and_head_module_names_the_head() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
            self.out = nn.Linear(8, 4)
            self.aux = nn.Linear(8, 2)  # registered after `out`: not the head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.body(x))

    model = _module(net=Net(), head_module="out")
    assert model.head is model.model.out
    with pytest.raises(ValueError, match="model.head_module: the head 'aux' has 2 outputs"):
        _module(net=Net())  # the last nn.Linear is `aux`: refused, names the key
    with pytest.raises(ValueError, match="is Tanh, not nn.Linear"):
        _module(net=Net(), head_module="body.1")
    with pytest.raises(ValueError, match="has no nn.Linear"):
        _module(net=nn.Sequential(nn.Tanh()))


def test_example_losses_are_cross_entropy_with_one_token_each() -> None:
    model = _module()
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    loss, tokens = model.example_losses({"features": x, "target": y})
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y, reduction="none"))
    assert tokens.tolist() == [1] * 5


def test_head_capture_equals_per_domain_autograd_gradients() -> None:
    """R&B's hooks on the classifier head give Σ_{rows of domain i} of the head's gradient."""
    model = _module(net=MLP(6, 4, hidden=[5]))
    cap = HeadGradientCapture(model.head, 3, mode="exact", buffer_mb=0)
    cap.attach()
    x, y = torch.randn(7, 6), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    dom = torch.tensor([0, 2, 2, 1, 0, 2, 1])
    model.train()
    cap.set_batch(dom)
    loss, _ = model.example_losses({"features": x, "target": y})
    model.reduce_example_losses(loss, dom).backward()  # the training loss (batch mean)
    acc = cap.accumulators.view(3, 4, 5)
    cap.detach()
    for i in range(3):
        model.zero_grad()
        rows = dom == i
        # the batch-mean loss restricted to domain i's rows: the same 1/B scale as captured
        (F.cross_entropy(model(x[rows]), y[rows], reduction="sum") / len(y)).backward()
        torch.testing.assert_close(acc[i], model.head.weight.grad, rtol=1e-5, atol=1e-7)
    assert cap.counts.tolist() == [2.0, 2.0, 3.0]


def test_class_domains_default_and_groups() -> None:
    y = np.array([0, 5, 9, 3])
    assert class_domains(y, None) == ["digit0", "digit5", "digit9", "digit3"]
    groups = {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}
    assert class_domains(y, groups) == ["low", "high", "high", "low"]
    with pytest.raises(ValueError, match=r"digits \[9\] belong to no domain"):
        class_domains(y, {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8]})
    with pytest.raises(ValueError, match="digit 4 is in both 'low' and 'high'"):
        class_domains(y, {"low": list(range(5)), "high": [4, 5, 6, 7, 8, 9]})
    with pytest.raises(ValueError, match="12 in 'high' is not a digit"):
        class_domains(y, {"low": list(range(5)), "high": [5, 6, 7, 8, 9, 12]})
