"""Data larger than memory: a 2M-document corpus through the normal ``rnb-train`` path.

Writes a synthetic JSONL corpus (``--docs`` documents, a ``domain`` field over
``--domains`` domains; under ``--dir``, never committed), then runs, each in a fresh
process:

1. **baseline** -- the same ``rnb-train`` command on the first ``--small`` documents
   (interpreter + torch + Lightning + rnb + model + tokenizer: everything that does not
   grow with the corpus);
2. **big** -- the command on the whole corpus (a cold cache: the scan, the streamed BPE and
   the token-store build run), then
3. **warm** -- again on the whole corpus (the store is reused: what a sweep's later jobs see).

Each child prints its peak RSS (``ru_maxrss``), the RSS after the DataModule is built, the
bytes of the DataModule's index arrays (domain labels, split rows, kept mask, domain codes,
sampler's per-domain indices) and the model's parameter bytes, and the RSS split into
anonymous (``RssAnon``: heap, malloc arenas, torch's CPU tensors -- the real cost) and
file-backed (``RssFile``: touched pages of the read-only token store and of shared
libraries -- page cache the kernel can drop) after each phase (imports, DataModule, initial
eval, first step, final eval, end) and at its peak (sampled every 50 ms), with the phase in
which the anonymous peak happened. The goal (issue 13): the big run's peak over the
baseline's stays within 2x of index arrays + model.

Run (the machine is shared: be nice)::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/big_corpus.py --docs 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MiB = 2**20


def write_corpus(path: Path, docs: int, domains: int, seed: int = 0) -> None:
    """``docs`` JSONL lines ``{"text", "domain"}``; each domain draws 3-12 words from its own
    skewed slice of a 6000-word vocabulary (so domains differ and a BPE has work to do)."""
    rng = np.random.default_rng(seed)
    syll = ["ka", "lo", "mi", "ra", "tu", "ne", "so", "pi", "de", "gu", "ba", "ve", "zo", "fi"]
    vocab = np.array(
        ["".join(rng.choice(syll, size=int(rng.integers(1, 4)))) + str(i % 7) for i in range(6000)]
    )
    block = 100_000
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, docs, block):
            n = min(block, docs - start)
            dom = rng.integers(0, domains, n)
            lengths = rng.integers(3, 13, n)
            base = dom * (6000 // domains)
            words = (base[:, None] + rng.zipf(1.3, (n, 12)) % 1500) % 6000
            lines = []
            for i in range(n):
                text = " ".join(vocab[words[i, : lengths[i]]])
                lines.append(json.dumps({"text": text, "domain": f"d{dom[i]:02d}"}))
            f.write("\n".join(lines) + "\n")


def _overrides(path: Path, out: Path, steps: int, eval_fraction: float) -> list[str]:
    return [
        "data=files",
        f"data.train_path={path}",
        "data.text_fields=[text]",
        "data.domain_field=domain",
        f"data.eval_fraction={eval_fraction}",
        "data.max_length=32",
        "data.batch_size=16",
        "data.eval_batch_size=256",
        "data.tokenizer.vocab_size=2048",
        "strategy=rnb",
        "regroup=none",
        "model.arch.hidden_size=32",
        "model.arch.num_layers=1",
        "model.arch.num_heads=2",
        "model.arch.intermediate_size=64",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "balance.steps_per_round=10",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "threads=1",
        f"output_dir={out}",
    ]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_split_mib() -> dict[str, float]:
    """Current RSS split as ``/proc/self/status`` reports it (Linux), in MiB: ``anon``
    (heap, malloc arenas, torch's CPU tensors -- the real cost), ``file`` (touched pages of
    memory-mapped or loaded files: the token store, shared libraries -- reclaimable page
    cache) and ``shmem``. Empty where ``/proc`` is absent."""
    keys = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, rest = line.partition("\t")
        if name in keys:
            out[keys[name]] = int(rest.split()[0]) / 1024  # kB
    return out


class _PeakSampler:
    """Samples :func:`_rss_split_mib` every ``period`` seconds on a daemon thread and keeps
    each component's peak (the kernel keeps only the total's peak, ``VmHWM``)."""

    def __init__(self, period: float = 0.05) -> None:
        import threading

        self.peak: dict[str, float] = {}
        self.current = "start"  # the phase the run is in (set by the caller)
        self.peak_phase = "start"  # the phase in which ``anon`` peaked
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, float]:
        now = _rss_split_mib()
        if now.get("anon", 0.0) > self.peak.get("anon", 0.0):
            self.peak_phase = self.current
        for k, v in now.items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak


def _index_bytes(dm) -> int:
    """Bytes of the DataModule's per-document index arrays (an array held twice counts once),
    plus the sampler's per-domain permutation cache (up to one permutation per domain)."""
    corpus = dm.corpus()
    arrays = [dm.labels.train, dm.labels.eval, dm.train_data.rows, dm.eval_data.rows]
    arrays += [dm.train_data.domain, dm.eval_data.domain, *dm.sampler.domains]
    arrays += [corpus.train_rows, corpus.eval_rows, corpus.train_scan.kept]
    arrays += [a for a in (corpus.train_scan.domains,) if a is not None]
    unique = {id(a): a.nbytes for a in arrays}
    return sum(unique.values()) + dm.train_data.rows.size * 8


