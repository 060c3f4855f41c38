"""Skill-It's skills graph ``A``: estimate from detour results, load, validate, save, plot.

``A_ij`` says how much training on skill (domain) ``i`` lowers the loss of skill ``j``
(Chen et al. 2023, "Skill-It! A Data-Driven Skills Framework for Understanding and
Training Language Models", NeurIPS 2023, §3.2 and App. C.2; reference code
github.com/HazyResearch/skill-it). Estimated from short single-skill runs from the same
start: ``A_ij = (L_j(start) − L_j(end_i)) / L_j(start)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnb.balance.detour_plan import DetourResult

__all__ = ["estimate_graph", "load_graph", "save_graph"]


def estimate_graph(results: Sequence[DetourResult], m: int) -> np.ndarray:
    """``A [m, m]`` from ``m`` single-domain detours that started from the same model.

    Row ``i`` comes from the detour that trained on domain ``i``: the relative drop of
    every domain's probe loss. A domain without probe examples (``nan`` loss) or with a
    zero start loss gets a column of zeros (no evidence either way).

    Raises:
        ValueError: the results do not hold exactly one single-domain detour per domain.
    """
    rows = {int(r.detour.domain): r for r in results if r.detour.domain is not None}
    if sorted(rows) != list(range(m)) or len(results) != m:
        raise ValueError(
            f"skills-graph estimation needs one single-domain detour per domain 0..{m - 1}, "
            f"got domains {sorted(rows)} in {len(results)} results"
        )
    A = np.zeros((m, m))
    for i, r in rows.items():
        start, end = r.before, r.after
        ok = np.isfinite(start) & np.isfinite(end) & (start > 0)
        A[i, ok] = (start[ok] - end[ok]) / start[ok]
    return A


def graph_path(spec: str) -> Path:
    """The file of a ``strategy.graph`` path spec (not ``estimate``/``identity``).

    Raises:
        ValueError: no such file (the message names ``strategy.graph`` and the choices).
    """
    path = Path(os.path.expanduser(str(spec)))
    if not path.is_file():
        raise ValueError(
            f"strategy.graph={spec!r}: no such file; use 'estimate', 'identity' or the "
            "path of an [m, m] .npy (e.g. another run's skills_graph.npy)"
        )
    return path


def load_graph(
    spec: str, names: Sequence[str], binary_off_diagonal: float | None = None
) -> np.ndarray:
    """``A`` from ``strategy.graph``: ``"identity"`` or a path to an ``[m, m]`` ``.npy``.

    Args:
        spec: ``"identity"`` (the no-transfer ablation: each skill helps only itself) or
            the path of a saved graph (e.g. another run's ``skills_graph.npy``).
        names: the run's domain names (rows/columns in this order).
        binary_off_diagonal: for a 0/1 graph, the value of its off-diagonal ones (the
            Skill-It code uses 0.5 for hand-made binary graphs); ``None`` keeps the file.

    Raises:
        ValueError: a missing or unreadable file, a wrong shape or non-finite entries (the
            message names ``strategy.graph``).
    """
    m = len(names)
    if spec == "identity":
        return np.eye(m)
    path = graph_path(spec)
    try:
        A = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (ValueError, OSError) as err:
        raise ValueError(f"strategy.graph={spec!r}: not a readable .npy array ({err})") from err
    if A.shape != (m, m):
        raise ValueError(
            f"strategy.graph={spec!r}: shape {A.shape}, but this run has {m} domains "
            f"{list(names)}: the graph needs shape ({m}, {m}) in that order"
        )
    bad = np.argwhere(~np.isfinite(A))
    if bad.size:
        i, j = (int(x) for x in bad[0])
        raise ValueError(
            f"strategy.graph={spec!r}: entry [{i}, {j}] ({names[i]} -> {names[j]}) is "
            f"{A[i, j]}; every entry must be finite"
        )
    if binary_off_diagonal is not None:
        if not np.isin(A, (0.0, 1.0)).all():
            raise ValueError(
                f"strategy.binary_off_diagonal={binary_off_diagonal} applies to 0/1 graphs, "
                f"but strategy.graph={spec!r} has other values; set it to null"
            )
        off = (A == 1.0) & ~np.eye(m, dtype=bool)
        A[off] = float(binary_off_diagonal)
    return A


def save_graph(A: np.ndarray, names: Sequence[str], out_dir: Path) -> tuple[Path, Path]:
    """Write ``skills_graph.npy`` and a heat map ``skills_graph.png`` into ``out_dir``.

    Written through a per-process temporary file and an atomic rename, so ranks writing
    the same graph at once never leave a torn file.

    Returns:
        ``(npy path, png path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    npy, png = out_dir / "skills_graph.npy", out_dir / "skills_graph.png"
    tmp = out_dir / f".skills_graph.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, A)
    tmp.replace(npy)
    m = len(names)
    fig = Figure(figsize=(1.2 + 0.55 * m, 1.0 + 0.5 * m), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    lim = float(np.abs(A).max()) or 1.0
    im = ax.imshow(A, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(m), list(names), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(m), list(names), fontsize=7)
    ax.set_xlabel("evaluated skill j")
    ax.set_ylabel("trained skill i")
    for i in range(m):
        for j in range(m):
            ax.text(j, i, f"{A[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("skills graph A_ij: relative loss drop of j after training on i", fontsize=8)
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(png)
    return npy, png
