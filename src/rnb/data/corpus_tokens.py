"""The tokenizer and the token stores of a scanned :class:`~rnb.data.corpus.Corpus`.

What :meth:`RnBDataModule.prepare_data` builds once per node and :meth:`setup` reopens on
every rank; both are cached (the BPE under the tokenizer cache, the stores under
``<cache_dir>/token_store/<fingerprint>``), so the second call only loads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnb.data.corpus import Corpus
from rnb.data.store import TokenStore, store_fingerprint
from rnb.data.store_build import build_store
from rnb.data.tokenize import load_tokenizer
from rnb.run.fingerprint import tokenizer_digest

__all__ = ["corpus_stores", "corpus_tokenizer"]


def corpus_tokenizer(corpus: Corpus, cfg: Mapping[str, Any], cache_dir: Path) -> Any:
    """The tokenizer of ``data.tokenizer``, trained (BPE) on the corpus' training texts.

    Args:
        corpus: The scanned sources and split.
        cfg: ``{name, vocab_size, min_frequency}`` (``data.tokenizer``).
        cache_dir: The tokenizer cache (``data.cache_dir``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` (see :func:`rnb.data.tokenize.load_tokenizer`).
    """
    if corpus.in_memory:  # the testbed: its texts are a list already
        texts: Any = [corpus.texts.corpus(r) for r in corpus.train_source.records]
        key = None
    else:  # a file: the BPE reads the training texts as a stream
        texts, key = corpus.train_corpus, corpus.train_key()
    return load_tokenizer(
        cfg["name"], texts, cache_dir, cfg["vocab_size"], cfg["min_frequency"], key
    )


def corpus_stores(
    corpus: Corpus, cache_dir: Path, tokenizer: Any, max_length: int, chunk_size: int
) -> tuple[TokenStore, TokenStore]:
    """The train and eval token stores (one store when eval is split off train).

    Args:
        corpus: The scanned sources and split.
        cache_dir: Root of ``token_store/`` (``data.cache_dir``).
        tokenizer: From :func:`corpus_tokenizer`.
        max_length: Tokens per example (``data.max_length``).
        chunk_size: Examples per resumable build chunk (``data.store_chunk_size``).

    Returns:
        ``(train_store, eval_store)``; the same object twice for a held-out split.
    """
    root = cache_dir / "token_store"
    common = (max_length, tokenizer_digest(tokenizer))
    out = []
    for source, scan in corpus.sources():
        fp = store_fingerprint(corpus.key(source), *common)
        out.append(
            build_store(
                root,
                fp,
                lambda s=source, sc=scan: corpus.pairs(s, sc),
                scan.n,
                tokenizer,
                max_length,
                chunk_size,
            )
        )
    return out[0], out[-1]
