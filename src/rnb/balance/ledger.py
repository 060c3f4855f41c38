"""Per-domain bookkeeping of what a run actually drew: tokens, repetitions, starvation.

Target weights say what a strategy asked for; users need what the sampler delivered
(baselines.md, "what users of mixing tools ask for most"): tokens and examples drawn per
domain, how often each domain's data was repeated (epochs), and which domains a strategy
starved. A domain is *starved* when it got under ``starve_share`` of a round's draws for
``starve_rounds`` consecutive rounds (R&B at a large ``λ`` and DoReMi can go one-hot and
stay there: a domain that is never drawn produces no signal to come back). A share is judged
over at least ``1 / starve_share`` draws: rounds with fewer (ODM and DoReMi update every
step; a step of 8 examples misses a domain at 10 % by chance 43 % of the time) are merged
with the next ones until the window holds that many, so ``starve_rounds`` counts windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DomainLedger", "round_metrics", "time_average"]

log = logging.getLogger(__name__)


def time_average(trajectory: Sequence[dict[str, Any]], final_step: int) -> list[float] | None:
    """Time-averaged mixture ``ᾱ = (1/T) Σ_t α_t`` over the optimizer steps of a run.

    Each trajectory entry ``{"step": s, "weights": α}`` holds from step ``s`` until the
    next entry (the last until ``final_step``), so rounds weigh by how many steps they
    lasted. This is the output of DoReMi (Xie et al. 2023, Alg. 1, "return ᾱ") and DoGE
    (Fan et al. 2024, §3) used to train the final model.

    Returns:
        ``[m]`` weights summing to 1, or ``None`` for an empty trajectory. When no step was
        taken (``final_step`` at the first entry) it is the first mixture.
    """
    if not trajectory:
        return None
    steps = [int(t["step"]) for t in trajectory] + [
        max(int(final_step), int(trajectory[-1]["step"]))
    ]
    w = np.asarray([t["weights"] for t in trajectory], dtype=np.float64)
    durations = np.diff(np.asarray(steps, dtype=np.float64))
    if durations.sum() <= 0:
        return [float(x) for x in w[0]]
    avg = (durations[:, None] * w).sum(axis=0) / durations.sum()
    return [float(x) for x in avg / avg.sum()]


def round_metrics(
    names: Sequence[str], weights: np.ndarray, rows: dict[str, Any]
) -> dict[str, float]:
    """Per-round log entries: target ``balance/weight/<d>``, and what the sampler delivered,
    ``balance/tokens/<d>`` and ``balance/train_loss/<d>`` (domains drawn this round)."""
    metrics = {f"balance/weight/{n}": float(w) for n, w in zip(names, weights, strict=True)}
    counts, loss_sum, tokens = rows["counts"], rows["loss_sum"], rows["tokens"]
    for i, n in enumerate(names):
        metrics[f"balance/tokens/{n}"] = float(tokens[i])
        if counts[i] > 0:
            metrics[f"balance/train_loss/{n}"] = float(loss_sum[i] / counts[i])
    return metrics


class DomainLedger:
    """Cumulative draws per domain over a run and the starvation check per round.

    Args:
        domain_names: the ``m`` domain names.
        domain_sizes: training examples per domain (for ``epochs_per_domain``).
        starve_share: a round share of draws under this counts as starved (default 1 %).
        starve_rounds: consecutive starved rounds (windows of at least ``1/starve_share``
            draws) before a domain is reported.
    """

    def __init__(
        self,
        domain_names: Sequence[str],
        domain_sizes: Sequence[int] | np.ndarray,
        starve_share: float = 0.01,
        starve_rounds: int = 3,
    ) -> None:
        self.names = list(domain_names)
        self.sizes = np.asarray(domain_sizes, dtype=np.float64)
        self.starve_share = float(starve_share)
        self.starve_rounds = int(starve_rounds)
        m = len(self.names)
        self.tokens = np.zeros(m)
        self.examples = np.zeros(m)
        self.streak = np.zeros(m, dtype=np.int64)
        # draws of rounds too small to measure a `starve_share` share, merged with the next
        self.window = np.zeros(m)
        self.min_draws = math.ceil(1.0 / self.starve_share) if self.starve_share > 0 else 1
        self.starved: dict[str, int] = {}  # name -> round at which it was first reported

    def add_round(self, round_index: int, drawn: np.ndarray, tokens: np.ndarray) -> None:
        """Fold one round's (rank-summed) draws in and update the starvation streaks."""
        drawn = np.asarray(drawn, dtype=np.float64)
        self.examples += drawn
        self.tokens += np.asarray(tokens, dtype=np.float64)
        self.window += drawn
        total = self.window.sum()
        if total < self.min_draws:
            return
        low = self.window / total < self.starve_share
        self.window = np.zeros_like(self.window)
        self.streak = np.where(low, self.streak + 1, 0)
        for i in np.flatnonzero(self.streak >= self.starve_rounds):
            name = self.names[i]
            if name not in self.starved:
                self.starved[name] = int(round_index)
                log.warning(
                    "domain %r got under %.1f%% of the draws for %d rounds in a row (round %d): "
                    "the strategy starves it (see summary.json starved_domains; R&B: "
                    "strategy.unsampled=carry or a smaller strategy.lambda_ / min_weight)",
                    name,
                    100 * self.starve_share,
                    self.starve_rounds,
                    round_index,
                )

    def summary(
        self, tail_drawn: np.ndarray | None = None, tail_tokens: np.ndarray | None = None
    ) -> dict[str, Any]:
        """``tokens_per_domain``, ``examples_per_domain``, ``epochs_per_domain`` (draws /
        domain size: how many times each domain's data was seen) and ``starved_domains``,
        including the draws of an unfinished last round (``tail_*``)."""
        examples = self.examples + (0 if tail_drawn is None else np.asarray(tail_drawn))
        tokens = self.tokens + (0 if tail_tokens is None else np.asarray(tail_tokens))
        epochs = np.divide(examples, self.sizes, out=np.zeros_like(examples), where=self.sizes > 0)
        return {
            "tokens_per_domain": {
                n: round(float(t)) for n, t in zip(self.names, tokens, strict=True)
            },
            "examples_per_domain": {
                n: round(float(e)) for n, e in zip(self.names, examples, strict=True)
            },
            "epochs_per_domain": {n: float(e) for n, e in zip(self.names, epochs, strict=True)},
            "starved_domains": sorted(self.starved, key=lambda n: self.names.index(n)),
            "starved_since_round": dict(self.starved),
        }

    def state_dict(self) -> dict[str, Any]:
        """Totals and streaks (plain lists: loadable with ``weights_only=True``)."""
        return {
            "tokens": self.tokens.tolist(),
            "examples": self.examples.tolist(),
            "streak": self.streak.tolist(),
            "window": self.window.tolist(),
            "starved": dict(self.starved),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.tokens = np.asarray(state["tokens"], dtype=np.float64)
        self.examples = np.asarray(state["examples"], dtype=np.float64)
        self.streak = np.asarray(state["streak"], dtype=np.int64)
        self.window = np.asarray(state.get("window", np.zeros_like(self.window)), dtype=np.float64)
        self.starved = {str(k): int(v) for k, v in state["starved"].items()}
