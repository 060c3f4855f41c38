"""Regroup at scale: a k sweep with silhouette selection on 1M x 384 clustered embeddings.

Generates ``--blobs`` gaussian blobs (float32, seeded), runs
``rnb.regroup.selection.sweep`` with the chosen backend over ``--k-values`` and prints
wall time per stage, per-k fit / metric seconds and peak memory (``ru_maxrss``, which
also sees faiss's C++ allocations, unlike tracemalloc).

Usage::

    PYTHONPATH=src python benchmarks/regroup_scale.py            # 1M x 384, faiss, 6 values
    PYTHONPATH=src python benchmarks/regroup_scale.py --n 100000 --backend minibatch
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting steal the CPU from each other on a busy 2-core
# box: a faiss search over 1M points took 6.1 s with the default policy and 1.2 s with
# PASSIVE (measured). Must be set before numpy/faiss load their OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import resource
import sys
import time
from typing import Any

import numpy as np
from sklearn.metrics import v_measure_score

from rnb.regroup.clusterers import FaissKMeans
from rnb.regroup.selection import sweep


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def make_data(
    n: int, d: int, blobs: int, seed: int, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 points around ``blobs`` random centres (unit noise), chunked."""
    rng = np.random.default_rng(seed)
    centres = (rng.standard_normal((blobs, d)) * spread).astype(np.float32)
    y = rng.integers(0, blobs, size=n)
    X = np.empty((n, d), dtype=np.float32)
    step = 1 << 16
    for s in range(0, n, step):
        # Generating in chunks keeps the float64 scratch small next to the 1.5 GB result.
        X[s : s + step] = rng.standard_normal((min(step, n - s), d), dtype=np.float32)
        X[s : s + step] += centres[y[s : s + step]]
    return X, y


def factory(args: argparse.Namespace) -> Any:
    """``value -> clusterer`` for the chosen backend."""
    if args.backend == "faiss":
        return lambda k: FaissKMeans(
            n_clusters=k,
            niter=args.niter,
            nredo=args.nredo,
            seed=args.seed,
            max_points_per_centroid=args.max_points_per_centroid,
            init=args.init,
        )
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if args.backend == "minibatch":
        return lambda k: MiniBatchKMeans(
            n_clusters=k, batch_size=4096, n_init=1, random_state=args.seed
        )
    return lambda k: KMeans(n_clusters=k, n_init=1, random_state=args.seed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print a table plus a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--blobs", type=int, default=40)
    p.add_argument("--spread", type=float, default=2.0, help="centre std / noise std")
    p.add_argument("--k-values", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60])
    p.add_argument("--backend", choices=["faiss", "minibatch", "kmeans"], default="faiss")
    p.add_argument("--niter", type=int, default=25)
    p.add_argument("--nredo", type=int, default=1)
    p.add_argument("--init", default="random", help="faiss init: random | kmeans++ | afkmc2")
    p.add_argument("--max-points-per-centroid", type=int, default=256)
    p.add_argument("--silhouette-sample", type=int, default=10_000)
    p.add_argument("--metric", default="silhouette")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the summary to this path")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # per-k progress
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)

    t0 = time.perf_counter()
    X, y = make_data(args.n, args.d, args.blobs, args.seed, args.spread)
    t_data = time.perf_counter() - t0
    rss_data = peak_rss_mib()
    print(
        f"data: {args.n} x {args.d} float32 ({X.nbytes / 2**20:.0f} MiB), {args.blobs} blobs, "
        f"{t_data:.1f}s, peak RSS {rss_data:.0f} MiB",
        flush=True,
    )

    t1 = time.perf_counter()
    res = sweep(
        X,
        factory(args),
        args.k_values,
        metric=args.metric,
        silhouette_sample=args.silhouette_sample,
        seed=args.seed,
    )
    t_sweep = time.perf_counter() - t1
    vm = float(v_measure_score(y, res.labels))

    print(
        f"\n{'k':>4} {'k_found':>7} {'fit s':>7} {'sil s':>6} {'DB s':>6} {'CH s':>6} "
        f"{'silhouette':>10} {'DB':>7} {'CH':>10}"
    )
    for r in res.rows:
        ms = r.metric_seconds
        print(
            f"{r.value:>4} {r.k_found:>7} {r.fit_seconds:>7.2f} {ms.get('silhouette', 0):>6.2f} "
            f"{ms.get('davies_bouldin', 0):>6.2f} {ms.get('calinski_harabasz', 0):>6.2f} "
            f"{r.silhouette:>10.4f} {r.davies_bouldin:>7.3f} {r.calinski_harabasz:>10.1f}"
        )
    summary = {
        "n": args.n,
        "d": args.d,
        "blobs": args.blobs,
        "backend": args.backend,
        "k_values": args.k_values,
        "chosen_k": res.k,
        "v_measure_vs_blobs": vm,
        "data_seconds": t_data,
        "sweep_seconds": t_sweep,
        "fit_seconds": sum(r.fit_seconds for r in res.rows),
        "metric_seconds": {
            m: sum(r.metric_seconds.get(m, 0.0) for r in res.rows)
            for m in ("silhouette", "davies_bouldin", "calinski_harabasz")
        },
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_after_data_mib": rss_data,
    }
    print(
        f"\nchosen k={res.k} (v-measure vs true blobs {vm:.4f}); sweep wall {t_sweep:.1f}s; "
        f"peak RSS {summary['peak_rss_mib']:.0f} MiB"
    )
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    main()
