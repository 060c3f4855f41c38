"""``write_report``: every run under some directories -> ``report.md``, ``report.csv``,
``runs.csv``, ``per_domain.csv`` and ``figures/*.png`` (what ``rnb-report`` writes).

``report.md`` holds the results table in the paper's Table 1 form
(:mod:`rnb.report.tables`), which config keys separate rows (:mod:`rnb.report.groups`),
the k-sweep note (:mod:`rnb.regroup.advice`), the figures (:mod:`rnb.report.plots`,
:mod:`rnb.report.ksweep`), the per-domain eval losses and every run that did not complete,
with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from rnb.regroup.advice import summary_advice
from rnb.report import plots
from rnb.report.groups import Group, group_runs, varying_keys
from rnb.report.ksweep import k_sweep, k_sweep_data
from rnb.report.markdown import md_table
from rnb.report.runs import Run, find_runs
from rnb.report.tables import (
    failed_table,
    per_domain_markdown,
    per_domain_tables,
    results_markdown,
    results_table,
)

__all__ = ["k_notes", "write_report"]

log = logging.getLogger(__name__)


def _run_rows(runs: Sequence[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": str(r.path),
                "status": r.status,
                "strategy": r.strategy,
                "grouping": r.grouping,
                "m": r.m,
                "seed": r.seed,
                "eval_loss": r.number("eval_loss"),
                "flops_pct": r.number("overhead", "flops_pct"),
                "wall_pct": r.number("overhead", "wall_pct"),
                "step": r.failed_at_step,
                "reason": r.reason,
            }
            for r in runs
        ]
    )


def k_notes(groups: Sequence[Group]) -> list[str]:
    """One line per distinct Regroup result (and one for the sweep across runs) whose k sweep
    is at an edge or flat, with the ``regroup.k_values`` to try next."""
    notes, seen = [], set()
    for g in groups:
        for run in g.completed:
            rg = run.summary.get("regroup") or {}
            advice = summary_advice(rg)
            if advice is not None and rg.get("fingerprint") not in seen:
                seen.add(rg.get("fingerprint"))
                notes.append(f"Regroup of `{run.path.name}` ({g.label}): {advice.message}")
    data = k_sweep_data(groups)
    if data is not None and data.advice is not None and data.advice.flagged and len(seen) != 1:
        notes.append(f"Across the runs' sweeps: {data.advice.message}")
    return notes


def _config_section(groups: Sequence[Group]) -> list[str]:
    md = ["## What separates the rows", ""]
    md.append(
        "Runs are averaged only when their resolved configs (`summary.json` `config`) agree "
        "on every key except the seed, the keys that follow it (`${seed}` in "
        "`.hydra/config.yaml`) and where outputs and caches go (`rnb.report.groups.IGNORED_KEYS`; "
        "add more with `rnb-report --ignore KEY`)."
    )
    configs = [
        {k: v for k, v in g.config.items() if not k.startswith(("strategy", "regroup"))}
        for g in groups
    ]
    keys = varying_keys(configs)
    same_label = [g for g in groups if g.differs]
    if same_label:
        md.append(
            "Rows with the same method and grouping differ in: "
            + ", ".join(sorted({f"`{k}`" for g in same_label for k in g.differs}))
            + "."
        )
    if keys:
        md.append(
            "Keys outside `strategy` / `regroup` that differ between rows: "
            + ", ".join(f"`{k}`" for k in keys[:30])
            + (f" and {len(keys) - 30} more" if len(keys) > 30 else "")
            + "."
        )
    return [*md, ""]


def _figure(fig, out: Path, name: str, title: str, saved: list[str]) -> list[str]:
    if fig is None:
        return []
    path = out / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    saved.append(str(path))
    return [f"### {title}", "", f"![{title}](figures/{name}.png)", ""]


def write_report(dirs: Iterable[str | Path], out: str | Path, ignore: Sequence[str] = ()) -> Path:
    """Find every run under ``dirs`` and write the report into ``out``.

    Args:
        dirs: run dirs, multirun dirs or any folders holding them.
        out: the output folder (created).
        ignore: extra config keys (fnmatch patterns) that must not split rows.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: a directory does not exist, or no run was found under ``dirs``.
    """
    dirs = [Path(d) for d in dirs]
    out = Path(out)
    runs = find_runs(dirs)
    if not runs:
        raise FileNotFoundError(
            f"rnb-report: no run (summary.json or an rnb-train job dir) under "
            f"{', '.join(map(str, dirs))}"
        )
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs, ignore)
    table = results_table(groups)
    table.to_csv(out / "report.csv", index=False)
    _run_rows(runs).to_csv(out / "runs.csv", index=False)
    n_done = sum(r.completed for r in runs)
    md = ["# rnb report", ""]
    md.append(
        f"{len(runs)} runs under {', '.join(f'`{d}`' for d in dirs)}: {n_done} completed, "
        f"{len(runs) - n_done} not completed (listed at the end; never averaged)."
    )
    md += ["", "## Results", ""]
    md.append(
        "Eval loss of the final model, mean ± sample std over seeds (completed runs only; "
        "best in bold); FLOPs % = analytic mixing FLOPs / `6·N·D`, wall % = metered mixing "
        "time / step time (`summary.json` `overhead`); m = number of domains."
    )
    md += ["", *results_markdown(table), *_config_section(groups)]
    saved: list[str] = []
    notes = k_notes(groups)
    ks = k_sweep(groups)
    if ks is not None or notes:
        md += ["## Choice of k", ""]
        md += [f"**Note:** {n}" for n in notes] + ([""] if notes else [])
        md += _figure(ks, out, "k_sweep", "Eval loss vs number of clusters and silhouette", saved)
    md += ["## Figures", ""]
    md += _figure(plots.eval_curves(groups), out, "eval_curves", "Eval-loss curves", saved)
    md += _figure(
        plots.mixture_trajectories(groups), out, "trajectories", "Mixture trajectories", saved
    )
    md += _figure(
        plots.weights_vs_eval(groups), out, "weights_vs_eval",
        "Training weight vs eval proportion", saved,
    )  # fmt: skip
    domain_tables = per_domain_tables(groups)
    if domain_tables:
        md += ["## Per-domain eval loss", ""]
        md.append("Mean over seeds; lowest per domain in bold; q = the domain's eval share.")
        md.append("")
        long = []
        for definition, frame in domain_tables.items():
            md += [f"### Domains: {definition}", "", *per_domain_markdown(frame)]
            long.append(
                frame.reset_index()
                .melt(["domain", "q"], var_name="row", value_name="eval_loss")
                .assign(definition=definition)
            )
        pd.concat(long).to_csv(out / "per_domain.csv", index=False)
    failed = failed_table(runs)
    md += ["## Runs that did not complete", ""]
    if failed.empty:
        md += ["None: every run completed.", ""]
    else:
        md += md_table(
            list(failed.columns), failed.astype(object).where(failed.notna(), None).values.tolist()
        )
    report = out / "report.md"
    report.write_text("\n".join(md), encoding="utf-8")
    log.info("rnb-report: %s (%d figures)", report, len(saved))
    return report
