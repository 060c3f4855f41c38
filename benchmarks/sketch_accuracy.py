"""Sketched vs exact Gram matrices on real training gradients.

One training run; two extra captures (exact and sketch) ride on the same head hooks, so
both see identical gradients. At the end of every round the script compares the Gram
matrices (relative Frobenius error) and the R&B mixtures they induce (total-variation
distance), then resets both.

Usage: python benchmarks/sketch_accuracy.py [--steps 200] [--round 25] [--sketch 512x256,1024x128]
       [--rows-per-example N] [hydra overrides ...]
Several sketch sizes (``OUTxIN``) are compared on the same gradients in one run.
Goal at the default sketch size: Frobenius error <= 5 %, TV(p) <= 0.02.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch

from rnb.balance.capture import HeadGradientCapture
from rnb.balance.rnb_math import gram_matrix, rnb_weights
from rnb.config import compose
from rnb.train import build_run


class Compare(L.Callback):
    """Feeds the same batches to an exact and a sketched capture and compares rounds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = [tuple(int(x) for x in s.split("x")) for s in args.sketch]
        self.rows: dict[str, list[tuple[float, float]]] = {s: [] for s in args.sketch}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        m, head = dm.num_domains, pl_module.head
        self.q = torch.as_tensor(dm.eval_proportions)
        self.exact = HeadGradientCapture(head, m, mode="exact")
        self.sketches = {
            name: HeadGradientCapture(
                head, m, mode="sketch", sketch_out=k_out, sketch_in=k_in,
                rows_per_example=self.args.rows_per_example,
            )
            for name, (k_out, k_in) in zip(self.args.sketch, self.sizes, strict=True)
        }  # fmt: skip
        self.exact.attach()
        for cap in self.sketches.values():
            cap.attach()
        self.counts = torch.zeros(m, dtype=torch.float64)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        mask = pl_module.head_row_mask(batch)
        self.exact.set_batch(batch["domain"], row_mask=mask)
        for cap in self.sketches.values():
            cap.set_batch(batch["domain"], row_mask=mask)
        self.counts += torch.bincount(batch["domain"].cpu(), minlength=len(self.counts)).double()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.args.round:
            return
        g_e = gram_matrix(self.exact.accumulators, self.counts)
        p_e = rnb_weights(g_e, self.q, self.args.lam).p
        line = f"step {step:5d}"
        for name, cap in self.sketches.items():
            g_s = gram_matrix(cap.accumulators, self.counts)
            fro = float(torch.linalg.norm(g_s - g_e) / torch.linalg.norm(g_e))
            tv = float(0.5 * (p_e - rnb_weights(g_s, self.q, self.args.lam).p).abs().sum())
            self.rows[name].append((fro, tv))
            line += f"  {name}: G err {100 * fro:5.2f} % TV {tv:.4f}"
            cap.reset()
        print(line, flush=True)
        self.exact.reset()
        self.counts.zero_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--round", type=int, default=25)
    parser.add_argument("--sketch", default="512x256,1024x128", help="comma-separated OUTxIN sizes")
    parser.add_argument("--rows-per-example", type=int, default=None)
    parser.add_argument("--lam", type=float, default=3.0)
    args, overrides = parser.parse_known_args()
    args.sketch = args.sketch.split(",")
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
    m = run["datamodule"].num_domains
    print(
        f"\nhead V={head.out_features} d={head.in_features}, m={m} domains, "
        f"rows/example {args.rows_per_example}, {len(next(iter(cmp_cb.rows.values())))} rounds of {args.round} steps"
    )
    for name, rows in cmp_cb.rows.items():
        r = np.array(rows)
        mem = HeadGradientCapture.estimate_memory_bytes(
            100, 50257, 768, "sketch", *cmp_cb.sizes[args.sketch.index(name)]
        )
        print(
            f"sketch {name:>9}: G error mean {100 * r[:, 0].mean():.2f} % max {100 * r[:, 0].max():.2f} % (goal <= 5 %); "
            f"TV(p) mean {r[:, 1].mean():.4f} max {r[:, 1].max():.4f} (goal <= 0.02); "
            f"125M head, m=100: {mem / 1e6:.0f} MB"
        )


if __name__ == "__main__":
    main()
