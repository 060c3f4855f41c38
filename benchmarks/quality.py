"""Eval loss of R&B vs stratified sampling on the built-in testbed (mean ± std over seeds).

Arms (same steps, model and data per seed):
  rnb/regrouped         strategy=rnb,        regroup=kmeans (default embedder + k sweep)
  stratified/regrouped  strategy=stratified, regroup=kmeans
  stratified/predefined strategy=stratified, regroup=none (the 6 coarse categories)
  rnb/predefined        strategy=rnb,        regroup=none
  natural/predefined    strategy=natural,    regroup=none

Usage: python benchmarks/quality.py [--seeds 0 1 2] [--out DIR] [--arms ...] [hydra overrides ...]
Runs are written under --out (summary.json each) and can be re-analysed with
notebooks/analyze_runs.ipynb.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rnb.config import compose
from rnb.report.aggregate import load_runs
from rnb.train import train

ARMS = {
    "rnb/regrouped": ["strategy=rnb", "regroup=kmeans"],
    "stratified/regrouped": ["strategy=stratified", "regroup=kmeans"],
    "stratified/predefined": ["strategy=stratified", "regroup=none"],
    "rnb/predefined": ["strategy=rnb", "regroup=none"],
    "natural/predefined": ["strategy=natural", "regroup=none"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rnb-quality-"))
    for seed in args.seeds:
        for arm in args.arms:
            run_dir = out / arm.replace("/", "__") / f"seed{seed}"
            if (run_dir / "summary.json").exists():
                continue  # resumable benchmark: finished arms are kept
            over = [*ARMS[arm], f"seed={seed}", "trainer.enable_progress_bar=false"]
            if "regroup=kmeans" in ARMS[arm]:
                over.append("regroup.embedder.progress=false")
            over += [f"output_dir={run_dir}", *overrides]
            s = train(compose("train", over))
            print(
                f"{arm:24s} seed {seed}: eval_loss {s['eval_loss']:.4f} (k={len(s['domains'])})",
                flush=True,
            )
    runs = load_runs(out)
    runs["arm"] = [Path(r).parent.name.replace("__", "/") for r in runs["run"]]
    table = (
        runs.groupby("arm")
        .agg(
            eval_loss_mean=("eval_loss", "mean"),
            eval_loss_std=("eval_loss", "std"),
            n=("eval_loss", "size"),
            k=("k", "mean"),
            ari=("ari", "mean"),
            overhead_wall_pct=("overhead_wall_pct", "mean"),
        )
        .sort_values("eval_loss_mean")
    )
    print(f"\nruns in {out}\n")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    (out / "quality_table.json").write_text(
        json.dumps(table.reset_index().to_dict(orient="records"), indent=2)
    )


if __name__ == "__main__":
    main()
