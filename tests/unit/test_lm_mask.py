"""CausalLMModule.head_row_mask: True exactly on the logit rows that receive a gradient."""

from __future__ import annotations

import numpy as np
import torch

from rnb.models.lm import CausalLMModule, per_example_loss


def test_head_row_mask_matches_nonzero_logit_gradients() -> None:
    torch.manual_seed(0)
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
            "max_position_embeddings": 12, "window_size": 4}  # fmt: skip
    module = CausalLMModule(vocab_size=40, domain_names=["a", "b"], arch=arch)
    ids = torch.randint(1, 40, (3, 12))
    labels = ids.clone()
    labels[0, :5] = -100  # prompt tokens ignored
    labels[1, 9:] = -100  # padding
    labels[2, ::2] = -100
    logits = module(ids, torch.ones_like(ids))
    logits.retain_grad()
    loss_sum, tokens = per_example_loss(logits, labels)
    (loss_sum / tokens.clamp_min(1)).mean().backward()
    mask = module.head_row_mask({"labels": labels})
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (3, 12)
    has_grad = (logits.grad.abs().sum(-1) > 0).numpy()
    np.testing.assert_array_equal(mask, has_grad)
