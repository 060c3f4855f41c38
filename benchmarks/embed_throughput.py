"""Throughput of the default embedder (all-MiniLM-L6-v2, offline), fp32 vs bf16 autocast.

The two variants run side by side on the same chunks, alternating which goes first
(sequential runs drift by +-20% on shared machines), and the medians over chunks are
reported, together with how far bf16 embeddings deviate from fp32 ones (1 - cosine).

Usage::

    PYTHONPATH=src python benchmarks/embed_throughput.py [--n 2000] [--chunk 200]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from rnb.regroup.embedders import SentenceTransformerEmbedder

_SUBJECTS = ["the model", "a student", "our team", "the market", "this recipe", "the patient"]
_VERBS = ["explains", "improves", "reduces", "predicts", "describes", "compares"]
_OBJECTS = [
    "the loss curve",
    "interest rates",
    "a pasta sauce",
    "blood pressure",
    "the training data",
    "a short poem about rain",
]
_TAILS = ["", " in two steps", " without any tools", " for beginners", " using a table", ""]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Short instruction-like sentences (5-25 words), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts = [
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            f"{rng.choice(_TAILS)}"
            for _ in range(int(rng.integers(1, 4)))
        ]
        out.append((". ".join(parts) + ".").capitalize())
    return out


def main() -> None:
    """Run the benchmark and print per-variant medians and the bf16 deviation."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    texts = synthetic_texts(args.n)
    kw = {"batch_size": args.batch_size, "device": args.device, "progress": False}
    variants = {
        "fp32": SentenceTransformerEmbedder(bf16=False, **kw),
        "bf16": SentenceTransformerEmbedder(bf16=True, **kw),
    }
    for emb in variants.values():  # load + warm up (first calls allocate, tune kernels)
        emb.encode(texts[: args.batch_size])

    rates: dict[str, list[float]] = {k: [] for k in variants}
    embs: dict[str, list[np.ndarray]] = {k: [] for k in variants}
    names = list(variants)
    for c, lo in enumerate(range(0, len(texts), args.chunk)):
        chunk = texts[lo : lo + args.chunk]
        for name in names if c % 2 == 0 else names[::-1]:  # alternate who goes first
            t0 = time.perf_counter()
            e = variants[name].encode(chunk)
            rates[name].append(len(chunk) / (time.perf_counter() - t0))
            embs[name].append(e)

    a, b = np.concatenate(embs["fp32"]), np.concatenate(embs["bf16"])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    result = {
        "n_texts": len(texts),
        "chunks": len(rates["fp32"]),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "fp32_texts_per_s_median": float(np.median(rates["fp32"])),
        "bf16_texts_per_s_median": float(np.median(rates["bf16"])),
        "bf16_speedup_median_of_ratios": float(
            np.median(np.array(rates["bf16"]) / np.array(rates["fp32"]))
        ),
        "max_cosine_deviation": float((1 - cos).max()),
        "mean_cosine_deviation": float((1 - cos).mean()),
    }
    print(f"{'variant':8s} {'texts/s (median)':>18s}  per-chunk range")
    for name in names:
        r = rates[name]
        print(f"{name:8s} {np.median(r):18.1f}  [{min(r):.1f}, {max(r):.1f}]")
    print(
        f"bf16 speed-up (median of per-chunk ratios): {result['bf16_speedup_median_of_ratios']:.2f}x"
    )
    print(
        f"bf16 vs fp32: max 1-cos = {result['max_cosine_deviation']:.2e}, "
        f"mean 1-cos = {result['mean_cosine_deviation']:.2e}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
