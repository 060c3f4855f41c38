"""Wall-clock overhead of R&B vs stratified on the default config, measured side by side.

In one process, short training runs of the two strategies alternate (S, R, S, R, ...), each
``--steps`` long with identical data and model settings; the per-step wall time (from one
``on_train_batch_start`` to the next, so data loading, hooks, reductions and updates are all
included) is pooled per strategy after ``--warmup`` steps, and the ratio of medians and of
means is printed. Also printed: R&B's own metered share of mixing work (``overhead.wall_pct``)
and the accumulator memory of sketch vs exact capture for a GPT-Neo-125M head with m = 100.

Usage: python benchmarks/overhead.py [--steps 60] [--pairs 3] [hydra overrides ...]
Goal: ratio <= 1.03 and sketch memory <= 100 MB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np

from rnb.balance.grads import HeadGradientCapture
from rnb.config import compose
from rnb.train import build_run


class StepClock(L.Callback):
    """Wall time between consecutive batch starts."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_batch_start(self, *args) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def one_run(strategy: str, steps: int, overrides: list[str]) -> tuple[list[float], dict]:
    out = Path(tempfile.mkdtemp(prefix=f"rnb-ovh-{strategy}-"))
    cfg = compose(
        "train",
        [
            f"strategy={strategy}",
            f"trainer.max_steps={steps}",
            "trainer.val_check_interval=100000",
            "trainer.enable_progress_bar=false",
            "logger=none",
            "initial_eval=false",
            "checkpoint.every_n_train_steps=1000000",
            f"output_dir={out}",
            *overrides,
        ],
    )
    run = build_run(cfg, out)
    clock = StepClock()
    run["trainer"].callbacks.insert(0, clock)
    run["trainer"].fit(run["model"], datamodule=run["datamodule"])
    balance = run["balance"]
    return clock.times, {
        "meter": balance.meter.report(1.0),
        "memory": balance.summary()["balance_memory_bytes"],
        "mode": getattr(balance.capture, "mode", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    args, overrides = parser.parse_known_args()
    pooled: dict[str, list[float]] = {"stratified": [], "rnb": []}
    info = {}
    for i in range(args.pairs):
        order = ("stratified", "rnb") if i % 2 == 0 else ("rnb", "stratified")
        for strategy in order:
            times, info[strategy] = one_run(strategy, args.steps, overrides)
            pooled[strategy].extend(times[args.warmup :])
    s, r = np.array(pooled["stratified"]), np.array(pooled["rnb"])
    print(f"steps timed per strategy: {len(s)} ({args.pairs} alternating runs of {args.steps})")
    print(f"stratified: median {1e3 * np.median(s):.1f} ms/step, mean {1e3 * s.mean():.1f}")
    print(f"rnb:        median {1e3 * np.median(r):.1f} ms/step, mean {1e3 * r.mean():.1f}")
    print(
        f"wall-clock ratio rnb/stratified: median {np.median(r) / np.median(s):.3f}, mean {r.mean() / s.mean():.3f} (goal <= 1.03)"
    )
    meter = info["rnb"]["meter"]
    print(
        f"rnb metered mixing work: {meter['wall_pct']:.2f} % of step time (capture mode {info['rnb']['mode']}, accumulators {info['rnb']['memory'] / 2**20:.2f} MiB)"
    )
    sk = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "sketch", 512, 256)
    ex = HeadGradientCapture.estimate_memory_bytes(100, 50257, 768, "exact")
    print(
        f"GPT-Neo-125M head (V=50257, d=768), m=100: sketch {sk / 1e6:.1f} MB vs exact {ex / 1e9:.1f} GB (goal <= 100 MB)"
    )


if __name__ == "__main__":
    main()
