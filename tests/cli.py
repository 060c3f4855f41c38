"""Run the console scripts as a user would (``rnb-train -m ...``): in a subprocess, or in-process.

A subprocess (:func:`run_cli`) pays Python + torch + Lightning imports each time (15-25 s on
a loaded 2-core machine); :func:`run_main` calls the same console-script entry point
(``main`` of the module named in pyproject ``[project.scripts]``) with the same argv in this
interpreter, in ``cwd``, and puts back the process state a run changes (cwd, env, argv,
Hydra's global state, root logging handlers, thread pools). Tests keep a subprocess run
where the process boundary is what they pin (the installed console scripts, see
``test_readme_commands.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

#: console script -> module whose ``main`` it calls (pyproject ``[project.scripts]``).
SCRIPTS = {
    "rnb-train": "rnb.train",
    "rnb-regroup": "rnb.cli.regroup",
    "rnb-report": "rnb.cli.report",
}


def _env(env: dict[str, str] | None) -> dict[str, str]:
    return {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}


def run_cli(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (``rnb-train ...``) in ``cwd``; assert it exits 0 and return the result.

    The console script is used when it is on PATH, else ``python -m <module>`` (same code).
    """
    script = argv[0]
    if script in SCRIPTS and shutil.which(script) is None:
        argv = [sys.executable, "-m", SCRIPTS[script], *argv[1:]]
    full_env = {**os.environ, **_env(env)}
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@contextlib.contextmanager
def _process_state(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """``sys.argv``/cwd/env set for one in-process run; everything a run changes put back.

    Hydra's ``GlobalHydra`` is cleared before and after (a Hydra app refuses to start while
    it is set); its job logging replaces the root logger's handlers (console + the run's log
    file), which are closed and swapped back. ``OMP_NUM_THREADS`` in ``env`` sets torch's
    and the BLAS pools' thread counts for the run; they (and what ``threads=N`` sets) are
    restored after.
    """
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from threadpoolctl import threadpool_limits

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    threads = torch.get_num_threads()
    saved_env = dict(os.environ)
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    # Hydra re-raises a failing job's exception (full traceback in the test report) instead
    # of printing a short message and exiting 1
    os.environ.update({**env, "HYDRA_FULL_ERROR": "1"})
    sys.argv = list(argv)
    os.chdir(cwd)
    GlobalHydra.instance().clear()
    # OMP_NUM_THREADS is read once at import: apply it as a new process would (torch's
    # default of one thread per core oversubscribes a shared machine)
    n_threads = int(env["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in env else None
    try:
        with threadpool_limits(limits=n_threads):  # restores the pools' limits on exit
            if n_threads is not None:
                torch.set_num_threads(n_threads)
            yield
    finally:
        GlobalHydra.instance().clear()
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_main(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run console script ``argv[0]`` in this process as :func:`run_cli` runs it in a new one.

    Calls ``main()`` of ``SCRIPTS[argv[0]]`` with ``sys.argv = argv`` in ``cwd`` (``env``
    added to ``os.environ``), captures stdout/stderr, and asserts the exit status is 0 (a
    returned int or ``SystemExit`` code; an exception propagates with its traceback).

    Returns:
        A ``CompletedProcess`` like :func:`run_cli`'s (``returncode`` 0).

    Raises:
        KeyError: ``argv[0]`` is not a console script of the project.
    """
    module = importlib.import_module(SCRIPTS[argv[0]])
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with (
        _process_state(argv, cwd, _env(env)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = module.main()
        except SystemExit as exit_:
            code = exit_.code
    assert code in (0, None), (
        f"{' '.join(argv)} (in-process) exited {code}:\n"
        f"{out.getvalue()[-3000:]}\n{err.getvalue()[-6000:]}"
    )
    return subprocess.CompletedProcess(argv, 0, out.getvalue(), err.getvalue())