def child(path: Path, out: Path, steps: int, eval_fraction: float) -> None:
    """One ``rnb-train`` run in this process; prints a JSON line of its memory figures."""
    import lightning as L

    from rnb.config import compose
    from rnb.train import train

    seen: dict = {"phases": {}}
    sampler = _PeakSampler()

    def phase(name: str, after: str) -> None:
        """Record RSS at the end of phase ``name`` (once); ``after`` names the next one."""
        if name not in seen["phases"]:
            seen["phases"][name] = sampler.sample()
            sampler.current = after

    class Probe(L.Callback):
        """Records RSS and the index arrays once the DataModule is built (fit setup), and the
        anonymous / file-backed RSS after each phase of the run."""

        def setup(self, trainer, pl_module, stage):
            if "datamodule_rss_mib" not in seen:
                seen["build_s"] = time.perf_counter() - t0
                seen["datamodule_rss_mib"] = _rss_mib()
                seen["index_bytes"] = _index_bytes(trainer.datamodule)
                seen["docs"] = len(trainer.datamodule.corpus().train_scan.kept)
                phase("datamodule", "initial_eval")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            phase("first_step", "training")

        def on_validation_start(self, trainer, pl_module):
            # the final eval runs inside fit: name it, or its activations read as training's
            if "first_step" in seen["phases"]:
                sampler.current = "final_eval"

        def on_validation_end(self, trainer, pl_module):
            if "first_step" not in seen["phases"]:
                phase("initial_eval", "first_step")
            else:
                phase("final_eval", "teardown")

    import_rss = _rss_mib()
    phase("imports", "datamodule")
    cfg = compose("train", _overrides(path, out, steps, eval_fraction))
    t0 = time.perf_counter()
    summary = train(cfg, callbacks=[Probe()])
    phase("end", "end")
    peak = sampler.stop()
    result = {
        "peak_anon_phase": sampler.peak_phase,
        "phases": seen["phases"],
        "peak_anon_mib": peak.get("anon"),
        "peak_file_mib": peak.get("file"),
        "docs": seen["docs"],
        "import_rss_mib": import_rss,
        "datamodule_rss_mib": seen["datamodule_rss_mib"],
        "peak_rss_mib": _rss_mib(),
        "build_s": seen["build_s"],
        "index_mib": seen["index_bytes"] / MiB,
        "model_mib": summary["num_parameters"] * 4 / MiB,
        "steps": summary["steps"],
        "eval_loss": summary["eval_loss"],
    }
    print("RESULT " + json.dumps(result), flush=True)


def _run(path: Path, out: Path, steps: int, cache: Path, eval_fraction: float) -> dict:
    env = {**os.environ, "RNB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", str(path), "--out", str(out), "--steps", str(steps)]
    cmd += ["--eval-fraction", repr(eval_fraction)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, default=2_000_000)
    ap.add_argument("--small", type=int, default=20_000, help="documents of the baseline run")
    ap.add_argument("--domains", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/rnb_big_corpus"))
    ap.add_argument("--eval-docs", type=int, default=2000, help="eval documents of every run")
    ap.add_argument("--eval-fraction", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.out, args.steps, args.eval_fraction)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    big, small = args.dir / f"corpus_{args.docs}.jsonl", args.dir / f"corpus_{args.small}.jsonl"
    t0 = time.perf_counter()
    if not big.exists():
        write_corpus(big, args.docs, args.domains)
    if not small.exists():
        write_corpus(small, args.small, args.domains)
    print(f"corpus: {big} ({big.stat().st_size / MiB:.0f} MiB, {time.perf_counter() - t0:.0f} s)")
    cache = args.dir / "cache"
    runs = {}
    # the same eval set size everywhere: evaluation's activations do not grow with the corpus
    sizes = {"baseline": args.small, "big": args.docs, "warm": args.docs}
    for name, path in (("baseline", small), ("big", big), ("warm", big)):
        frac = args.eval_docs / sizes[name]
        runs[name] = r = _run(path, args.dir / f"run_{name}", args.steps, cache, frac)
        print(
            f"{name:8s} docs {r['docs']:>9,d}  peak RSS {r['peak_rss_mib']:7.0f} MiB  "
            f"after DataModule {r['datamodule_rss_mib']:7.0f}  after imports "
            f"{r['import_rss_mib']:6.0f}  build {r['build_s']:6.1f} s  index arrays "
            f"{r['index_mib']:6.1f} MiB  model {r['model_mib']:5.2f} MiB  steps {r['steps']}",
            flush=True,
        )
        print(
            f"{'':8s} RssAnon / RssFile (MiB) "
            + "  ".join(
                f"{k} {v.get('anon', 0):.0f} / {v.get('file', 0):.0f}"
                for k, v in r["phases"].items()
            )
            + f"  peak {r['peak_anon_mib'] or 0:.0f} / {r['peak_file_mib'] or 0:.0f}"
            + f" (anon peaked in: {r.get('peak_anon_phase')})",
            flush=True,
        )
    base, grow = runs["baseline"], runs["big"]
    budget = grow["index_mib"] + grow["model_mib"]
    for name in ("big", "warm"):
        extra = runs[name]["peak_rss_mib"] - base["peak_rss_mib"]
        print(
            f"{name}: peak RSS over the baseline run {extra:.0f} MiB = "
            f"{extra / budget:.2f} x (index arrays + model = {budget:.0f} MiB); goal <= 2"
        )


if __name__ == "__main__":
    main()
