"""benchmarks/big_corpus.py: the anonymous / file-backed RSS split and its peak sampler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="RssAnon/RssFile are Linux /proc fields"
)


def _vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def test_split_adds_up_to_the_resident_set() -> None:
    split = load_benchmark("big_corpus")._rss_split_mib()
    assert set(split) == {"anon", "file", "shmem"}
    assert split["anon"] > 0 and split["file"] > 0
    assert abs(sum(split.values()) - _vm_rss_mib()) < 2.0  # MiB; pages move between reads


#: The spike, run in a fresh interpreter: the suite's own process carries other tests' heap,
#: threads and garbage, which made the measurement flaky in CI (the peak never moved).
_SPIKE = """
import gc, json, mmap, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from tests.helpers import load_benchmark
bench = load_benchmark("big_corpus")
gc.collect()
sampler = bench._PeakSampler(period=0.01)
before = sampler.sample()["anon"]
sampler.current = "spike"
block = mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
pages = np.frombuffer(block, dtype=np.uint8)
pages[:: mmap.PAGESIZE] = 1  # every page of a fresh private mapping: +64 MiB RssAnon
del pages
deadline = time.monotonic() + 10.0  # until the sampler's own thread records it
while sampler.peak["anon"] < before + 60 and time.monotonic() < deadline:
    time.sleep(0.01)
block.close()
sampler.current = "after"
time.sleep(0.05)
peak = sampler.stop()
print(json.dumps({{"before": before, "peak": peak["anon"], "phase": sampler.peak_phase,
                  "after": sampler.sample()["anon"]}}))
"""


def test_peak_sampler_sees_a_transient_anonymous_allocation_and_its_phase() -> None:
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-c", _SPIKE.format(root=root)],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["peak"] >= got["before"] + 60, got
    assert got["phase"] == "spike", got
    assert got["after"] < got["peak"] - 60, got  # freed: the peak was transient
