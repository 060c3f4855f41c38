"""Sketched vs exact Gram matrices on real training gradients.

One training run; two extra captures (exact and sketch) ride on the same head hooks, so
both see identical gradients. At the end of every round the script compares the Gram
matrices (relative Frobenius error) and the R&B mixtures they induce (total-variation
distance), then resets both.

Usage: python benchmarks/sketch_accuracy.py [--steps 200] [--round 25] [--sketch-out 1024]
       [--sketch-in 128] [--rows-per-example N] [hydra overrides ...]
Goal at the default sketch size: Frobenius error <= 5 %, TV(p) <= 0.02.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch

from rnb.balance.grads import HeadGradientCapture
from rnb.balance.rnb_math import gram_matrix, rnb_weights
from rnb.config import compose
from rnb.train import build_run


class Compare(L.Callback):
    """Feeds the same batches to an exact and a sketched capture and compares rounds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[tuple[int, float, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        m, head = dm.num_domains, pl_module.head
        self.q = torch.as_tensor(dm.eval_proportions)
        self.exact = HeadGradientCapture(head, m, mode="exact")
        self.sketch = HeadGradientCapture(
            head, m, mode="sketch", sketch_out=self.args.sketch_out,
            sketch_in=self.args.sketch_in, rows_per_example=self.args.rows_per_example,
        )  # fmt: skip
        self.exact.attach()
        self.sketch.attach()
        self.counts = torch.zeros(m, dtype=torch.float64)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        mask = pl_module.head_row_mask(batch)
        self.exact.set_batch(batch["domain"], row_mask=mask)
        self.sketch.set_batch(batch["domain"], row_mask=mask)
        self.counts += torch.bincount(batch["domain"].cpu(), minlength=len(self.counts)).double()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.args.round:
            return
        g_e = gram_matrix(self.exact.accumulators, self.counts)
        g_s = gram_matrix(self.sketch.accumulators, self.counts)
        fro = float(torch.linalg.norm(g_s - g_e) / torch.linalg.norm(g_e))
        p_e = rnb_weights(g_e, self.q, self.args.lam).p
        p_s = rnb_weights(g_s, self.q, self.args.lam).p
        tv = float(0.5 * (p_e - p_s).abs().sum())
        self.rows.append((step, fro, tv))
        print(
            f"step {step:5d}  rel. Frobenius error {100 * fro:6.2f} %  TV(p) {tv:.4f}", flush=True
        )
        self.exact.reset()
        self.sketch.reset()
        self.counts.zero_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--round", type=int, default=25)
    parser.add_argument("--sketch-out", type=int, default=1024)
    parser.add_argument("--sketch-in", type=int, default=128)
    parser.add_argument("--rows-per-example", type=int, default=None)
    parser.add_argument("--lam", type=float, default=3.0)
    args, overrides = parser.parse_known_args()
    out = Path(tempfile.mkdtemp(prefix="rnb-sketch-"))
    cfg = compose(
        "train",
        [
            f"trainer.max_steps={args.steps}",
            "trainer.val_check_interval=100000",
            "trainer.enable_progress_bar=false",
            "logger=none",
            "initial_eval=false",
            f"output_dir={out}",
            *overrides,
        ],
    )
    run = build_run(cfg, out)
    head = run["model"].head
    cmp_cb = Compare(args)
    run["trainer"].callbacks.insert(0, cmp_cb)
    run["trainer"].fit(run["model"], datamodule=run["datamodule"])
    rows = np.array([(f, t) for _, f, t in cmp_cb.rows])
    m = run["datamodule"].num_domains
    print(
        f"\nhead V={head.out_features} d={head.in_features}, m={m} domains, "
        f"sketch {args.sketch_out}x{args.sketch_in}, rows/example {args.rows_per_example}, "
        f"{len(rows)} rounds of {args.round} steps"
    )
    print(
        f"rel. Frobenius error of G: mean {100 * rows[:, 0].mean():.2f} %, max {100 * rows[:, 0].max():.2f} % (goal <= 5 %)"
    )
    print(
        f"TV distance of p:         mean {rows[:, 1].mean():.4f}, max {rows[:, 1].max():.4f} (goal <= 0.02)"
    )


if __name__ == "__main__":
    main()
