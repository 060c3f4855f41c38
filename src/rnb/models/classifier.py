"""A classifier LightningModule for non-text data (image features, tabular vectors).

Any ``nn.Module`` mapping ``[B, num_features]`` to ``[B, num_classes]`` logits whose final
``nn.Linear`` is the output layer plugs in; a small MLP (:class:`MLP`) is the default. It
honours the same mixing contract as :class:`~rnb.models.lm.CausalLMModule`, so every
sampling strategy and R&B's final-layer gradient capture run on it unchanged:

* ``training_step`` returns ``loss``, ``example_loss`` (cross-entropy per example),
  ``example_tokens`` (1 per example: for a classifier one example is one "token", so
  ``tokens_per_domain`` in ``summary.json`` counts examples) and ``domain``;
* :attr:`head` is the final ``nn.Linear``: its input ``a`` is ``[B, d]``, one row per
  example, so the capture's per-domain ``δᵀa`` needs no row mask;
* :meth:`example_losses` evaluates a batch (``(loss_sum [B], tokens [B])``);
* per-domain loss multipliers come through
  :class:`~rnb.models.weighting.DomainLossWeighting`.

Validation logs ``val/loss`` (mean cross-entropy over eval examples, i.e. the
``q``-weighted average of the domain losses), ``val/loss/<domain>``, ``val/acc`` (torchmetrics
``MulticlassAccuracy``, micro) and ``val/acc/<domain>``; ``summary.json`` gets ``eval_loss``,
``eval_loss_per_domain``, ``eval_accuracy`` and ``eval_accuracy_per_domain``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from rnb.models.base import MixtureModule
from rnb.models.metrics import DomainLoss
from rnb.models.weighting import DomainLossWeighting

__all__ = ["MLP", "ClassifierModule"]


class MLP(nn.Sequential):
    """``Linear → ReLU (→ Dropout)`` blocks, then a final ``nn.Linear`` head.

    Args:
        in_features: input width ``d_in``.
        out_features: number of classes.
        hidden: widths of the hidden layers (empty = a linear classifier).
        dropout: dropout probability after each hidden activation (0 = none).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        width = int(in_features)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = int(h)
        layers.append(nn.Linear(width, int(out_features)))
        super().__init__(*layers)


class ClassifierModule(DomainLossWeighting, MixtureModule):
    """Cross-entropy classifier trained on data mixtures (see the module docstring).

    Args:
        num_features: input width (filled in from the DataModule by ``train``).
        num_classes: number of classes (filled in from the DataModule by ``train``).
        domain_names: domain names (for per-domain metric names).
        net: the network: an ``nn.Module``, or a factory called as
            ``net(in_features=num_features, out_features=num_classes)`` (Hydra
            ``_partial_: true``, ``model.net``); ``None`` = ``MLP`` with one hidden layer of 64.
        head_module: dotted path (inside ``net``) of the final ``nn.Linear``
            (``model.head_module``); ``None`` = the last ``nn.Linear`` of ``net``.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warm-up steps.
        min_lr_ratio: cosine decay floor as a fraction of ``lr`` (1.0 = constant).

    Raises:
        ValueError: ``net`` has no ``nn.Linear``, ``head_module`` is not one, or the head
            does not output ``num_classes`` logits.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        domain_names: Sequence[str] = ("all",),
        net: nn.Module | Callable[..., nn.Module] | None = None,
        head_module: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        # the network is in the run's config (model.net); hparams hold plain values only,
        # so checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["net"])
        self.domain_names = list(domain_names)
        self.num_classes = int(num_classes)
        if net is None:
            net = MLP
        if not isinstance(net, nn.Module):
            net = net(in_features=int(num_features), out_features=self.num_classes)
        self.model = net
        self.head_module = head_module
        head = self.head  # fail at build time, not at the first Gram round
        if head.out_features != self.num_classes:
            raise ValueError(
                f"model.head_module: the head {self._head_name()!r} has {head.out_features} "
                f"outputs, the data have {self.num_classes} classes"
            )
        self.val_metric = DomainLoss(len(self.domain_names))
        self.val_correct = DomainLoss(len(self.domain_names))  # per-domain mean of 0/1 hits
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro")
        self.last_eval = None
        #: Per-token losses are an LM notion: ``training_step`` never returns them (DoReMi's
        #: reference service needs a causal LM).
        self.keep_token_losses = False

    def _head_name(self) -> str:
        if self.head_module is not None:
            return self.head_module
        names = [n for n, m in self.model.named_modules() if isinstance(m, nn.Linear)]
        if not names:
            raise ValueError(
                f"model.net: {type(self.model).__name__} has no nn.Linear to use as the head"
            )
        return names[-1]

    @property
    def head(self) -> nn.Linear:
        """The final linear layer (``head_module``, else the last ``nn.Linear`` of ``net``)."""
        name = self._head_name()
        mod = self.model.get_submodule(name)
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"model.head_module='{name}' is {type(mod).__name__}, not nn.Linear")
        return mod

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, num_features]`` float → ``[B, num_classes]`` logits."""
        return self.model(features)

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cross-entropy [B], ones [B])``: the LM contract's ``(loss_sum, tokens)``."""
        loss = F.cross_entropy(self(batch["features"]).float(), batch["target"], reduction="none")
        return loss, torch.ones_like(batch["target"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        example_loss, ones = self.example_losses(batch)
        loss = self.reduce_example_losses(example_loss, batch["domain"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return {
            "loss": loss,
            "example_loss": example_loss.detach(),
            "example_tokens": ones,
            "domain": batch["domain"],
        }

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["features"]).float()
        target, domain = batch["target"], batch["domain"]
        self.val_metric.update(F.cross_entropy(logits, target, reduction="none"), domain)
        pred = logits.argmax(dim=-1)
        self.val_correct.update((pred == target).double(), domain)
        self.val_accuracy.update(pred, target)

    def on_validation_epoch_end(self) -> None:
        mean, per_domain = self.val_metric.named(self.domain_names)
        _, acc_per_domain = self.val_correct.named(self.domain_names)
        acc = self.val_accuracy.compute()
        for metric in (self.val_metric, self.val_correct, self.val_accuracy):
            metric.reset()
        self.record_eval(
            {
                "loss": ("loss", mean, per_domain),
                "acc": ("accuracy", acc, acc_per_domain),
            }
        )
