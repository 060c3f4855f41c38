"""Causal-LM LightningModule around a Hugging Face ``transformers`` model.

``training_step`` returns per-example losses and domain ids next to the loss, so mixing
callbacks read them from ``outputs`` without an extra forward pass. Validation logs the
eval-set average loss ``val/loss`` (mean over eval examples = the ``q``-weighted average
of domain losses) and ``val/loss/<domain>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnb.models.base import MixtureModule
from rnb.models.metrics import DomainLoss
from rnb.models.weighting import DomainLossWeighting

__all__ = ["CausalLMModule", "per_example_loss", "per_token_loss"]


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss of every position and where a loss is taken.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` with ``-100`` where no loss is taken.

    Returns:
        ``(loss [B, T-1], valid [B, T-1] bool)``; position ``t`` predicts label ``t + 1``
        (``loss`` is 0 where not ``valid``).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(shift_labels.shape)
    return tok, shift_labels != -100


def per_example_loss(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-summed next-token loss and token count of every example.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` with ``-100`` where no loss is taken.

    Returns:
        ``(loss_sum [B], tokens [B])``; the position ``t`` logits predict label ``t + 1``.
    """
    tok, valid = per_token_loss(logits, labels)
    return tok.sum(dim=1), valid.sum(dim=1)


class CausalLMModule(DomainLossWeighting, MixtureModule):
    """A causal LM (GPT-Neo by default, built from a tiny config) trained on mixtures.

    The mixing contract (what the Balance callback and its services use): ``training_step``
    returns ``example_loss``/``example_tokens``/``domain`` (and ``token_loss``/``token_valid``
    while :attr:`keep_token_losses` is set, for the reference-model service);
    :meth:`example_losses` and :meth:`token_losses` evaluate a batch; :attr:`head` is the
    final linear layer; per-domain loss multipliers come through
    :class:`~rnb.models.weighting.DomainLossWeighting`.

    Args:
        vocab_size: tokenizer size (filled in from the DataModule by ``train``).
        domain_names: domain names (for per-domain metric names).
        arch: ``transformers.GPTNeoConfig`` kwargs for a model built from scratch.
        pretrained: HF name or local path of pretrained weights (overrides ``arch``).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warm-up steps.
        min_lr_ratio: cosine decay floor as a fraction of ``lr`` (1.0 = constant).
        head_module: dotted path of the final ``nn.Linear`` (used by gradient capture).
        eos_token_id: the tokenizer's eos id (also used as bos) for a model built from
            ``arch``; filled in by ``train``.
    """

    def __init__(
        self,
        vocab_size: int,
        domain_names: Sequence[str] = ("all",),
        arch: dict[str, Any] | None = None,
        pretrained: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
        head_module: str = "lm_head",
        eos_token_id: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.domain_names = list(domain_names)
        self.model = self._build(vocab_size, arch, pretrained, eos_token_id)
        self.head_module = head_module
        self.val_metric = DomainLoss(len(self.domain_names))
        self.last_eval = None
        #: Return per-token losses from ``training_step`` (set by services that need them).
        self.keep_token_losses = False

    @staticmethod
    def _build(
        vocab_size: int,
        arch: dict[str, Any] | None,
        pretrained: str | None,
        eos_token_id: int | None,
    ) -> nn.Module:
        import transformers

        if pretrained:
            model = transformers.AutoModelForCausalLM.from_pretrained(pretrained)
            if model.get_input_embeddings().num_embeddings < vocab_size:
                model.resize_token_embeddings(vocab_size)
            return model
        cfg = dict(arch or {})
        n_layers = int(cfg.get("num_layers", 2))
        cfg.setdefault("attention_types", [[["global"], n_layers]])
        eos = 0 if eos_token_id is None else int(eos_token_id)
        cfg.setdefault("bos_token_id", eos)
        cfg.setdefault("eos_token_id", eos)
        config = transformers.GPTNeoConfig(vocab_size=vocab_size, **cfg)
        return transformers.GPTNeoForCausalLM(config)

    @property
    def head(self) -> nn.Linear:
        """The final linear layer named by ``head_module``."""
        mod = self.model.get_submodule(self.head_module)
        if not isinstance(mod, nn.Linear):
            raise ValueError(
                f"model.head_module='{self.head_module}' is {type(mod).__name__}, not nn.Linear"
            )
        return mod

    def head_row_mask(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Host-side ``[B, T]`` bool array, True where the head's output gets a gradient.

        Position ``t`` predicts label ``t + 1``; the last position and positions whose next
        label is ignored have ``δ = 0``, so gradient capture skips them. NumPy because the
        capture plans rows on the host (a few NumPy ops cost less than torch dispatches).
        """
        labels = batch["labels"].detach().cpu().numpy()
        mask = np.zeros(labels.shape, dtype=bool)
        np.not_equal(labels[:, 1:], -100, out=mask[:, :-1])
        return mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def token_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [B, T-1], valid [B, T-1])`` of a batch (see :func:`per_token_loss`)."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        return per_token_loss(logits, batch["labels"])

    def example_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss_sum [B], tokens [B])`` of a batch (see :func:`per_example_loss`)."""
        tok, valid = self.token_losses(batch)
        return tok.sum(dim=1), valid.sum(dim=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        tok, valid = self.token_losses(batch)
        loss_sum, tokens = tok.sum(dim=1), valid.sum(dim=1)
        example_loss = loss_sum / tokens.clamp_min(1)
        # Mean over examples (not tokens): with equal per-rank batch sizes the DDP average
        # equals the single-process loss of the global batch exactly, and every example
        # weighs the same, matching the per-sample counts n_i of the mixing statistics.
        # Strategies that re-weight the loss per domain (DoReMi, DoGE) set multipliers.
        loss = self.reduce_example_losses(example_loss, batch["domain"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        out = {
            "loss": loss,
            "example_loss": example_loss.detach(),
            "example_tokens": tokens.detach(),
            "domain": batch["domain"],
        }
        if self.keep_token_losses:
            out["token_loss"], out["token_valid"] = tok.detach(), valid
        return out

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss_sum, tokens = self.example_losses(batch)
        self.val_metric.update(loss_sum / tokens.clamp_min(1), batch["domain"])

    def on_validation_epoch_end(self) -> None:
        mean, per_domain = self.val_metric.named(self.domain_names)
        self.val_metric.reset()
        self.record_eval({"loss": ("loss", mean, per_domain)})
