"""The trajectory fingerprint: everything that decides which batches and updates a run makes.

A fingerprint has five parts, each a plain ``dict`` (checkpoints load with
``weights_only=True``):

* ``config``: the resolved run config flattened to dotted keys (``model.arch.hidden_size``)
  minus the file-valued keys; lists are single values.
* ``files``: for each file-valued key (a leaf named ``*path`` or ``from_summary``), the path
  and a streamed sha256 of its content (a directory: of every file in it, by relative path).
  So a moved data file resumes (the path change is recorded), an edited one is refused.
* ``tokenizer``: sha256 of the tokenizer's full serialisation (vocabulary, merges, special
  tokens).
* ``domains``: sha256 of the domain names and the train / eval domain id arrays.
* ``rnb_version``: the package version (a change is warned about and recorded, not refused:
  upgrading mid-run is deliberate).

The first two are known from the config alone, so a resume is checked against them before
the DataModule is built; the next two need the built DataModule.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "config_part",
    "diff_config",
    "diff_digests",
    "domain_digest",
    "file_part",
    "is_file_key",
    "sha256_path",
    "tokenizer_digest",
]

_CHUNK = 1 << 20  # bytes read at a time: hashing a multi-GB file needs no more memory


def is_file_key(key: str) -> bool:
    """Whether a dotted config key names a file whose *content* defines the run."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf.endswith("path") or leaf == "from_summary"


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def config_part(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as ``{dotted key: value}`` without the file-valued keys."""
    flat = _flatten(_resolved(cfg))
    return {k: v for k, v in flat.items() if not is_file_key(k)}


def sha256_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative path + content, sorted).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\x00")
            h.update(sha256_path(f).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_part(cfg: DictConfig | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"path", "sha256"}}`` for every set file-valued key.

    ``sha256`` is ``None`` for a value that is not a local path (``hf:<name>`` datasets):
    those compare by name. A local path that does not exist also gets ``None`` (the run
    itself reports the missing file with its key).
    """
    flat = _flatten(_resolved(cfg))
    out: dict[str, dict[str, Any]] = {}
    for key, value in sorted(flat.items()):
        if not is_file_key(key) or value in (None, ""):
            continue
        path = Path(str(value)).expanduser()
        digest = sha256_path(path) if path.exists() else None
        out[key] = {"path": str(path.resolve()) if digest else str(value), "sha256": digest}
    return out


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of a tokenizer: its backend serialisation when it has one, else its vocabulary."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = {k: getattr(tokenizer, k, None) for k in ("eos_token_id", "pad_token_id")}
    h.update(json.dumps({**special, "len": len(tokenizer)}, sort_keys=True).encode())
    return h.hexdigest()


def domain_digest(names: Iterable[str], train: np.ndarray, eval_: np.ndarray) -> str:
    """sha256 of the domain assignment: names and the ``[n_train]`` / ``[n_eval]`` id arrays."""
    h = hashlib.sha256(json.dumps(list(names)).encode())
    for ids in (train, eval_):
        arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


_ABSENT = "<absent>"


def _allowed(key: str, patterns: Iterable[str]) -> bool:
    """A key matches a pattern exactly, as a sub-key of it, or by ``fnmatch`` wildcard."""
    return any(key == p or key.startswith(p + ".") or fnmatch.fnmatchcase(key, p) for p in patterns)


def diff_config(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    files_old: Mapping[str, Mapping[str, Any]],
    files_new: Mapping[str, Mapping[str, Any]],
    allowed: Iterable[str],
) -> tuple[list[str], dict[str, list[Any]]]:
    """Compare the config and file parts of two fingerprints.

    Returns:
        ``(refused, deliberate)``: one readable line per refused change (``key: old -> new``
        or ``key: content changed (sha256 a -> b) path``), and ``{key: [old, new]}`` for the
        allowed changes (incl. a moved but identical file) to record.
    """
    allowed = list(allowed)
    refused: list[str] = []
    deliberate: dict[str, list[Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a == b:
            continue
        if _allowed(key, allowed):
            deliberate[key] = [a, b]
        else:
            refused.append(f"{key}: {a!r} -> {b!r}")
    for key in sorted(set(files_old) | set(files_new)):
        a, b = files_old.get(key), files_new.get(key)
        if a is None or b is None:
            refused.append(f"{key}: {_path(a)} -> {_path(b)}")
        elif a["sha256"] != b["sha256"] or (a["sha256"] is None and a["path"] != b["path"]):
            refused.append(
                f"{key}: content changed (sha256 {_short(a['sha256'])} -> "
                f"{_short(b['sha256'])}) {b['path']}"
            )
        elif a["path"] != b["path"]:
            deliberate[key] = [a["path"], b["path"]]  # same bytes, new place
    return refused, deliberate


def diff_digests(
    old: Mapping[str, Any], new: Mapping[str, Any], what: Mapping[str, str]
) -> list[str]:
    """Refusal lines for the digest parts (``what``: part name -> what changed, and where)."""
    return [
        f"{what[k]}: sha256 {_short(old.get(k))} -> {_short(new.get(k))}"
        for k in what
        if old.get(k) != new.get(k)
    ]


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]


def _path(entry: Mapping[str, Any] | None) -> str:
    return "unset" if entry is None else repr(entry["path"])
