"""``skillit``: Skill-It online data selection over a skills graph (Chen et al. 2023).

"Skill-It! A Data-Driven Skills Framework for Understanding and Training Language
Models" (NeurIPS 2023), Alg. 1 (online data selection); reference code
github.com/HazyResearch/skill-it (``trainer/skillit_trainer.py``). Each round ``t`` the
per-skill eval losses ``L_t`` are measured and

    p_t ∝ exp(η · A · Σ_{τ=t−w+1..t} L_τ)          (η = 0.2, w = 3; Alg. 1)

recomputed from the uniform prior every round (not cumulative). ``A`` is the skills graph
(:mod:`rnb.balance.skills_graph`): ``graph: estimate`` runs one sandboxed detour per domain
of ``graph_steps`` steps from the initial model, ``A_ij = (L_j(start) − L_j(end_i)) /
L_j(start)`` (§3.2, App. C.2); ``graph: <path.npy>`` loads one; ``graph: identity`` is the
no-transfer ablation (each skill helps itself only).

Deviations and choices: skills are this run's domains and the eval skills are the same
domains (the paper's "evaluation skills" may differ); ``L`` is the mean loss on the fixed
stratified probe subset (``balance.probe.eval_size``), not a full evaluation; ``L_0``
comes from a probe evaluation of the initial model before the first step (with
``estimate`` it is the graph runs' start evaluation), so ``p_0`` already follows Alg. 1;
a domain without probe examples contributes loss 0. Graph runs train with AdamW from the
run's own optimizer state at ``graph_lr`` (the paper trains separate short runs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from rnb.balance.detour_plan import Detour, DetourResult
from rnb.balance.skills_graph import estimate_graph, graph_path, load_graph, save_graph
from rnb.balance.strategies.base import MixingStrategy, MixtureContext, RoundStats

__all__ = ["SkillIt", "skillit_weights"]


def skillit_weights(A: np.ndarray, losses: np.ndarray, eta: float) -> np.ndarray:
    """``p ∝ exp(η · A · L)`` for summed window losses ``L [m]`` (nan counted as 0).

    Args:
        A: ``[m, m]`` skills graph (row = trained skill).
        losses: ``[m]`` eval losses summed over the window.
        eta: step size ``η``.

    Returns:
        ``[m]`` float64 on the simplex.
    """
    score = eta * (A @ np.nan_to_num(losses, nan=0.0))
    z = np.exp(score - score.max())
    return z / z.sum()


class SkillIt(MixingStrategy):
    """Skill-It: mixture from eval losses propagated through a skills graph.

    Args:
        graph: ``"estimate"``, ``"identity"`` or the path of an ``[m, m]`` ``.npy``.
        graph_steps: steps of each sandboxed single-domain run (``graph: estimate``).
        graph_lr: learning rate of those runs: ``"peak"`` (``model.lr``), ``"current"``
            (the warm-up rate at step 0) or a number.
        binary_off_diagonal: for a loaded 0/1 graph, the value its off-diagonal ones get
            (0.5 in the Skill-It code); ``None`` keeps the file as is.
        eta: ``η``.
        window: ``w``, the number of most recent evaluations summed.
        save_graph: write ``skills_graph.npy`` / ``.png`` into the run dir.

    Raises:
        ValueError: a bad ``graph`` spec, ``graph_steps < 1``, ``eta`` not finite or
            ``window < 1`` (the message names the key).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"eval_loss"})

    def __init__(
        self,
        graph: str = "estimate",
        graph_steps: int = 20,
        graph_lr: float | str = "peak",
        binary_off_diagonal: float | None = None,
        eta: float = 0.2,
        window: int = 3,
        save_graph: bool = True,
    ) -> None:
        if not isinstance(graph, str) or not graph:
            raise ValueError(
                f"strategy.graph: 'estimate', 'identity' or a .npy path, got {graph!r}"
            )
        if int(graph_steps) < 1:
            raise ValueError(f"strategy.graph_steps must be >= 1, got {graph_steps}")
        if not np.isfinite(float(eta)):
            raise ValueError(f"strategy.eta must be finite, got {eta}")
        if int(window) < 1:
            raise ValueError(f"strategy.window must be >= 1, got {window}")
        if binary_off_diagonal is not None and graph in ("estimate", "identity"):
            raise ValueError("strategy.binary_off_diagonal applies to a loaded graph (a path)")
        Detour(steps=1, domain=0, lr=graph_lr)  # validates graph_lr early
        if graph not in ("estimate", "identity"):
            graph_path(graph)  # a typo fails at build time, before data prep and evaluation
        self.graph = graph
        self.graph_steps = int(graph_steps)
        self.graph_lr = graph_lr
        self.binary_off_diagonal = binary_off_diagonal
        self.eta = float(eta)
        self.window = int(window)
        self.save_graph = bool(save_graph)
        self._A: np.ndarray | None = None
        self._history: list[np.ndarray] = []

    def setup(self, ctx: MixtureContext) -> None:
        super().setup(ctx)
        if self.graph != "estimate":
            self._A = load_graph(self.graph, ctx.domain_names, self.binary_off_diagonal)
            self._save()

    @property
    def skills_graph(self) -> np.ndarray | None:
        """``A`` (``None`` until estimated)."""
        return None if self._A is None else self._A.copy()

    def _save(self) -> None:
        if self.save_graph and self.ctx.output_dir is not None and self._A is not None:
            save_graph(self._A, self.ctx.domain_names, self.ctx.output_dir)

    # ------------------------------------------------------------------ detours
    def plan_detours(self, stats: RoundStats | None, weights: np.ndarray) -> list[Detour]:
        """Before the first step: the graph runs (``estimate``) or an evaluation of ``L_0``."""
        if stats is not None or self._history:
            return []
        if self.graph == "estimate":
            return [
                Detour(self.graph_steps, "sandboxed", domain=i, lr=self.graph_lr, tag=f"graph/{i}")
                for i in range(self.ctx.num_domains)
            ]
        return [Detour(0, "sandboxed", domain=0, tag="initial_eval")]

    def detours_done(self, results: list[DetourResult], weights: np.ndarray) -> np.ndarray:
        """Build ``A`` from the graph runs (``estimate``); ``p_0`` from ``L_0``."""
        if self.graph == "estimate":
            self._A = estimate_graph(results, self.ctx.num_domains)
            self._save()
        return self._push(np.asarray(results[0].before, dtype=np.float64), "the initial model")

    # ------------------------------------------------------------------ rounds
    def update(self, stats: RoundStats, weights: np.ndarray) -> np.ndarray:
        if "eval_loss" not in stats.extra:
            raise KeyError("skillit needs RoundStats.extra['eval_loss'] (the eval_loss service)")
        loss = stats.extra["eval_loss"]
        loss = loss.double().cpu().numpy() if isinstance(loss, torch.Tensor) else np.asarray(loss)
        return self._push(loss.astype(np.float64), f"round {stats.round}")

    def _push(self, loss: np.ndarray, when: str) -> np.ndarray:
        bad = np.flatnonzero(np.isinf(loss))
        if bad.size:
            name = self.ctx.domain_names[int(bad[0])]
            raise ValueError(
                f"skillit: probe eval loss of domain {name!r} is {loss[bad[0]]} at {when}; "
                "the model diverged (lower model.lr) or the probe is empty "
                "(balance.probe.eval_size)"
            )
        if self._A is None:
            raise RuntimeError("skillit: no skills graph yet (graph estimation did not run)")
        self._history = [*self._history, loss][-self.window :]
        return skillit_weights(
            self._A, np.sum(np.nan_to_num(self._history, nan=0.0), axis=0), self.eta
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "graph": None if self._A is None else self._A.tolist(),
            "history": [[float(x) for x in h] for h in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("graph") is not None:
            self._A = np.asarray(state["graph"], dtype=np.float64)
        self._history = [np.asarray(h, dtype=np.float64) for h in state.get("history", [])]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["skills_graph"] = None if self._A is None else self._A.tolist()
        return out
