"""Regroup at scale: a k sweep with silhouette selection on 1M x 384 clustered embeddings.

Generates ``--blobs`` gaussian blobs (float32, seeded), runs
``rnb.regroup.selection.sweep`` with the chosen backend over ``--k-values`` and prints
wall time per stage, per-k fit / metric seconds and peak memory (``ru_maxrss``, which
also sees faiss's C++ allocations, unlike tracemalloc).

Usage::

    PYTHONPATH=src python benchmarks/regroup_scale.py            # 1M x 384, faiss, 6 values
    PYTHONPATH=src python benchmarks/regroup_scale.py --n 100000 --backend minibatch
    # regroup.fit_sample at scale: 1e5 / 1e6 / 5e6 memory-mapped float16 points, one
    # child process per size (its own peak RSS), growth exponent of the wall time:
    OMP_NUM_THREADS=1 nice -n 5 PYTHONPATH=src python benchmarks/regroup_scale.py --curve
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
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import v_measure_score

from rnb.regroup.clusterers import FaissKMeans
from rnb.regroup.sampled import sample_indices, sweep_sampled
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


def make_memmap(
    path: Path, n: int, d: int, blobs: int, seed: int, spread: float, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`make_data`, but written chunk by chunk into a ``.npy`` memory map
    (``path``; the true blob ids go to ``path.labels.npy``); reused when present."""
    ypath = path.with_suffix(".labels.npy")
    if not (path.exists() and ypath.exists()):
        rng = np.random.default_rng(seed)
        centres = (rng.standard_normal((blobs, d)) * spread).astype(np.float32)
        y = rng.integers(0, blobs, size=n)
        tmp = path.with_suffix(".tmp.npy")
        X = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, d))
        for s in range(0, n, 1 << 16):
            e = min(n, s + (1 << 16))
            X[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) + centres[y[s:e]]
        X.flush()
        del X
        np.save(ypath, y)
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r"), np.load(ypath)


class AnonPeak:
    """Peak anonymous RSS (``RssAnon``: heap, not the page cache of mapped files), polled.

    ``ru_maxrss`` also counts the mapped file's resident pages, which the kernel can drop
    at any time; the anonymous part is what must fit in RAM.
    """

    def __init__(self, every: float = 0.05) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        """Current ``RssAnon`` in MiB (0 where /proc is missing)."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        """Stop polling; return the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def scale_point(args: argparse.Namespace) -> dict[str, Any]:
    """One point of the curve (run in its own process): sweep on a sample, label all."""
    X, y = make_memmap(
        Path(args.data_dir) / f"blobs_{args.n}x{args.d}_{args.dtype}.npy",
        args.n, args.d, args.blobs, args.seed, args.spread, args.dtype,
    )  # fmt: skip
    anon = AnonPeak()
    t0, c0 = time.perf_counter(), time.process_time()
    sample = sample_indices(args.n, args.fit_sample, args.seed)
    fit_s: list[float] = []

    def timed(k: int) -> Any:
        fit_s.append(time.perf_counter())
        return factory(args)(k)

    res, labels = sweep_sampled(
        X, sample, timed, args.k_values, chunk_size=args.chunk,
        metric=args.metric, silhouette_sample=args.silhouette_sample, seed=args.seed,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sweep_s = sum(r.fit_seconds + sum(r.metric_seconds.values()) for r in res.rows)
    out = {
        "n": args.n, "d": args.d, "dtype": args.dtype, "fit_sample": len(sample),
        "k_values": args.k_values, "chosen_k": res.k, "wall_s": wall, "sweep_s": sweep_s,
        "assign_s": wall - sweep_s, "cpu_s": cpu, "file_gib": X.nbytes / 2**30,
        "peak_rss_mib": peak_rss_mib(), "peak_anon_mib": anon.stop(),
        "v_measure_vs_blobs": float(v_measure_score(y, labels)),
    }  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def curve(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run :func:`scale_point` per size in a child process; print the table and slope."""
    points = []
    for n in args.curve_n:
        cmd = [sys.executable, __file__, "--point", "--n", str(n)] + [
            a for a in sys.argv[1:] if a not in ("--curve",)
        ]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"n={n}: child failed (exit {proc.returncode})")
        points.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"n={n}: done in {time.perf_counter() - t:.0f}s (incl. data)", flush=True)
        print(json.dumps(points[-1]), flush=True)  # kept in the log if a later size fails
    print(
        f"\n{'n':>9} {'file GiB':>8} {'sweep s':>8} {'assign s':>9} {'wall s':>7} {'CPU s':>7} "
        f"{'peak RSS MiB':>12} {'anon MiB':>9} {'k':>3} {'v-measure':>9}"
    )
    for r in points:
        print(
            f"{r['n']:>9} {r['file_gib']:>8.2f} {r['sweep_s']:>8.1f} {r['assign_s']:>9.1f} "
            f"{r['wall_s']:>7.1f} {r.get('cpu_s', float('nan')):>7.1f} {r['peak_rss_mib']:>12.0f} {r['peak_anon_mib']:>9.0f} "
            f"{r['chosen_k']:>3} {r['v_measure_vs_blobs']:>9.4f}"
        )
    logn = np.log([r["n"] for r in points])
    # CPU seconds are the robust measure on a shared machine (wall time waits for others).
    for key in ("cpu_s", "wall_s", "assign_s", "peak_rss_mib", "peak_anon_mib"):
        slope = np.polyfit(logn, np.log([max(r.get(key, 0), 1e-9) for r in points]), 1)[0]
        print(f"growth exponent (log-log slope) of {key}: {slope:.2f}")
    return points


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
    p.add_argument("--curve", action="store_true", help="fit_sample scaling curve (see doc)")
    p.add_argument("--curve-n", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    p.add_argument("--point", action="store_true", help=argparse.SUPPRESS)  # one curve point
    p.add_argument("--fit-sample", type=int, default=50_000, help="regroup.fit_sample")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--chunk", type=int, default=1 << 16, help="rows per streaming step")
    p.add_argument("--data-dir", default="/tmp/rnb_regroup_scale", help="memmap files")
    args = p.parse_args(argv)
    if args.curve or args.point:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        return {"points": curve(args)} if args.curve else scale_point(args)
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
