"""Shared rules of the on-disk caches (embeddings, Regroup labels, BPE tokenizer).

Two rules keep a cache trustworthy:

* **A cache never outlives the code that wrote it.** Every key includes
  :func:`code_version` (the rnb package version plus the stage's own format version), so
  a new release, or a stage whose output changed (its format version bumped), misses
  every entry written before.
* **Concurrent writers never corrupt an entry.** A writer holds :func:`cache_lock` on the
  entry while it checks for and computes it, writes into a unique temporary path and
  publishes with an atomic rename. A second process (another job of a multirun, another
  DDP node) blocks on the lock, then finds the entry and reuses it.

Clearing: delete ``$RNB_CACHE_DIR`` (default ``.rnb_cache``), or any subfolder of it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

__all__ = ["cache_lock", "code_version", "publish_dir", "publish_file", "temp_dir"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def code_version(stage: str, fmt: int) -> str:
    """Version tag of one cache stage, part of every key that stage writes.

    Reads ``rnb.__version__`` at call time (so tests can change it).

    Args:
        stage: Stage name (``embeddings``, ``regroup``, ``tokenizer``).
        fmt: The stage's format version; bump it when the stage's output changes.

    Returns:
        e.g. ``"rnb-0.1.0/regroup-v2"``.
    """
    import rnb

    return f"rnb-{rnb.__version__}/{stage}-v{int(fmt)}"


def cache_lock(entry: str | os.PathLike[str], timeout: float = -1) -> FileLock:
    """An inter-process lock guarding one cache entry (file ``<entry>.lock``).

    Use as ``with cache_lock(path): if not exists: compute and publish``. The lock file
    stays behind (removing it while another process waits would break the lock).

    Args:
        entry: The entry's final path (file or folder); its parent is created.
        timeout: Seconds to wait; -1 waits forever.
    """
    path = Path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")), timeout=timeout)


def temp_dir(final: str | os.PathLike[str]) -> Path:
    """A fresh, uniquely named folder next to ``final`` (same file system, so the
    rename in :func:`publish_dir` is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def publish_dir(tmp: Path, final: Path) -> bool:
    """Atomically rename the finished folder ``tmp`` to ``final``.

    Returns:
        True if ``tmp`` became ``final``; False if ``final`` already existed (another
        writer won; ``tmp`` is removed and the existing entry is kept).
    """
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def publish_file(src: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to ``final`` through a unique temporary file and an atomic replace,
    so concurrent copies (e.g. every DDP rank) never leave a half-written file."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{_UNSAFE.sub('_', final.name)}.", dir=final.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final
