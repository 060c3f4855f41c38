"""Throughput of the default config: sampler indices/s, training steps/s and samples/s.

Usage: python benchmarks/throughput.py [--steps 60] [hydra overrides ...]
Prints one line per figure; the sampler must not be the bottleneck (goal >= 100k idx/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def sampler_rate(n_batches: int = 20000, batch_size: int = 32, m: int = 20) -> float:
    """Indices per second of MixtureBatchSampler on 20 domains of unequal size."""
    from rnb.data.sampler import MixtureBatchSampler

    sizes = np.geomspace(8000, 1000, m).astype(int)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    domains = [np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)]
    sampler = MixtureBatchSampler(domains, batch_size, seed=0)
    it = iter(sampler)
    t0 = time.perf_counter()
    for i in range(n_batches):
        if i % 500 == 0:  # weight changes are part of normal use
            sampler.set_weights(np.random.default_rng(i).dirichlet(np.ones(m)))
        next(it)
    return n_batches * batch_size / (time.perf_counter() - t0)


def training_rate(steps: int, overrides: list[str]) -> tuple[float, float, float]:
    """(steps/s, samples/s, loader-only batches/s) of the default training job."""
    import lightning as L

    from rnb.config import compose
    from rnb.train import build_run

    out = tempfile.mkdtemp(prefix="rnb-bench-")
    cfg = compose(
        "train",
        [
            f"trainer.max_steps={steps}",
            "trainer.val_check_interval=100000",
            "trainer.enable_progress_bar=false",
            "logger=none",
            f"output_dir={out}",
            *overrides,
        ],
    )
    run = build_run(cfg, __import__("pathlib").Path(out))
    dm, model, trainer = run["datamodule"], run["model"], run["trainer"]

    class Clock(L.Callback):
        def on_train_batch_start(self, *a) -> None:
            if a[0].global_step == 5:  # skip warm-up steps
                self.t0 = time.perf_counter()

    clock = Clock()
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=dm)
    dt = time.perf_counter() - clock.t0
    rate = (steps - 5) / dt
    loader = iter(dm.train_dataloader())
    t0 = time.perf_counter()
    for _ in range(200):
        next(loader)
    loader_rate = 200 / (time.perf_counter() - t0)
    return rate, rate * dm.batch_size, loader_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"sampler: {sampler_rate():,.0f} indices/s (goal >= 100,000)")
    steps_s, samples_s, loader_s = training_rate(args.steps, overrides)
    print(f"training: {steps_s:.2f} steps/s, {samples_s:.0f} samples/s (default config)")
    print(f"loader alone: {loader_s:.0f} batches/s ({loader_s / steps_s:.0f}x the training rate)")


if __name__ == "__main__":
    main()
