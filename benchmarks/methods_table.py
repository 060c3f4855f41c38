"""Every mixing strategy on the default config: eval loss and overhead (R&B paper Table 1 form).

For each seed and each grouping (``predefined``: the testbed's 6 categories, ``regroup=none``;
``regrouped``: ``regroup=kmeans``, the default embedder and k sweep), every method trains the
default job (240 steps). The table reports eval loss mean ± std over seeds and the
overhead each strategy's mixing work adds: analytic FLOPs as % of training FLOPs (``6·N·D``)
and metered wall time as % of step time, both from each run's ``summary.json``
(``overhead``). DoReMi takes the same seed's ``stratified`` run as its reference model
(its cost, one whole extra training run, is not in its FLOPs %; see the ``extra run``
column) and ``doremi→final`` trains on DoReMi's time-averaged ``ᾱ`` (the paper's 3rd stage).

Usage:
    python benchmarks/methods_table.py [hydra overrides ...] [--out DIR] [--no-run]
        [--seeds 0 1 2] [--methods ...] [--groupings ...]

Resumable: runs with a ``summary.json`` under ``--out`` are kept; ``--no-run`` only tabulates
what is there (cells count the seeds they hold). Prints a Markdown table and writes
``methods_table.md`` / ``methods_table.json`` into ``--out``. Hydra overrides go before the
``--methods`` / ``--seeds`` / ``--groupings`` lists (which take every word after them).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnb.config import compose
from rnb.train import train

GROUPINGS = {"predefined": ["regroup=none"], "regrouped": ["regroup=kmeans"]}
#: method -> (overrides, needs a reference run, extra full training runs it costs)
METHODS: dict[str, list[str]] = {
    "stratified": ["strategy=stratified"],
    "natural": ["strategy=natural"],
    "unimax": ["strategy=unimax"],
    "odm": ["strategy=odm"],
    "doremi": ["strategy=doremi"],
    "doremi→final": ["strategy=static", "strategy.average=true"],
    "dga": ["strategy=dga"],
    "doge": ["strategy=doge"],
    "skillit": ["strategy=skillit"],
    "aioli": ["strategy=aioli"],
    "aioli_paper": ["strategy=aioli_paper"],
    "rnb": ["strategy=rnb"],
}
EXTRA_RUNS = {"doremi": 1, "doremi→final": 2}  # reference (+ proxy) runs before it


def _run_dir(out: Path, grouping: str, method: str, seed: int) -> Path:
    return out / grouping / method.replace("→", "_to_") / f"seed{seed}"


def _overrides(out: Path, grouping: str, method: str, seed: int) -> list[str]:
    over = [*GROUPINGS[grouping], *METHODS[method], f"seed={seed}"]
    if method == "doremi":
        over.append(f"strategy.reference={_run_dir(out, grouping, 'stratified', seed)}")
    if method == "doremi→final":
        proxy = _run_dir(out, grouping, "doremi", seed) / "summary.json"
        over.append(f"strategy.from_summary={proxy}")
    if grouping == "regrouped":
        over.append("regroup.embedder.progress=false")
    return [*over, "trainer.enable_progress_bar=false"]


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def table(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    groupings: list[str],
    n_seeds: int | None = None,
) -> str:
    """Markdown table: one row per method; per grouping eval loss, FLOPs % and wall %.

    Overhead is reported per grouping because it grows with the number of domains ``m``
    (probe batches, detours). A cell averaging fewer completed runs than ``n_seeds`` says how
    many it holds.
    """
    head = ["method"]
    for g in groupings:
        head += [f"eval loss ({g})", f"FLOPs % ({g})", f"wall % ({g})"]
    head += ["extra runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, per_group in results.items():
        cells = [method]
        for g in groupings:
            runs = per_group.get(g, [])
            ok = [r for r in runs if r.get("status", "completed") == "completed"]
            cell = _fmt([r["eval_loss"] for r in ok])
            if len(ok) < len(runs):
                cell += f" ({len(runs) - len(ok)} failed)"
            if n_seeds is not None and 0 < len(ok) < n_seeds:
                cell += f" ({len(ok)} of {n_seeds} seeds)"
            cells.append(cell)
            cells.append(_fmt([r["overhead"]["flops_pct"] for r in ok], 2))
            cells.append(_fmt([r["overhead"]["wall_pct"] for r in ok], 2))
        cells.append(str(EXTRA_RUNS.get(method, 0)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--groupings", nargs="+", default=list(GROUPINGS), choices=list(GROUPINGS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-run", action="store_true", help="tabulate the runs under --out; train nothing"
    )
    args, overrides = parser.parse_known_args()
    if args.no_run and args.out is None:
        parser.error("--no-run tabulates an earlier --out: give --out")
    out = args.out or Path(tempfile.mkdtemp(prefix="rnb-methods-"))
    methods = list(args.methods)
    # DoReMi needs the same seed's stratified run as reference; its final stage the proxy run
    for need, by in (("doremi", "doremi→final"), ("stratified", "doremi")):
        if by in methods and need not in methods:
            methods.insert(0, need)
    methods.sort(key=list(METHODS).index)
    for seed in args.seeds:
        for grouping in args.groupings:
            for method in methods:
                run_dir = _run_dir(out, grouping, method, seed)
                if args.no_run or (run_dir / "summary.json").exists():
                    continue
                over = [*_overrides(out, grouping, method, seed), f"output_dir={run_dir}"]
                t0 = time.perf_counter()
                try:
                    s = train(compose("train", [*over, *overrides]))
                except Exception as err:  # recorded in the run's summary.json; keep going
                    print(f"{grouping:10s} {method:14s} seed {seed}: FAILED {err}", flush=True)
                    continue
                print(
                    f"{grouping:10s} {method:14s} seed {seed}: eval_loss {s['eval_loss']:.4f} "
                    f"flops {s['overhead']['flops_pct']:.2f}% wall {s['overhead']['wall_pct']:.2f}% "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for method in methods:
        for grouping in args.groupings:
            for seed in args.seeds:
                path = _run_dir(out, grouping, method, seed) / "summary.json"
                if path.exists():
                    s = json.loads(path.read_text(encoding="utf-8"))
                    results.setdefault(method, {}).setdefault(grouping, []).append(s)
    md = table(results, list(args.groupings), n_seeds=len(args.seeds))
    print(f"\nruns in {out}\n\n{md}")
    (out / "methods_table.md").write_text(md + "\n", encoding="utf-8")
    flat = {
        m: {
            g: [
                {
                    "seed": r["seed"],
                    "status": r.get("status"),
                    "eval_loss": r["eval_loss"],
                    "overhead": r["overhead"],
                    "k": len(r["domains"]),
                }
                for r in runs
            ]
            for g, runs in per.items()
        }
        for m, per in results.items()
    }
    (out / "methods_table.json").write_text(
        json.dumps(flat, indent=2, default=lambda x: None if math.isnan(x) else x),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
