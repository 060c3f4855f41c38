"""Find every run under some directories, finished or not, with its flattened config.

A *run* is a directory holding ``summary.json`` (completed, diverged or failed, see
:mod:`rnb.report.aggregate`), or a training job directory (``.hydra/config.yaml`` of an
``rnb-train`` config) without one: killed or still running, listed as ``unfinished``. A
``summary.json`` that cannot be parsed is listed as ``unreadable``. Nothing found is
dropped: only completed runs are results, every other run is listed with its reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rnb.report.aggregate import _regroup_label, _status

__all__ = ["Run", "find_runs", "flatten"]

#: The marker of a Hydra-templated value that follows the run's seed.
_SEED_REF = "${seed}"
#: Leaf names that hold a seed; such a key follows the run's seed when its value equals it.
_SEED_NAMES = ("seed", "random_state")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay values).

    An empty mapping or ``None`` below a key stays as that key's value (``regroup: null``).
    """
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node} if prefix else {}


@dataclass
class Run:
    """One run directory and what the report needs from it.

    Attributes:
        path: the run directory.
        status: ``completed``, ``diverged``, ``failed``, ``unfinished`` or ``unreadable``.
        reason: why a run is not completed (None for completed runs).
        failed_at_step: the step a diverged / failed run stopped at, when known.
        summary: the parsed ``summary.json`` (empty without one).
        config: the flattened resolved config (``summary.json`` ``config``; for a run
            without a summary, its ``.hydra/config.yaml`` as written).
        seed_keys: config keys whose value follows the run's ``seed`` (``${seed}`` in
            ``.hydra/config.yaml``, or a ``*seed`` / ``random_state`` key equal to it).
    """

    path: Path
    status: str
    reason: str | None
    failed_at_step: int | None
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed_keys: frozenset[str] = frozenset()

    @property
    def completed(self) -> bool:
        """Only completed runs are results."""
        return self.status == "completed"

    @property
    def strategy(self) -> str:
        """The strategy's class name (``RnB``), from the summary or the config's target."""
        name = (self.summary.get("strategy") or {}).get("name")
        target = self.config.get("strategy._target_")
        return str(name or (str(target).rsplit(".", 1)[-1] if target else "?"))

    @property
    def grouping(self) -> str:
        """``predefined`` or ``regrouped (<clusterer>/<embedder>)``."""
        label = _regroup_label(_unflatten(self.config, "regroup"))
        if label == "none":
            return "predefined"
        if label.startswith("OriginalDomains"):  # regroup=original: predefined + its report
            return "predefined (regroup=original)"
        return f"regrouped ({label})"

    @property
    def seed(self) -> Any:
        """The run's seed (summary, else config)."""
        return self.summary.get("seed", self.config.get("seed"))

    @property
    def m(self) -> int | None:
        """Number of domains (None without a summary)."""
        domains = self.summary.get("domains")
        return len(domains) if domains else None

    def number(self, key: str, sub: str | None = None) -> float:
        """A numeric summary entry (``eval_loss``, or ``overhead``/``wall_pct``), NaN if absent."""
        value = self.summary.get(key)
        if sub is not None:
            value = (value or {}).get(sub)
        try:
            out = float(value)
        except (TypeError, ValueError):
            return math.nan
        return out

    @property
    def metrics_csv(self) -> Path | None:
        """The run's ``logs/metrics.csv`` (CSV logger), if it exists."""
        path = self.path / "logs" / "metrics.csv"
        return path if path.is_file() else None

    def metrics(self) -> pd.DataFrame | None:
        """``logs/metrics.csv`` as a frame, None when absent or unreadable."""
        path = self.metrics_csv
        if path is None:
            return None
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            return None


def _unflatten(flat: Mapping[str, Any], key: str) -> Any:
    """The sub-config under ``key`` of a flattened config, nested again (None if absent)."""
    if key in flat:
        return flat[key]
    pre = key + "."
    sub = {k[len(pre) :]: v for k, v in flat.items() if k.startswith(pre)}
    if not sub:
        return None
    out: dict[str, Any] = {}
    for k, v in sub.items():
        node = out
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _hydra_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _resolved(hydra_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``.hydra/config.yaml`` with its interpolations resolved, so that it compares equal to
    a summary's resolved config; as written when a value cannot be resolved here."""
    if hydra_cfg is None:
        return {}
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.create(dict(hydra_cfg)), resolve=True)
    except Exception:  # e.g. ${hydra:...} outside a Hydra app: keep the written values
        return dict(hydra_cfg)


def _seed_keys(config: Mapping[str, Any], hydra_cfg: Mapping[str, Any] | None) -> frozenset[str]:
    keys = set()
    if hydra_cfg is not None:
        keys |= {k for k, v in flatten(hydra_cfg).items() if isinstance(v, str) and _SEED_REF in v}
    seed = config.get("seed")
    for k, v in config.items():
        leaf = k.rsplit(".", 1)[-1]
        if k != "seed" and leaf.endswith(_SEED_NAMES) and v == seed and seed is not None:
            keys.add(k)
    return frozenset(keys)


def _load(summary_path: Path) -> Run:
    run_dir = summary_path.parent
    hydra_cfg = _hydra_config(run_dir)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as err:
        config = flatten(_resolved(hydra_cfg))
        reason = f"summary.json unreadable: {err}"
        return Run(run_dir, "unreadable", reason, None, {}, config, _seed_keys(config, hydra_cfg))
    status, step, reason = _status(summary)
    if status != "completed" and reason is None:
        reason = (summary.get("failure") or {}).get("message") or "no reason recorded"
    config = flatten(summary.get("config") or _resolved(hydra_cfg))
    return Run(run_dir, status, reason, step, summary, config, _seed_keys(config, hydra_cfg))


def _is_training_job(hydra_cfg: Mapping[str, Any] | None) -> bool:
    """An ``rnb-train`` job (not an ``rnb-regroup`` run, which has no trainer/strategy)."""
    return hydra_cfg is not None and "strategy" in hydra_cfg and "trainer" in hydra_cfg


def _unfinished(run_dir: Path) -> Run:
    hydra_cfg = _hydra_config(run_dir)
    config = flatten(_resolved(hydra_cfg))
    last = None
    csv = run_dir / "logs" / "metrics.csv"
    if csv.is_file():
        try:
            steps = pd.read_csv(csv, usecols=["step"])["step"].dropna()
            last = int(steps.max()) if len(steps) else None
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            last = None
    reason = "no summary.json (killed, or still running)"
    if last is not None:
        reason += f"; metrics.csv ends at step {last}"
    return Run(run_dir, "unfinished", reason, last, {}, config, _seed_keys(config, hydra_cfg))


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run below ``dirs`` (each a run dir, a multirun dir or any folder), in path order
    (numbers compared as numbers: job ``2`` before job ``10``).

    Raises:
        FileNotFoundError: a directory does not exist.
    """
    found: dict[Path, Run] = {}
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise FileNotFoundError(f"rnb-report: {root} does not exist")
        for summary in sorted(root.rglob("summary.json")) if root.is_dir() else [root]:
            found.setdefault(summary.parent.resolve(), _load(summary))
        for cfg in sorted(root.rglob(".hydra/config.yaml")) if root.is_dir() else []:
            run_dir = cfg.parent.parent
            if run_dir.resolve() not in found and _is_training_job(_hydra_config(run_dir)):
                found[run_dir.resolve()] = _unfinished(run_dir)
    return [found[k] for k in sorted(found, key=_natural)]


def _natural(path: Path) -> list[Any]:
    """Sort key putting multirun job ``2`` before ``10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]
