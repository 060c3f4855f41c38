"""Tiny model, data and trainer stand-ins for unit tests of the signal services."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from lightning.pytorch.plugins.precision import Precision

from rnb.data.tokenize import TokenizedSplit
from rnb.models.lm import CausalLMModule

VOCAB = 50
LENGTH = 12
NAMES = ["a", "b", "c"]


def tiny_model(seed: int = 0, vocab: int = VOCAB, positions: int = 16) -> CausalLMModule:
    torch.manual_seed(seed)
    arch = {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": positions,
    }
    return CausalLMModule(vocab_size=vocab, domain_names=NAMES, arch=arch, eos_token_id=0)


def split(domains: list[int], seed: int = 0) -> TokenizedSplit:
    """Random token rows with a masked prompt and right padding of varying length."""
    rng = np.random.default_rng(seed)
    n = len(domains)
    ids = rng.integers(1, VOCAB, size=(n, LENGTH))
    mask = np.ones((n, LENGTH), dtype=np.int64)
    labels = ids.copy()
    for i in range(n):
        prompt, pad = 2 + i % 3, i % 4
        labels[i, :prompt] = -100
        if pad:
            mask[i, -pad:] = 0
            labels[i, -pad:] = -100
            ids[i, -pad:] = 0
    return TokenizedSplit(ids, mask, labels, np.asarray(domains, dtype=np.int64))


class Tokenizer:
    """Enough of a tokenizer for :func:`rnb.run.fingerprint.tokenizer_digest`."""

    eos_token_id = 0
    pad_token_id = 0

    def __init__(self, vocab: int = VOCAB, salt: str = "") -> None:
        self.vocab = {f"t{salt}{i}": i for i in range(vocab)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)


def datamodule(eval_domains: list[int], tokenizer: Tokenizer | None = None) -> SimpleNamespace:
    tok = tokenizer or Tokenizer()
    ev = split(eval_domains, seed=1)
    return SimpleNamespace(
        domain_names=list(NAMES),
        eval_data=ev,
        eval_batch_size=3,
        labels=SimpleNamespace(eval=ev.domain),
        tokenizer=tok,
        vocab_size=len(tok),
        max_length=LENGTH,
    )


def trainer(rank: int = 0, world: int = 1) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, precision_plugin=Precision())


def batch(rows: TokenizedSplit, idx: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
    idx = np.asarray(idx)
    return {
        k: torch.as_tensor(getattr(rows, k)[idx])
        for k in ("input_ids", "attention_mask", "labels", "domain")
    }
