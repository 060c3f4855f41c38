"""benchmarks/big_corpus.py: the anonymous / file-backed RSS split and its peak sampler."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
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


def test_peak_sampler_sees_a_transient_anonymous_allocation_and_its_phase() -> None:
    bench = load_benchmark("big_corpus")
    # Earlier tests leave cyclic garbage (trainers, tensors): a collection triggered by the
    # allocation below could free more than the block adds (CI saw anon not move at all).
    gc.collect()
    gc.disable()
    try:
        sampler = bench._PeakSampler(period=0.01)
        before = sampler.sample()["anon"]
        sampler.current = "spike"
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, every page touched
        # Wait for the sampler's thread (not this one) to record the block: on a loaded
        # machine it may not be scheduled within a fixed 0.1 s.
        deadline = time.monotonic() + 10.0
        while sampler.peak["anon"] < before + 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        del block
        sampler.current = "after"
        time.sleep(0.05)
        peak = sampler.stop()
    finally:
        gc.enable()
    assert peak["anon"] >= before + 60
    assert sampler.peak_phase == "spike"
    assert sampler.sample()["anon"] < peak["anon"] - 60  # freed: the peak was transient
