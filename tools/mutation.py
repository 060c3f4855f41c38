"""Mutation testing of rnb's core modules with mutmut: score per module, survivors listed.

Usage (from the repository root, dev extra installed)::

    python tools/mutation.py                         # every module in MODULES, one after another
    python tools/mutation.py --module rnb_math       # one module (name, or a path under src/)
    python tools/mutation.py --list                  # modules, their files and test subsets

Each module is mutated in its own scratch copy of the repository (``--workdir``, default
``$TMPDIR/rnb-mutation/<module>``) so runs never touch the working tree, and against its own
test subset: the module's unit tests plus a few tiny integration runs. mutmut records which of
those tests execute each mutated function and runs only those per mutant. A mutant is
*killed* when some test fails (or times out), *survived* when all pass, *no tests* when no
selected test reaches it (counted as not killed). Results are printed per module
(``killed/total`` and %) with the survivors' names; ``mutmut show <name>`` inside the
module's workdir shows a survivor's diff.

The module list and test subsets live in ``MODULES`` below — the one place to edit when a
module or a baseline is added. Every module runs under ``--timeout`` seconds (wall clock).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Module:
    """One unit of mutation testing.

    Attributes:
        paths: files (or ``dir/*``) under the repository root to mutate.
        tests: pytest node ids / files whose tests may kill the mutants (run from the root).
    """

    paths: tuple[str, ...]
    tests: tuple[str, ...]


_PINNED = "tests/integration/test_pinned_weights.py::test_rnb_round_weights_follow_the_formula[eval_proportions]"

#: The core modules and the tests that pin them. Integration tests are tiny training runs
#: (a few seconds each); DDP tests are left out (their subprocesses would import the
#: unmutated package).
MODULES: dict[str, Module] = {
    "rnb_math": Module(
        ("src/rnb/balance/rnb_math.py",),
        (
            "tests/unit/test_rnb_math.py",
            "tests/unit/test_rnb_math_edges.py",
            "tests/unit/test_rnb_strategy.py",
            "tests/unit/test_rnb_unsampled.py",
        ),
    ),
    "strategies": Module(
        ("src/rnb/balance/strategies/*",),
        (
            "tests/unit/test_rnb_strategy.py",
            "tests/unit/test_static_strategies.py",
            "tests/unit/test_static_strategy_edges.py",
            "tests/unit/test_odm_strategy.py",
            "tests/unit/test_unimax_strategy.py",
            "tests/unit/test_rnb_unsampled.py",
            "tests/unit/test_doge_dga.py",
            "tests/unit/test_grad_signal.py",
            "tests/integration/test_grad_strategies.py::test_planted_target_domain_gains_weight",
            "tests/unit/test_doremi_strategy.py",
            "tests/unit/test_skillit.py",
            "tests/unit/test_skillit_edges.py",
            "tests/unit/test_aioli.py",
            "tests/unit/test_static_transfer.py",
            "tests/unit/test_static_average.py",
            "tests/unit/test_strategy_configs.py",  # YAML keys and values = constructor defaults
            "tests/unit/test_strategy_state.py",  # checkpoint round trips at every point
            _PINNED,
        ),
    ),
    "gradient_probe": Module(
        ("src/rnb/balance/services/gradient_probe.py", "src/rnb/balance/services/probe_params.py"),
        (
            "tests/unit/test_gradient_probe.py",
            "tests/unit/test_gradient_probe_config.py",
            "tests/unit/test_gradient_probe_edges.py",
            "tests/unit/test_gradient_probe_rows.py",
            "tests/unit/test_gradient_probe_init.py",
            "tests/integration/test_grad_strategies.py",
            # rows summed over two in-process ranks, divided by 2: one rank's brute-force grad
            "tests/integration/test_rank_reduce.py::test_gradient_probe_rows_are_averaged_over_ranks",
        ),
    ),
    "services": Module(
        ("src/rnb/balance/services/evaluator.py", "src/rnb/balance/services/reference.py"),
        (
            "tests/unit/test_probe_evaluator.py",
            "tests/unit/test_reference_service.py",
            "tests/unit/test_reference_resolve.py",
            "tests/integration/test_probe_evaluator_run.py",
            # a real Skill-It run: each round's eval_loss against a brute-force evaluation
            "tests/integration/test_skillit_train.py",
            # the sums over two in-process ranks (per round, and a checkpoint's mid-round sums)
            "tests/integration/test_rank_reduce.py::test_reference_sums_are_summed_over_ranks",
            "tests/integration/test_rank_reduce.py::test_eval_probe_sums_are_summed_over_ranks",
        ),
    ),
    "detours": Module(
        (
            "src/rnb/balance/detours.py",
            "src/rnb/balance/sandbox.py",
            "src/rnb/balance/detour_plan.py",
            "src/rnb/balance/skills_graph.py",
            "src/rnb/balance/aioli_math.py",
        ),
        (
            "tests/unit/test_detour_plan.py",
            "tests/unit/test_detour_math_edges.py",
            "tests/unit/test_skills_graph_edges.py",
            "tests/unit/test_skills_graph_plot.py",
            "tests/unit/test_detour_runner_inline.py",
            "tests/unit/test_detour_runner_state.py",
            "tests/unit/test_sandbox_restore.py",
            "tests/unit/test_sandbox_step.py",
            "tests/unit/test_detour_runner_setup.py",
            "tests/unit/test_detour_runner_sandboxed.py",
            "tests/unit/test_skillit.py",
            "tests/unit/test_aioli.py",
            "tests/integration/test_detours.py",
            # sandboxed detours on two in-process ranks: every sum, brute-force losses, FLOPs
            "tests/integration/test_rank_reduce_detours.py",
        ),
    ),
    "callback": Module(
        ("src/rnb/balance/callback.py", "src/rnb/balance/adoption.py"),
        (
            _PINNED,
            "tests/unit/test_rank_check.py",  # the DDP check, in-process
            "tests/unit/test_callback_hooks.py",
            "tests/unit/test_callback_setup.py",
            "tests/unit/test_callback_detours_done.py",
            # the cross-rank sums, in-process (a strategy playing two identical ranks)
            "tests/integration/test_rank_reduce.py",  # + the services' sums (DoReMi, DGA, Skill-It)
            # a real Skill-It run: the eval_loss service reached with the trainer, pinned
            "tests/integration/test_skillit_train.py",
            "tests/integration/test_host_batch.py",  # teardown detaches the capture
            # strategies that read the round's other statistics (lr, loss sums, tokens)
            "tests/integration/test_grad_strategies.py::test_planted_target_domain_gains_weight",
            "tests/integration/test_odm_train.py::test_odm_raises_the_domain_with_the_highest_training_loss[importance]",
            "tests/integration/test_odm_train.py::test_unimax_caps_the_small_domain",
            "tests/integration/test_starvation.py::test_rnb_large_lambda_starves_domains_visibly",
            "tests/integration/test_divergence.py::test_off_simplex_update_fails_the_run_naming_the_strategy",
            "tests/integration/test_divergence.py::test_a_vertex_of_the_simplex_is_adopted",
            "tests/integration/test_domain_accounting.py::test_loss_weights_reach_the_model_and_the_sampler_keeps_its_own",
            "tests/integration/test_rnb_train.py::test_warmup_rounds_keep_uniform_weights",
            # the per-round metrics reach the logger at the round's step (balance/gq_norm too)
            "tests/integration/test_rnb_train.py::test_rnb_run[exact]",
            # a real trainer reaches the evaluator service; the round index, draws and tokens
            "tests/integration/test_probe_evaluator_run.py",
            # a kill + resume mid-round: pins state_dict / load_state_dict
            "tests/integration/test_rnb_train.py::test_rnb_resume_mid_round_is_exact",
            "tests/integration/test_readme_claims.py::test_capture_mode_auto_threshold",
            # detours: sandboxes leave no trace; a kill inside an in-line detour resumes exactly
            "tests/integration/test_detours.py::test_sandboxed_detours_leave_no_trace_and_are_metered",
            "tests/integration/test_detours.py::test_inline_detours_resume_inside_a_detour_exactly",
        ),
    ),
    "capture": Module(
        ("src/rnb/balance/capture/*",),
        (
            "tests/unit/test_grads.py",
            "tests/unit/test_fused_capture.py",
            "tests/unit/test_capture_spans.py",
            "tests/unit/test_classifier.py",
            "tests/unit/test_rowbuffer.py",
            "tests/unit/test_capture_edges.py",
            "tests/unit/test_capture_sketch_rows.py",
            "tests/unit/test_capture_api.py",
            "tests/unit/test_capture_devices.py",
            "tests/unit/test_capture_rows.py",
            "tests/unit/test_capture_fused_edges.py",
            "tests/integration/test_host_batch.py",
            "tests/integration/test_fused_capture_run.py",
            "tests/integration/test_readme_claims.py::test_capture_mode_auto_threshold",
        ),
    ),
    "sampler": Module(
        ("src/rnb/data/sampler.py",),
        ("tests/unit/test_sampler.py", "tests/unit/test_detour_plan.py"),
    ),
    "assign": Module(("src/rnb/regroup/assign.py",), ("tests/unit/test_assign.py",)),
    "selection": Module(
        (
            "src/rnb/regroup/selection.py",
            "src/rnb/regroup/scores.py",
            "src/rnb/regroup/sweep_values.py",
        ),
        ("tests/unit/test_selection.py",),
    ),
    "pipeline": Module(
        (
            "src/rnb/regroup/pipeline.py",
            "src/rnb/regroup/pipeline_key.py",
            "src/rnb/regroup/pipeline_compute.py",
        ),
        (
            "tests/unit/test_pipeline.py",
            "tests/unit/test_pipeline_cache.py",
            "tests/integration/test_pipeline_labels.py",
            "tests/unit/test_fit_sample.py",
            "tests/unit/test_cache_concurrency.py::test_a_new_code_version_misses_every_cache",
        ),
    ),
}

# Copied into each scratch repository (mutmut itself copies src/ and tests/).
_COPY = ("src", "tests", "conf", "benchmarks", "pyproject.toml")


def _resolve(name: str) -> str:
    """A module's name, or the path of one of its files (``src/rnb/balance/rnb_math.py``) or
    folders (``src/rnb/balance/strategies``). No partial match: a typo must not silently run
    another module."""
    if name in MODULES:
        return name
    path = name.removeprefix("./").rstrip("/")
    for key, mod in MODULES.items():
        if any(fnmatch.fnmatch(path, p) or path == p.rstrip("*").rstrip("/") for p in mod.paths):
            return key
    raise SystemExit(f"--module {name!r}: unknown; choose from {sorted(MODULES)}")


def _existing_tests(repo: Path, tests: tuple[str, ...]) -> list[str]:
    """Test ids whose file exists in ``repo`` (a subset may predate some test files)."""
    return [t for t in tests if (repo / t.split("::")[0]).exists()]


def _mutmut_config(mod: Module, tests: list[str]) -> str:
    def arr(xs: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(x) for x in xs) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {arr(mod.paths)}\n"
        f'also_copy = ["conf", "benchmarks"]\n'
        f"pytest_add_cli_args_test_selection = {arr(tests)}\n"
        # the subset is chosen by node id above, slow ones included (a kill + resume inside a
        # detour is slow but pins the callback's state); GPU and DDP tests stay out (DDP ranks
        # are subprocesses that would import the unmutated package)
        'pytest_add_cli_args = ["-m", "not gpu and not ddp", "-p", "no:cacheprovider"]\n'
        # torch is not fork-safe once its thread pools started: fork workers from a clean server
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
    )


def _prepare(repo: Path, work: Path, mod: Module, tests: list[str]) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for item in _COPY:
        src = repo / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, work / item)
    text = (work / "pyproject.toml").read_text()
    if "[tool.mutmut]" in text:
        raise SystemExit("pyproject.toml already has [tool.mutmut]; MODULES here is the config")
    (work / "pyproject.toml").write_text(text + _mutmut_config(mod, tests))


def _results(work: Path) -> dict[str, str]:
    """Mutant name -> status, read from mutmut's ``.meta`` files."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = status_by_exit_code[code]
    return out


#: every mutant's latest outcome, kept beside mutmut's records: a run by name (a re-run)
#: rewrites mutmut's ``.meta`` files with the named mutants only, the others reading as
#: never checked, so the killed ones of the first run would drop out of the score
_LEDGER = "outcomes.json"


def _outcomes(work: Path) -> dict[str, str]:
    """Mutant name -> latest outcome: the ledger when a run wrote one, else mutmut's records."""
    ledger = work / _LEDGER
    return json.loads(ledger.read_text()) if ledger.exists() else _results(work)


def _save_outcomes(work: Path, status: dict[str, str]) -> None:
    (work / _LEDGER).write_text(json.dumps(status, indent=0, sort_keys=True))


def merge_outcomes(
    earlier: dict[str, str], rerun: dict[str, str], names: list[str]
) -> dict[str, str]:
    """Outcomes after re-running ``names``: theirs from ``rerun`` (mutmut's records, which
    then hold only those), every other mutant's from ``earlier``; a re-run mutant that the
    time limit cut off (``not checked`` or missing) keeps its earlier outcome."""
    out = dict(earlier)
    out.update({k: rerun[k] for k in names if rerun.get(k, "not checked") != "not checked"})
    return out


def _show(work: Path, mutant: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=work,
                          capture_output=True, text=True)  # fmt: skip
    lines = [
        ln for ln in proc.stdout.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
    ]
    print(f"  {mutant}:\n" + "\n".join(f"      {ln}" for ln in lines))


def _stale(repo: Path, work: Path) -> list[str]:
    """Files of ``src``/``tests``/``conf`` that differ between ``repo`` and the scratch copy."""
    stale = []
    for top in ("src", "tests", "conf"):
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                copy = work / path.relative_to(repo)
                if not copy.is_file() or copy.read_bytes() != path.read_bytes():
                    stale.append(str(path.relative_to(repo)))
    return stale


def run_module(
    name: str, repo: Path, workroot: Path, timeout: float, children: int, resume: bool = False
) -> dict:
    """Mutate one module, run its tests against every mutant, return the tally.

    With ``resume``, an existing scratch copy is reused when its sources and tests equal the
    repository's, so mutmut checks only the mutants it has no result for yet (a long module can
    be scored over several sittings); a copy of other code is refused rather than mixed in.

    Raises:
        SystemExit: no test of the module exists, or ``resume`` meets a stale scratch copy.
    """
    mod = MODULES[name]
    tests = _existing_tests(repo, mod.tests)
    if not tests:
        raise SystemExit(f"{name}: none of its tests exist in {repo}: {mod.tests}")
    work = workroot / name
    if resume and (work / "mutants").is_dir():
        stale = _stale(repo, work)
        if stale:
            raise SystemExit(
                f"--resume {name}: {work} was made from other code ({len(stale)} files differ, "
                f"e.g. {stale[0]}); run without --resume to start afresh"
            )
    else:
        _prepare(repo, work, mod, tests)
    t0 = time.monotonic()
    rc = _mutmut_run(work, [], work / "mutmut.log", timeout, children)
    status = _results(work)  # a whole run (or its resumption) leaves every outcome there
    _save_outcomes(work, status)
    return _tally(name, work, time.monotonic() - t0, rc, status)


def _mutmut_run(
    work: Path, names: list[str], log: Path, timeout: float, children: int
) -> int | str:
    """``mutmut run [names]`` in the scratch copy; its exit code, or ``"timeout"``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # import the mutants
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("RNB_CACHE_DIR", str(work / "cache"))
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names]
    with log.open("w") as fh:
        try:
            return subprocess.run(
                cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


#: outcomes a re-run does not repeat
_DONE = ("killed", "timeout", "not checked")


def _tally(name: str, work: Path, wall: float, rc: int | str, status: dict[str, str]) -> dict:
    """The module's score from every mutant's outcome."""
    killed = sum(s in ("killed", "timeout") for s in status.values())
    checked = {k: s for k, s in status.items() if s != "not checked"}
    survivors = sorted(k for k, s in checked.items() if s not in ("killed", "timeout"))
    return {
        "module": name,
        "killed": killed,
        "total": len(checked),
        "not_checked": len(status) - len(checked),
        "score_pct": round(100.0 * killed / max(len(checked), 1), 1),
        "wall_s": round(wall, 1),
        "returncode": rc,
        "survivors": {k: checked[k] for k in survivors},
        "workdir": str(work),
    }


def rerun_survivors(name: str, repo: Path, workroot: Path, timeout: float, children: int) -> dict:
    """Run a finished (or timed-out) scratch copy's survivors again, by name, against the
    repository's current tests, configs and unmutated sources.

    This scores the tests added after a long run without repeating it: the copy's mutants and
    its killed ones stay, every mutant that survived (or had no test) is checked again, and
    the ones the run never reached stay "not checked". The mutated files themselves must be
    unchanged, else the mutants would be of other code.

    Raises:
        SystemExit: no scratch copy, or the module's own files changed since it was made.
    """
    mod = MODULES[name]
    work = workroot / name
    if not (work / "mutants").is_dir():
        raise SystemExit(f"--rerun-survivors {name}: no scratch copy in {work}; run it first")
    mutated = {p.relative_to(repo) for pat in mod.paths for p in sorted(repo.glob(pat))}
    changed = [str(p) for p in mutated if (work / p).read_bytes() != (repo / p).read_bytes()]
    if changed:
        raise SystemExit(
            f"--rerun-survivors {name}: {changed[0]} changed since {work} was made; "
            "run the module afresh"
        )
    tests = _existing_tests(repo, mod.tests)
    for root in (work, work / "mutants"):
        for top in ("tests", "conf"):
            shutil.rmtree(root / top, ignore_errors=True)
            shutil.copytree(repo / top, root / top, ignore=shutil.ignore_patterns("__pycache__"))
        for path in (repo / "src").rglob("*.py"):
            if path.relative_to(repo) not in mutated:
                dest = root / path.relative_to(repo)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
        text = (root / "pyproject.toml").read_text()
        text = text[: text.index("[tool.mutmut]")] + _mutmut_config(mod, tests)
        (root / "pyproject.toml").write_text(text)
    status = _outcomes(work)
    again = sorted(k for k, s in status.items() if s not in _DONE)
    t0 = time.monotonic()
    rc: int | str = 0
    if again:  # mutmut with no names would run every mutant
        rc = _mutmut_run(work, again, work / "rerun.log", timeout, children)
        status = merge_outcomes(status, _results(work), again)
        _save_outcomes(work, status)
    row = _tally(name, work, time.monotonic() - t0, rc, status)
    row["rerun"] = len(again)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="module name or path (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the modules and exit")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="repository to copy (default: this one)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rnb-mutation"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per module")
    parser.add_argument("--children", type=int, default=2, help="parallel mutant workers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the module's scratch copy (same code only): check just the mutants left",
    )
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="check a scratch copy's survivors again with the repository's current tests",
    )
    args = parser.parse_args(argv)
    if args.resume and args.rerun_survivors:
        parser.error("--resume and --rerun-survivors exclude each other")
    names = [_resolve(n) for n in args.module] if args.module else list(MODULES)
    if args.list:  # with --module: only those (names checked), so any command can be dry-run
        for key in names:
            mod = MODULES[key]
            print(f"{key:12s} {' '.join(mod.paths)}\n{'':12s} tests: {' '.join(mod.tests)}")
        return 0
    rows = []
    for name in names:
        if args.rerun_survivors:
            row = rerun_survivors(
                name, args.repo.resolve(), args.workdir, args.timeout, args.children
            )
        else:
            row = run_module(
                name, args.repo.resolve(), args.workdir, args.timeout, args.children, args.resume
            )
        rows.append(row)
        print(
            f"{name:12s} killed {row['killed']}/{row['total']} = {row['score_pct']:.1f} %"
            f"  ({row['wall_s']:.0f} s{'' if row['returncode'] == 0 else ', rc=' + str(row['returncode'])}"
            f"{', ' + str(row['not_checked']) + ' not checked' if row['not_checked'] else ''}"
            f"{', ' + str(row['rerun']) + ' re-run by name' if 'rerun' in row else ''})",
            flush=True,
        )
        untested: dict[str, int] = {}
        for mutant, status in row["survivors"].items():
            if status == "no tests":  # grouped per function: often dozens
                func = mutant.rsplit("__mutmut_", 1)[0]
                untested[func] = untested.get(func, 0) + 1
            else:
                print(f"    {status:10s} {mutant}")
        for func, count in untested.items():
            print(f"    no tests   {func} ({count} mutants)")
        if args.diffs:
            for mutant, status in row["survivors"].items():
                if status != "no tests":
                    _show(Path(row["workdir"]), mutant)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
