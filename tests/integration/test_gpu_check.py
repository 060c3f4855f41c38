"""benchmarks/gpu_check.sh: every step runs on CPU (--dry-run); without a GPU it says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def _run(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RNB_GPU_CHECK_DIR": str(out), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=1800
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_2_naming_the_cause(tmp_path: Path) -> None:
    proc = _run([], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device" in proc.stderr


@pytest.mark.slow
@pytest.mark.ddp
def test_dry_run_runs_every_check_on_cpu(tmp_path: Path) -> None:
    proc = _run(["--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for name in ("overhead", "single", "fsdp_1gpu", "fsdp_1gpu_equals_single", "fsdp_bf16",
                 "ddp_2gpu", "ddp_equals_single", "fsdp_2gpu", "fsdp_equals_single"):  # fmt: skip
        assert f"PASS {name}\n" in out, (name, out[-3000:])
    assert "rnb / (stratified + stratified (A/A)): mean" in out  # the overhead ratio is printed
    assert "gpu_check: all checks passed" in out
