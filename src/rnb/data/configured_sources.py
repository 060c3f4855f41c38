"""The train / eval sources a data config names: the built-in testbed or data files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnb.data.streams import FileSource, ListSource

__all__ = ["configured_sources"]


def configured_sources(
    train_path: str | None,
    eval_path: str | None,
    synthetic: Mapping[str, Any] | None,
    seed: int,
    split: str | None,
    encoding: str,
    encoding_errors: str,
) -> tuple[FileSource | ListSource, FileSource | ListSource | None]:
    """The training source and the eval source (``None``: split eval off train).

    Args:
        train_path: ``data.train_path``; ``None`` generates the testbed.
        eval_path: ``data.eval_path``, or ``None``.
        synthetic: kwargs of :class:`rnb.data.synthetic.SyntheticConfig`
            (``data.synthetic``), used when ``train_path`` is unset; its ``seed``
            defaults to ``seed``.
        seed: The data seed.
        split: Split name for HF dataset dicts (``data.split``).
        encoding: Text encoding of the files (``data.encoding``).
        encoding_errors: ``strict`` | ``replace`` (``data.encoding_errors``).

    Returns:
        ``(train_source, eval_source)``; the testbed always has both.
    """
    if train_path is None:
        from rnb.data.synthetic import SyntheticConfig, generate

        cfg = dict(synthetic or {})
        cfg.setdefault("seed", seed)
        train, ev = generate(SyntheticConfig(**cfg))
        return (
            ListSource(train, "data.synthetic (train)"),
            ListSource(ev, "data.synthetic (eval)"),
        )
    opts = (split, encoding, encoding_errors)
    train_source = FileSource(train_path, "data.train_path", *opts)
    eval_source = FileSource(eval_path, "data.eval_path", *opts) if eval_path else None
    return train_source, eval_source
