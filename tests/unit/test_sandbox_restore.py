"""`Sandbox` as a context manager: whatever happens inside, the model, the optimizer, the LR
schedule, the gradients already accumulated and torch's RNG come back as they were."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from rnb.balance.sandbox import Sandbox


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def test_everything_touched_inside_is_restored() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model.lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    model.lin(torch.ones(1, 3)).pow(2).sum().backward()  # gradients pending: mid-accumulation
    configs = [SimpleNamespace(scheduler=sched)]
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=configs)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    sched_state, lr = sched.state_dict(), opt.param_groups[0]["lr"]
    exp_avg = opt.state[model.lin.weight]["exp_avg"].clone()
    rng = torch.get_rng_state()

    with Sandbox(trainer, model, None, rng_seed=5) as box:
        # torch's RNG is seeded with rng_seed inside (dropout in a sandbox is reproducible)
        assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(5)))
        box.set_lr(0.5)
        opt.zero_grad(set_to_none=True)
        model.lin(torch.full((1, 3), 2.0)).sum().backward()
        opt.step()
        sched.step()
        sched.step()
        torch.rand(7)

    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, g in zip(model.parameters(), grads, strict=True):
        assert p.grad is not None and torch.equal(p.grad, g)
    assert sched.state_dict() == sched_state
    assert opt.param_groups[0]["lr"] == lr
    assert torch.equal(opt.state[model.lin.weight]["exp_avg"], exp_avg)
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_trainer_without_schedulers_is_fine() -> None:
    """No ``lr_scheduler_configs`` (a bare loop): model and optimizer still come back."""
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with Sandbox(SimpleNamespace(optimizers=[opt]), model, None, rng_seed=0):
        model.lin(torch.ones(1, 3)).sum().backward()
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
