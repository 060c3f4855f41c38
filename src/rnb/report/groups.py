"""Which runs may be averaged: the same resolved config except for the seed.

Two runs land in one *group* (one row of the results table) exactly when their flattened
resolved configs agree on every key except

* ``seed`` and the keys that follow it (``${seed}`` in ``.hydra/config.yaml``, e.g.
  ``data.seed``, ``regroup.clusterer.random_state``; see :class:`rnb.report.runs.Run`),
* :data:`IGNORED_KEYS`: where outputs and caches go and what is printed, which never change
  a result,
* keys the caller names in ``ignore`` (``rnb-report --ignore``; fnmatch patterns), e.g. the
  per-seed ``strategy.from_summary`` path of DoReMi's final runs.

Groups sharing a strategy and grouping get a ``differs`` entry: the keys (and this group's
values) in which they differ, so the table says why they are separate rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from rnb.report.runs import Run

__all__ = ["IGNORED_KEYS", "Group", "group_runs", "varying_keys"]

#: Keys (fnmatch patterns) that never split runs: outputs, caches, resumption, printing.
IGNORED_KEYS: tuple[str, ...] = (
    "seed",
    "output_dir",
    "resume",
    "logger.save_dir",
    "logger.name",
    "logger.version",
    "*cache_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "*.progress",
)


@dataclass(eq=False)  # identity: a group is hashable and equal only to itself
class Group:
    """Runs with the same config up to the seed: one row of the results table.

    Attributes:
        strategy: the strategy's class name.
        grouping: ``predefined`` or ``regrouped (<clusterer>/<embedder>)``.
        runs: the group's runs, completed or not.
        differs: ``{key: value}`` of this group for the keys in which it differs from the
            other groups with the same strategy and grouping (empty when it is the only one).
        config: the flattened config the group's runs share (seed keys and ignored keys
            dropped).
    """

    strategy: str
    grouping: str
    runs: list[Run]
    differs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> list[Run]:
        """The runs that are results."""
        return [r for r in self.runs if r.completed]

    @property
    def not_completed(self) -> list[Run]:
        """Diverged, failed, unfinished and unreadable runs."""
        return [r for r in self.runs if not r.completed]

    @property
    def label(self) -> str:
        """``RnB · regrouped (KMeans/TfidfSvdEmbedder)`` plus the differing keys, if any."""
        text = f"{self.strategy} · {self.grouping}"
        if self.differs:
            text += " [" + ", ".join(f"{k}={_short(v)}" for k, v in self.differs.items()) + "]"
        return text

    @property
    def short_label(self) -> str:
        """``RnB · regrouped [k_values=[8]]``: the differing keys' last parts (for legends)."""
        text = f"{self.strategy} · {self.grouping.split(' ', 1)[0]}"
        if self.differs:
            text += (
                " ["
                + ", ".join(
                    f"{k.rsplit('.', 1)[-1]}={_short(v, 24)}" for k, v in self.differs.items()
                )
                + "]"
            )
        return text

    @property
    def m(self) -> str:
        """Number of domains of the completed runs (``24/28`` when Regroup chose differently)."""
        ms = sorted({r.m for r in self.completed if r.m is not None})
        return "/".join(str(x) for x in ms) if ms else "–"


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ignored(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(key, p) or key.startswith(p + ".") for p in patterns)


def _comparable(run: Run, drop: set[str], patterns: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in run.config.items() if k not in drop and not _ignored(k, patterns)}


def varying_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Keys whose value is not the same in every config (a missing key counts as a value)."""
    keys = sorted(set().union(*configs)) if configs else []
    missing = object()
    out = []
    for k in keys:
        values = {json.dumps(c.get(k, missing), default=repr, sort_keys=True) for c in configs}
        if len(values) > 1:
            out.append(k)
    return out


def group_runs(runs: Iterable[Run], ignore: Sequence[str] = ()) -> list[Group]:
    """Group ``runs`` by config up to the seed (see the module docstring).

    Args:
        runs: runs from :func:`rnb.report.runs.find_runs`.
        ignore: extra fnmatch patterns of keys that must not split groups.

    Returns:
        Groups in order of first appearance.
    """
    runs = list(runs)
    patterns = (*IGNORED_KEYS, *ignore)
    seed_keys = set().union(*(r.seed_keys for r in runs)) if runs else set()
    by_id: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        config = _comparable(run, seed_keys, patterns)
        key = (run.strategy, run.grouping, json.dumps(config, sort_keys=True, default=str))
        if key not in by_id:
            by_id[key] = Group(run.strategy, run.grouping, [], config=config)
        by_id[key].runs.append(run)
    groups = list(by_id.values())
    for strategy, grouping in {(g.strategy, g.grouping) for g in groups}:
        same = [g for g in groups if (g.strategy, g.grouping) == (strategy, grouping)]
        if len(same) > 1:
            keys = varying_keys([g.config for g in same])
            for g in same:
                g.differs = {k: g.config.get(k) for k in keys}
    return groups
