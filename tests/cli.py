"""Run the console scripts in a subprocess, as a user would (``rnb-train -m ...``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: console script -> module whose ``main`` it calls (pyproject ``[project.scripts]``).
SCRIPTS = {
    "rnb-train": "rnb.train",
    "rnb-regroup": "rnb.cli.regroup",
    "rnb-report": "rnb.cli.report",
}


def run_cli(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (``rnb-train ...``) in ``cwd``; assert it exits 0 and return the result.

    The console script is used when it is on PATH, else ``python -m <module>`` (same code).
    """
    script = argv[0]
    if script in SCRIPTS and shutil.which(script) is None:
        argv = [sys.executable, "-m", SCRIPTS[script], *argv[1:]]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc
