"""``static``: fixed weights from the config or from a previous run's ``summary.json``.

Weights keyed by domain name (a ``{domain: weight}`` mapping, or a previous run's summary)
must name exactly this run's domains. When they do not, ``strategy.fill`` decides:
``error`` (default) lists the missing and extra domains; ``zero`` gives missing domains 0;
``uniform`` gives each missing domain ``1/m`` and scales the transferred weights into the
rest. Extra domains are dropped by ``zero`` / ``uniform``. Weights from a previous run must
also come from the same *domain definition* (:attr:`MixtureContext.domain_fingerprint`: the
Regroup clustering, or ``data.domain_field``), since ``c03`` of one clustering is not
``c03`` of another; ``strategy.check_fingerprint=false`` transfers by name anyway. What was
filled, dropped and renormalised is logged and recorded in ``describe()`` (``summary.json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats

__all__ = ["FILL_POLICIES", "Static"]

log = logging.getLogger(__name__)

#: Values of ``strategy.fill``.
FILL_POLICIES = ("error", "zero", "uniform")


class Static(MixingStrategy):
    """Fixed mixture.

    Args:
        weights: a list (one entry per domain, in domain order) or a mapping
            ``{domain name: weight}``; normalised to sum 1.
        from_summary: path of a previous run's ``summary.json``; its weights are used
            when ``weights`` is unset.
        average: with ``from_summary``, use the run's time-averaged weights ``ᾱ``
            (``average_weights`` in its summary; the plain trajectory mean for summaries
            written before it existed), as DoReMi and DoGE prescribe, instead of the final
            weights.
        fill: what to do when name-keyed weights miss some of this run's domains or
            name others: ``error`` | ``zero`` | ``uniform`` (see the module docstring).
        check_fingerprint: with ``from_summary``, refuse weights whose domains were
            defined differently (another Regroup clustering or ``data.domain_field``).

    Raises:
        ValueError: neither ``weights`` nor ``from_summary`` set; an unknown ``fill``;
            ``fill`` / ``check_fingerprint`` set where they cannot apply.
    """

    static = True

    def __init__(
        self,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        from_summary: str | None = None,
        average: bool = False,
        fill: str = "error",
        check_fingerprint: bool = True,
    ) -> None:
        if weights is None and from_summary is None:
            raise ValueError("strategy.weights or strategy.from_summary must be set for `static`")
        if fill not in FILL_POLICIES:
            raise ValueError(f"strategy.fill must be one of {list(FILL_POLICIES)}, got {fill!r}")
        by_name = weights is None or isinstance(weights, Mapping)
        if fill != "error" and not by_name:
            raise ValueError(
                f"strategy.fill={fill} applies to weights keyed by domain ({{domain: weight}} "
                "or strategy.from_summary); a list needs one weight per domain, in domain order"
            )
        if not check_fingerprint and (weights is not None or from_summary is None):
            raise ValueError("strategy.check_fingerprint applies only to strategy.from_summary")
        self.weights = weights
        self.from_summary = from_summary
        self.average = average
        self.fill = fill
        self.check_fingerprint = check_fingerprint
        #: How the weights were matched to this run's domains (filled in initial_weights).
        self.transfer: dict[str, Any] = {}
        self._averaged = ""

    # ------------------------------------------------------------------ sources
    def _resolve(self) -> tuple[list[str] | None, np.ndarray, str | None]:
        """``(names or None for a list, weights, domain fingerprint of the source)``."""
        if self.weights is not None:
            if isinstance(self.weights, Mapping):
                names = [str(n) for n in self.weights]
                return names, np.array([float(v) for v in self.weights.values()]), None
            return None, np.asarray(list(self.weights), dtype=np.float64), None
        path = Path(self.from_summary)
        if not path.exists():
            raise FileNotFoundError(f"strategy.from_summary='{path}' does not exist")
        summary = json.loads(path.read_text())
        status = summary.get("status", "completed")
        if status != "completed":
            failure = summary.get("failure") or {}
            raise ValueError(
                f"strategy.from_summary='{path}': that run {status} at step "
                f"{failure.get('step')} ({failure.get('reason')}); its weights are no result: "
                "point strategy.from_summary at a completed run"
            )
        traj = summary.get("weights_trajectory") or []
        if not traj:
            raise ValueError(f"strategy.from_summary='{path}' has an empty weights_trajectory")
        domains = list(summary.get("domains") or [])
        for name, weights in [("weights_trajectory", t["weights"]) for t in traj] + [
            ("average_weights", summary.get("average_weights") or domains)
        ]:
            if len(weights) != len(domains):
                raise ValueError(
                    f"strategy.from_summary='{path}': {name} has {len(weights)} weights for "
                    f"{len(domains)} domains {domains}: the file is damaged or was edited; "
                    "point strategy.from_summary at a summary.json written by rnb-train"
                )
        w = np.asarray([t["weights"] for t in traj], dtype=np.float64)
        if not self.average:
            chosen = w[-1]
        elif summary.get("average_weights") is not None:
            # The step-weighted ᾱ the run recorded (rounds weigh by their length).
            chosen = np.asarray(summary["average_weights"], dtype=np.float64)
            self._averaged = "average_weights"
        else:  # a summary written before average_weights existed: mean over the trajectory
            chosen = w.mean(axis=0)
            self._averaged = "trajectory mean (the summary has no average_weights)"
        return domains, chosen, _source_fp(summary)

    def _fingerprint_problem(self, source_fp: str | None) -> str | None:
        mine = self.ctx.domain_fingerprint
        self.transfer["fingerprint"] = {"source": source_fp, "run": mine}
        if source_fp is None or mine is None or source_fp == mine:
            return None
        message = (
            f"its domains were defined by {source_fp}, this run's by {mine} (a different "
            "Regroup clustering or data.domain_field: equal names need not mean equal domains)"
        )
        if self.check_fingerprint:
            return (
                f"{message}; use a source run with the same regroup / data config, or set "
                "strategy.check_fingerprint=false to transfer by name anyway"
            )
        log.warning("%s; transferring by name (strategy.check_fingerprint=false)", message)
        return None

    # ------------------------------------------------------------------ matching
    def initial_weights(self) -> np.ndarray:
        names, w, source_fp = self._resolve()
        where = (
            "strategy.weights"
            if self.weights is not None
            else f"strategy.from_summary='{self.from_summary}'"
        )
        # sum_given: of the weights as given; sum_matched: over this run's domains after
        # `fill`, the total that is renormalised to 1.
        self.transfer = {"source": where, "fill": self.fill, "sum_given": float(np.sum(w))}
        if self.average and self.from_summary is not None:
            self.transfer["average"] = self._averaged
        m = self.ctx.num_domains
        problems = [] if self.weights is not None else [self._fingerprint_problem(source_fp)]
        if names is not None:
            w, mismatch = self._match(names, w, where)
            problems.append(mismatch)
        elif w.shape != (m,):
            problems.append(
                f"expected {m} weights (one per domain: {self.ctx.domain_names}), got {w.shape[0]}"
            )
        problems = [p for p in problems if p]
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"{where}: weights must be finite, >= 0, not all 0 over this run's domains; "
                f"got {dict(zip(self.ctx.domain_names, w.tolist(), strict=True))}"
            )
        total = float(w.sum())
        if not np.isclose(total, 1.0):
            log.info("%s: weights sum to %.6g; renormalised to 1", where, total)
        self.transfer["sum_matched"] = total
        return w / total

    def _match(self, names: list[str], w: np.ndarray, where: str) -> tuple[np.ndarray, str | None]:
        """Weights in this run's domain order per ``fill``, and the mismatch (``fill=error``)."""
        run = self.ctx.domain_names
        lookup = dict(zip(names, w, strict=True))
        missing = [n for n in run if n not in lookup]
        extra = [n for n in names if n not in set(run)]
        self.transfer.update(missing=missing, extra=extra)
        known = np.array([lookup.get(n, 0.0) for n in run], dtype=np.float64)
        if not missing and not extra:
            return known, None
        if self.fill == "error":
            return known, (
                f"the weights do not match this run's domains: missing {missing} (domains of "
                f"this run without a weight), extra {extra} (weighted domains this run lacks); "
                f"this run's domains are {run}. Set strategy.fill=zero (missing domains get 0) or "
                "strategy.fill=uniform (each missing domain gets 1/m) to transfer anyway"
            )
        dropped = float(sum(lookup[n] for n in extra))
        if self.fill == "zero":
            out = known
        else:  # uniform: missing domains get 1/m each, the others share what is left
            share, total = 1.0 - len(missing) / len(run), known.sum()
            out = known * (share / total) if total > 0 else np.zeros(len(run))
            out[[run.index(n) for n in missing]] = 1.0 / len(run)
        self.transfer.update(
            dropped_weight=dropped, filled={n: float(out[run.index(n)]) for n in missing}
        )
        log.warning(
            "%s: strategy.fill=%s: missing domains %s get %s; extra domains %s dropped "
            "(weight %.4g); the rest renormalised",
            where,
            self.fill,
            missing,
            "0" if self.fill == "zero" else f"1/m = {1.0 / len(run):.4g}",
            extra,
            dropped,
        )
        return out, None

    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        return np.asarray(weights)


def _source_fp(summary: dict[str, Any]) -> str | None:
    """The domain fingerprint of a previous run, from its summary (``None`` if unknown)."""
    regroup = summary.get("regroup") or {}
    data = (summary.get("config") or {}).get("data")
    if regroup.get("fingerprint") is None and data is None:
        return None  # neither a Regroup fingerprint nor the config: nothing to compare
    return MixtureContext.domain_definition(
        data.get("domain_field") if data else None, regroup.get("fingerprint")
    )
