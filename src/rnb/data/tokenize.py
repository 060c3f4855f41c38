"""Offline tokenisation: a byte-level BPE trained on the training split, or any HF tokenizer.

The BPE is cached under ``<cache_dir>/tokenizers/<fingerprint>/tokenizer.json`` keyed by
the training texts, the tokenizer settings and the code version
(:func:`rnb.caching.code_version`), so a sweep trains it once and a new release retrains it.
Training holds the entry's file lock, so concurrent jobs sharing a cache train it once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from rnb.caching import cache_lock, code_version

__all__ = [
    "TokenizedSplit",
    "dense_rows",
    "encode_examples",
    "encode_rows",
    "load_tokenizer",
]

PAD, EOS = "<|pad|>", "<|endoftext|>"
#: Format version of the cached BPE; bump when training or its settings change.
FORMAT_VERSION = 2


def _fingerprint(texts: Sequence[str], *parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def load_tokenizer(
    name: str | None,
    train_texts: Sequence[str] | Callable[[], Iterable[str]],
    cache_dir: str | Path,
    vocab_size: int = 2048,
    min_frequency: int = 2,
    corpus_key: str | None = None,
):
    """Return a ``transformers.PreTrainedTokenizerFast`` with pad and eos tokens.

    Args:
        name: ``None``/``"bpe"`` trains a byte-level BPE on ``train_texts`` (offline
            default); anything else is an HF tokenizer name or local path.
        train_texts: the training texts (used only for the BPE): a sequence, or a
            function returning a fresh iterator over them (a corpus streamed from disk;
            needs ``corpus_key``).
        cache_dir: where the trained BPE is cached.
        vocab_size: BPE vocabulary size (``model.tokenizer.vocab_size``).
        min_frequency: BPE merge threshold.
        corpus_key: what determines the texts (source content hashes and settings);
            keys the cache instead of hashing the texts (which would cost a pass).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name not in (None, "bpe"):
        tok = AutoTokenizer.from_pretrained(name)
        if tok.eos_token is None:
            tok.add_special_tokens({"eos_token": EOS})
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok
    if vocab_size < 300:
        raise ValueError(
            f"model.tokenizer.vocab_size must be >= 300 for byte-level BPE, got {vocab_size}"
        )
    parts = (code_version("tokenizer", FORMAT_VERSION), vocab_size, min_frequency)
    if corpus_key is not None:
        fp = _fingerprint([], *parts, corpus_key)
    elif callable(train_texts):
        raise ValueError("load_tokenizer: streamed train_texts need a corpus_key")
    else:
        fp = _fingerprint(train_texts, *parts)
    path = Path(cache_dir) / "tokenizers" / fp / "tokenizer.json"
    if not path.exists():
        with cache_lock(path.parent):
            if not path.exists():  # else another process trained it while we waited
                _train_bpe(train_texts, vocab_size, min_frequency, path)
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, pad_token=PAD)


def _train_bpe(
    train_texts: Sequence[str] | Callable[[], Iterable[str]],
    vocab_size: int,
    min_frequency: int,
    path: Path,
) -> None:
    """Train a byte-level BPE and publish it at ``path`` with an atomic rename."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        # a stream is consumed batch by batch: only the word counts stay in memory
        train_texts() if callable(train_texts) else list(train_texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        show_progress=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    bpe.save(str(tmp))
    tmp.replace(path)


class TokenizedSplit:
    """Fixed-length token arrays of one split (numpy, so DataLoader workers share them).

    Attributes:
        input_ids: ``[n, L]`` int64, right-padded with the pad id.
        attention_mask: ``[n, L]`` int64.
        labels: ``[n, L]`` int64, ``-100`` where no loss is taken.
        domain: ``[n]`` int64 domain id of each example.
    """

    def __init__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        labels: np.ndarray,
        domain: np.ndarray,
    ) -> None:
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.labels = labels
        self.domain = domain

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "labels": self.labels[i],
            "domain": self.domain[i],
        }


def encode_rows(
    tokenizer,
    sources: Sequence[str],
    targets: Sequence[str] | None,
    max_length: int,
    first: int = 0,
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of ``source [+ target] + eos`` per example, cut to ``max_length``.

    With ``targets`` the loss covers only the target tokens and the eos (instruction
    tuning); without, it covers every token. Sequences longer than ``max_length`` are
    truncated from the right (the eos may be cut off).

    Args:
        tokenizer: a ``transformers`` tokenizer with pad and eos tokens.
        sources: ``[n]`` texts (the whole text without ``targets``).
        targets: ``[n]`` target texts, or ``None``.
        max_length: tokens per example (``data.max_length``).
        first: index of ``sources[0]`` in its split (for the error message).

    Returns:
        ``(seqs, lab_from)``: ``n`` id lists of length ``<= max_length`` and ``[n]`` int32
        first loss position of each (``0`` without targets).

    Raises:
        ValueError: ``max_length < 4``, or an example keeps no target token.
    """
    if max_length < 4:
        raise ValueError(f"data.max_length must be >= 4, got {max_length}")
    eos_id = tokenizer.eos_token_id
    src = tokenizer(list(sources), add_special_tokens=False)["input_ids"]
    if targets is None:
        seqs = [[*s, eos_id][:max_length] for s in src]
        return seqs, np.zeros(len(seqs), dtype=np.int32)
    tgt = tokenizer([" " + t for t in targets], add_special_tokens=False)["input_ids"]
    seqs = [[*s, *t, eos_id][:max_length] for s, t in zip(src, tgt, strict=True)]
    lab_from = np.array([min(len(s), max_length) for s in src], dtype=np.int32)
    empty = np.flatnonzero(lab_from >= np.array([len(q) for q in seqs], dtype=np.int32))
    if empty.size:
        raise ValueError(
            f"example {first + int(empty[0])} has no target tokens within "
            f"data.max_length={max_length}: raise data.max_length"
        )
    return seqs, lab_from


def dense_rows(
    seqs: Sequence[Sequence[int] | np.ndarray], lab_from: np.ndarray, max_length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask, labels)``, each ``[n, max_length]`` int64.

    ``labels`` is ``-100`` before ``lab_from`` and on the padding.
    """
    n = len(seqs)
    ids = np.full((n, max_length), pad_id, dtype=np.int64)
    mask = np.zeros((n, max_length), dtype=np.int64)
    labels = np.full((n, max_length), -100, dtype=np.int64)
    for i, seq in enumerate(seqs):
        L, a = len(seq), int(lab_from[i])
        ids[i, :L] = seq
        mask[i, :L] = 1
        labels[i, a:L] = ids[i, a:L]
    return ids, mask, labels


def encode_examples(
    tokenizer,
    sources: Sequence[str],
    targets: Sequence[str] | None,
    domain: Sequence[int] | np.ndarray,
    max_length: int,
) -> TokenizedSplit:
    """Tokenise ``source [+ target] + eos`` into fixed-length arrays held in memory.

    See :func:`encode_rows` (ids, loss positions, errors) and :func:`dense_rows`; the
    token store (:mod:`rnb.data.store`) keeps the same rows on disk.
    """
    seqs, lab_from = encode_rows(tokenizer, sources, targets, max_length)
    ids, mask, labels = dense_rows(seqs, lab_from, max_length, tokenizer.pad_token_id)
    return TokenizedSplit(ids, mask, labels, np.asarray(domain, dtype=np.int64))
