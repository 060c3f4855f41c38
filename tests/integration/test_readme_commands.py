"""Every command in the README's ```bash blocks runs (issue 8 kind 12: the README works verbatim).

The commands are parsed from the README at test time, so editing a command edits its test.
Each command is dispatched by its program to a runner below; a command no runner knows, or
a placeholder (``…``, ``<...>``) the test does not materialise, FAILS the test (adding a
README command means teaching this file how to run it).

The console scripts (``rnb-train``, ``rnb-regroup``, ``rnb-report``) run in-process: the
parsed argv goes to the entry point's ``main`` in this interpreter, in a fresh cwd, with
Hydra's global state cleared (``tests/cli.run_main``), which saves a 15-25 s subprocess
start per command. The first default-run command of each console script runs as a
subprocess of the installed script instead (:data:`SUBPROCESS`), so the entry points
themselves stay tested; ``test_multirun.py`` runs a multirun sweep as a subprocess. What is
added to a command:

* ``rnb-train``: the ``TINY`` overrides (those the command does not set itself) and a
  temporary ``hydra.run.dir`` / ``hydra.sweep.dir``; multirun (``-m``) runs as such.
* ``rnb-regroup``: a small testbed and a temporary run dir.
* ``rnb-report``: run on an earlier tiny run (the ``multirun/<date>/<time>`` placeholder);
  ``report.md``, ``report.csv`` and ``runs.csv`` must appear in ``--out`` (or ``DIR/report``).
* ``rnb-train experiment=digits``: ``DIGITS_TINY`` (40 steps) instead of ``TINY``.
* ``python benchmarks/digits_table.py``: 40-step runs, with seed 0 only (default) and with
  the README's seeds (``slow``); the printed table's rows and ``±`` cells are checked.
* Commands using MiniLM, ``trainer=ddp_cpu``, ``regroup=faiss`` (a long k sweep), a tracker
  logger (``test_loggers.py`` covers them in-process) or more than 4 multirun jobs are ``slow``;
  a MiniLM command also runs by default with ``regroup/embedder=tfidf`` (its overrides
  still parse and compose).
* ``python -m pytest``: collected (``--collect-only``), not run inside this run.
* ``pip install`` / ``python3 -m venv``: a venv is created; the pins and extras named must
  exist in pyproject.toml and be satisfied by this environment (nothing is downloaded).
* ``python tools/mutation.py``: dry-run with ``--list`` (options and module names checked).
* ``jupyter lab``: the front end must be installed (``--version``); the notebook itself is
  executed by ``test_notebook.py``.
* Packaged sweeps (``sweep=<name>``): the job count comes from the sweep's grid; a run
  narrows each swept key the command does not set to its first value (the grouping axis
  ``regroup`` keeps both), so ``slow`` runs stay small (``test_sweeps.py`` and
  ``test_configs.py`` cover every job's composition by default).
* Paper experiments (``experiment=paper/<name>``): the data paths become tiny files in the
  dataset's schema (``tests/paper_fixtures.py``), the model the tiny GPT-Neo, ``trainer=gpu``
  is dropped without CUDA; a default ``compose`` variant resolves the command's config, the
  ``fixture`` run is ``slow`` (``test_experiments.py`` runs each experiment by default).
* ``hydra/launcher=slurm|submitit_slurm``: composed, the launcher instantiated (nothing is
  submitted; skipped without the ``slurm`` extra). ``logger=tensorboard|wandb|mlflow``: run
  verbatim, skipped when the tracker's package is not installed.
* Pipelines: an ``rnb-train`` command that reads another README command's run dir
  (``strategy.reference=outputs/…`` or ``strategy.from_summary=outputs/…/summary.json``, e.g.
  DoReMi's three stages) runs the command writing it (its ``hydra.run.dir``) first when that
  output is missing. Pipeline commands are ``slow`` here: ``test_doremi_run.py`` runs them
  verbatim in-process by default and checks what each stage hands to the next.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from packaging.requirements import Requirement

from rnb.config import compose
from tests.cli import SCRIPTS, run_cli, run_main
from tests.conftest import DIGITS_TINY, TINY
from tests.paper_fixtures import write_fixture
from tests.sweeps import sweep_jobs, sweep_params

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PLACEHOLDER = re.compile(r"…|<[^>]*>|\.\.\.")


@dataclass
class Command:
    """One README command: its words (comments dropped) and leading ``VAR=value`` env."""

    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def overrides(self) -> list[str]:
        return [a for a in self.argv[1:] if "=" in a and not a.startswith("-")]


def readme_commands(text: str) -> list[Command]:
    """Commands of every ```bash block (continuation lines joined, comment lines skipped)."""
    commands = []
    for block in re.findall(r"^```bash[ \t]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            env = {}
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            commands.append(Command(line.split(" #")[0].strip(), words, env))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- placeholders


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory commands run in, with the README's placeholders materialised."""
    root = tmp_path_factory.mktemp("readme")
    rows = [
        {"text": f"record {i} about topic {i % 3} " + "word " * (i % 7), "source": f"s{i % 3}"}
        for i in range(300)
    ]
    (root / "my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def previous_summary(workdir: Path) -> Path:
    """``outputs/…/summary.json``: the summary of an earlier tiny run."""
    from rnb.train import train

    out = workdir / "outputs" / "earlier"
    train(compose("train", [*TINY, "trainer.max_steps=4", f"output_dir={out}"]))
    return out / "summary.json"


def _materialise_word(word: str, cmd: Command, request: pytest.FixtureRequest) -> str:
    if "outputs/…/summary.json" in word:
        path = request.getfixturevalue("previous_summary")
        word = word.replace("outputs/…/summary.json", str(path))
    elif re.match(r"multirun/\S*(…|<|\.\.\.)", word):  # a multirun dir: any run dir will do
        word = str(request.getfixturevalue("previous_summary").parent)
    if PLACEHOLDER.search(word):
        pytest.fail(f"README command {cmd.text!r}: placeholder {word!r} is not materialised")
    return word


def _materialise(cmd: Command, request: pytest.FixtureRequest) -> Command:
    """The command with README placeholders replaced by real paths; fails on unknown ones."""
    return Command(
        cmd.text,
        [_materialise_word(w, cmd, request) for w in cmd.argv],
        {k: _materialise_word(v, cmd, request) for k, v in cmd.env.items()},
    )


# ---------------------------------------------------------------- runners


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _uses_minilm(cmd: Command, app: str) -> bool:
    overrides = [o.split(",")[0] for o in cmd.overrides if not o.startswith("hydra.")]
    try:
        cfg = compose(app, [o for o in overrides if not _key(o).startswith("hydra")])
    except Exception:  # a command that does not compose fails in its own run, not here
        return False
    embedder = (cfg.get("regroup") or {}).get("embedder") or {}
    return "SentenceTransformer" in str(embedder.get("_target_", ""))


def _multiprocess(argv: list[str]) -> bool:
    """Whether console-script ``argv`` starts processes of its own: a Hydra launcher other
    than the in-process basic one (``hydra/launcher=...``), or a trainer strategy that
    re-launches the script per rank (DDP, FSDP: Lightning re-runs ``sys.argv``, which
    in-process is pytest's). Such a command runs as a subprocess; so does one whose
    (first job's) config does not compose."""
    overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    if any(_key(o) == "hydra/launcher" for o in overrides):
        return True
    if argv[0] != "rnb-train":
        return False
    if "-m" in argv:  # the first job of a sweep (a value with braces is one value)
        overrides = [o if "{" in o else o.split(",")[0] for o in overrides]
    try:
        cfg = compose("train", [o for o in overrides if not _key(o).startswith("hydra")])
    except Exception:
        return True
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    strategy = str(trainer.get("strategy", "auto"))
    return strategy not in ("auto", "None") or devices != 1 or nodes != 1


def _sweep_name(cmd: Command) -> str | None:
    """The packaged sweep a command runs (``sweep=<name>``), if any."""
    return next((o.split("=", 1)[1] for o in cmd.overrides if _key(o) == "sweep"), None)


def _n_jobs(cmd: Command) -> int:
    name = _sweep_name(cmd)
    if name is not None:  # the packaged grid, with the command's own keys replacing its values
        return len(sweep_jobs(name, [o for o in cmd.overrides if _key(o) != "sweep"]))
    n = 1
    for o in cmd.overrides:
        n *= len(o.split("=", 1)[1].split(",")) if "{" not in o else 1
    return n


def _narrow_sweep(cmd: Command) -> list[str]:
    """Overrides that cut a packaged sweep to one value per swept key (both groupings kept)."""
    name = _sweep_name(cmd)
    if name is None:
        return []
    own = {_key(o) for o in cmd.overrides}
    first_job = sweep_jobs(name)[0]  # the first value of every swept key
    return [o for o in first_job if _key(o) not in own and _key(o) != "regroup"]


#: experiment=paper/<name> -> the fixture schema of its data (tests/paper_fixtures.py).
PAPER_SCHEMA = {
    "dolly": "dolly",
    "supnatinst": "supnatinst",
    "supnatinst_test": "supnatinst",
    "s1": "s1",
}


def _paper(cmd: Command) -> str | None:
    value = next((o.split("=", 1)[1] for o in cmd.overrides if _key(o) == "experiment"), "")
    return value.removeprefix("paper/") if value.startswith("paper/") else None


def _paper_overrides(cmd: Command, workdir: Path) -> tuple[list[str], set[str]]:
    """Tiny stand-ins for a paper experiment's data and model: ``(extra overrides, command
    overrides to drop)``. Data files the command names are written in the dataset's schema;
    a hub default is replaced by such a file."""
    name = _paper(cmd)
    kind = PAPER_SCHEMA[name]
    extra = [o for o in TINY if not o.startswith("data.synthetic.")]
    extra += ["model=tiny_gptneo", "model.lr=3e-3"]
    drop = {o for o in cmd.overrides if _key(o) == "model.pretrained"}
    for key in ("data.train_path", "data.eval_path"):
        given = next((o.split("=", 1)[1] for o in cmd.overrides if _key(o) == key), None)
        if given is None and (key == "data.train_path" or name == "supnatinst_test"):
            given = f"{name}_{key.split('.')[1]}.jsonl"
            extra.append(f"{key}={given}")
        if given is not None and not (workdir / given).exists():
            write_fixture(kind, workdir / given, per_domain=60 if "train" in key else 10)
    regroup_swept = _sweep_name(cmd) is not None and "regroup" in sweep_params(_sweep_name(cmd))
    if not regroup_swept and not any(_key(o) == "regroup" for o in cmd.overrides):
        extra += ["regroup/embedder=tfidf", "regroup.embedder.progress=false"]
        if not any(_key(o) == "regroup.k_values" for o in cmd.overrides):
            extra.append("regroup.k_values=[3,4,5]")
    return extra, drop


def _no_gpu(cmd: Command) -> set[str]:
    """``trainer=gpu`` is dropped on a machine without CUDA (the command still composes it)."""
    import torch

    return set() if torch.cuda.is_available() else {"trainer=gpu"}


def _run_app(cmd: Command, request: pytest.FixtureRequest, extra: list[str]) -> None:
    workdir: Path = request.getfixturevalue("workdir")
    real = _materialise(cmd, request)
    argv = real.argv
    own = {_key(o) for o in cmd.overrides}
    small = (
        TINY
        if argv[0] == "rnb-train"
        else ["data.synthetic.n_train=400", "data.synthetic.n_eval=80"]
    )
    drop: set[str] = _no_gpu(cmd)
    if _paper(cmd) is not None:
        small, dropped = _paper_overrides(cmd, workdir)
        drop |= dropped
    if any(_key(o) == "data" and not o.endswith("=synthetic") for o in cmd.overrides):
        small = [o for o in small if not o.startswith("data.synthetic.")]
    if "experiment=digits" in cmd.overrides:  # its own data and model: none of TINY's keys
        small = DIGITS_TINY
    small = [o for o in small if _key(o) not in own] + _narrow_sweep(cmd)
    argv = [a for a in argv if a not in drop]
    tag = re.sub(r"\W+", "_", cmd.text)[:60]
    where = (
        [f"hydra.sweep.dir={workdir / 'multirun' / tag}"]
        if "-m" in argv
        else ([] if "hydra.run.dir" in own else [f"hydra.run.dir={workdir / 'runs' / tag}"])
    )
    _launch(cmd, [*argv, *small, *extra, *where], workdir, real.env)
    if "hydra/callbacks=report" in argv or "experiment=smoke" in argv:  # the report callback
        root = Path(where[0].split("=", 1)[1]) if where else workdir / own_dir(cmd)
        assert (root / "report" / "report.md").is_file(), f"{cmd.text!r}: no report in {root}"


def own_dir(cmd: Command) -> str:
    return next(o.split("=", 1)[1] for o in cmd.overrides if _key(o) == "hydra.run.dir")


def run_rnb(cmd: Command, request: pytest.FixtureRequest) -> None:
    _run_app(cmd, request, [])


#: Keys whose value may name another README command's run dir (a pipeline input).
PIPELINE_KEYS = ("strategy.reference", "strategy.from_summary")


def _reads(cmd: Command) -> list[str]:
    """Run-dir paths under ``outputs/`` this command reads (placeholders excluded)."""
    return [
        o.split("=", 1)[1]
        for o in cmd.overrides
        if _key(o) in PIPELINE_KEYS
        and o.split("=", 1)[1].startswith("outputs/")
        and not PLACEHOLDER.search(o)
    ]


def _run_dir(cmd: Command) -> str | None:
    return next((o.split("=", 1)[1] for o in cmd.overrides if _key(o) == "hydra.run.dir"), None)


def _producer(path: str) -> Command:
    """The README command whose ``hydra.run.dir`` holds ``path``."""
    for c in COMMANDS:
        d = _run_dir(c)
        if d and (path == d or path.startswith(d.rstrip("/") + "/")):
            return c
    pytest.fail(f"README: no command writes {path!r} (no hydra.run.dir containing it)")


def _in_pipeline(cmd: Command) -> bool:
    d = _run_dir(cmd)
    read = {p for c in COMMANDS for p in _reads(c)}
    writes = d is not None and any(p == d or p.startswith(d.rstrip("/") + "/") for p in read)
    return bool(_reads(cmd)) or writes


def run_rnb_pipeline(cmd: Command, request: pytest.FixtureRequest) -> None:
    """Run the commands writing this command's inputs first (when missing), then it."""
    workdir: Path = request.getfixturevalue("workdir")
    for path in _reads(cmd):
        if not (workdir / path).exists():
            run_rnb_pipeline(_producer(path), request)
    _run_app(cmd, request, [])


def run_rnb_tfidf(cmd: Command, request: pytest.FixtureRequest) -> None:
    _run_app(cmd, request, ["regroup/embedder=tfidf", "regroup.embedder.progress=false"])


def run_paper_compose(cmd: Command, request: pytest.FixtureRequest) -> None:
    """A paper experiment's command composes and resolves, with its data paths as given."""
    over = [o for o in cmd.overrides if not o.startswith("hydra") and o not in _no_gpu(cmd)]
    over = [o.split(",")[0] for o in over]  # a sweep: its first job
    paths = {"data.train_path": "train.jsonl", "data.eval_path": "test.jsonl"}
    over += [f"{k}={v}" for k, v in paths.items() if k not in {_key(o) for o in over}]
    OmegaConf.to_container(compose("train", over), resolve=True)


TRACKERS = {"logger=tensorboard": "tensorboard", "logger=wandb": "wandb", "logger=mlflow": "mlflow"}


def run_tracker(cmd: Command, request: pytest.FixtureRequest) -> None:
    """``logger=<tracker>``: verbatim, when the tracker's package (its extra) is installed."""
    module = next(TRACKERS[o] for o in cmd.overrides if o in TRACKERS)
    pytest.importorskip(module, reason=f"{cmd.text!r} needs the `{module}` extra")
    _run_app(cmd, request, [])


def run_launcher_compose(cmd: Command, request: pytest.FixtureRequest) -> None:
    """A SLURM sweep: the command's config (its first job) composes with the launcher, which
    instantiates; nothing is submitted."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import instantiate

    from rnb.config import config_dir

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `slurm` extra")
    over = [o.split(",")[0] for o in cmd.overrides if o not in _no_gpu(cmd)]
    over += [f"hydra.sweep.dir={request.getfixturevalue('workdir') / 'slurm'}"]
    if _paper(cmd) is not None:
        over += ["data.train_path=train.jsonl"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("train", over, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher", type(launcher)
    OmegaConf.to_container(cfg.data, resolve=True)


def run_pytest(cmd: Command, request: pytest.FixtureRequest) -> None:
    run_cli([sys.executable, *cmd.argv[1:], "--collect-only", "-q"], ROOT, env=cmd.env)


def _digits_table(cmd: Command, request: pytest.FixtureRequest, seeds: list[str] | None) -> None:
    """``python benchmarks/digits_table.py``: every arm on 40-step runs; checks the table.

    ``seeds`` replaces the command's ``--seeds`` (``None``: the README's own)."""
    argv = list(cmd.argv[1:])
    if seeds is not None and "--seeds" in argv:
        at = argv.index("--seeds") + 1
        while at < len(argv) and argv[at].isdigit():
            argv.pop(at)
        argv[at:at] = seeds
    n = len(argv[argv.index("--seeds") + 1 :]) if seeds is None else len(seeds)
    out = request.getfixturevalue("workdir") / "digits_table" / str(n)
    proc = run_cli([sys.executable, *argv, "--out", str(out), *DIGITS_TINY], ROOT)
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    rows = [[c.strip() for c in r] for r in rows[1:]]
    assert [r[0] for r in rows] == ["stratified", "rnb", "stratified", "rnb"], proc.stdout
    assert [r[1][:12] for r in rows] == [
        "predefined (",
        "predefined (",
        "regrouped (m",
        "regrouped (m",
    ]
    assert all(("±" in r[2]) == (n > 1) and r[-1] == str(n) for r in rows), proc.stdout


def run_digits_table_one_seed(cmd: Command, request: pytest.FixtureRequest) -> None:
    _digits_table(cmd, request, ["0"])


def run_digits_table(cmd: Command, request: pytest.FixtureRequest) -> None:
    _digits_table(cmd, request, None)


def _check_requirement(req: Requirement, cmd: Command) -> None:
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"README command {cmd.text!r} installs {req}, which is not installed here")
    assert req.specifier.contains(installed, prereleases=True), (
        f"README command {cmd.text!r} pins {req}, but this environment has {installed}"
    )


def run_install(cmd: Command, request: pytest.FixtureRequest) -> None:
    """``python3 -m venv X && . X/bin/activate && pip install ...`` without downloading."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    steps: list[list[str]] = [[]]
    for word in cmd.argv:
        steps.append([]) if word == "&&" else steps[-1].append(word)
    for argv in steps:
        if argv[1:3] == ["-m", "venv"] and argv[0] in ("python", "python3"):
            target = request.getfixturevalue("workdir") / "venv_check"
            run_cli([sys.executable, "-m", "venv", "--without-pip", str(target)], ROOT)
        elif argv[:1] in (["."], ["source"]):
            assert len(argv) == 2 and argv[1].endswith("bin/activate"), argv
        elif argv[:2] == ["pip", "install"]:
            for arg in (a for a in argv[2:] if not a.startswith("-")):
                local = re.fullmatch(r"\.(?:\[(.*)\])?", arg)
                if local is None:
                    _check_requirement(Requirement(arg), cmd)
                    continue
                wanted = [e for e in (local.group(1) or "").split(",") if e]
                missing = sorted(set(wanted) - set(extras))
                assert not missing, (
                    f"README installs extras {missing}; pyproject has {list(extras)}"
                )
                for r in [*project["dependencies"], *(r for e in wanted for r in extras[e])]:
                    _check_requirement(Requirement(r), cmd)
        else:
            pytest.fail(f"README command {cmd.text!r}: no runner for the step {argv}")


def run_jupyter_lab(cmd: Command, request: pytest.FixtureRequest) -> None:
    real = _materialise(cmd, request)
    for word in real.argv[2:]:
        if not word.startswith("-"):
            assert (ROOT / word).exists(), f"README command {cmd.text!r}: {word} does not exist"
    run_cli([*real.argv[:2], "--version"], ROOT, env=real.env)


def run_mutation(cmd: Command, request: pytest.FixtureRequest) -> None:
    """``python tools/mutation.py ...``: a dry run (``--list`` with the same arguments checks
    the options and module names; a real run takes 5-60 min per module)."""
    run_cli([sys.executable, *cmd.argv[1:], "--list"], ROOT, env=cmd.env)


def run_report(cmd: Command, request: pytest.FixtureRequest) -> None:
    """``rnb-report DIR... [--out DIR]`` on an earlier tiny run; the report files must exist."""
    workdir: Path = request.getfixturevalue("workdir")
    real = _materialise(cmd, request)
    _launch(cmd, real.argv, workdir, real.env)
    args = real.argv[1:]
    out = Path(args[args.index("--out") + 1]) if "--out" in args else Path(args[0]) / "report"
    out = out if out.is_absolute() else workdir / out
    for name in ("report.md", "report.csv", "runs.csv"):
        assert (out / name).is_file(), f"README command {cmd.text!r} wrote no {out / name}"


Runner = Callable[[Command, pytest.FixtureRequest], None]


def _dispatch(cmd: Command) -> list[tuple[str, Runner, bool]]:
    """``(variant, runner, slow)`` for a command; empty when no runner knows it."""
    prog = cmd.argv[0] if cmd.argv else ""
    if "&&" in cmd.argv or (prog == "pip" and cmd.argv[1:2] == ["install"]):
        return [("install", run_install, False)]
    if cmd.argv[:3] == ["python", "-m", "pytest"]:
        return [("collect", run_pytest, True)]  # 45 s of imports; CI runs slow tests too
    if cmd.argv[:2] == ["python", "tools/mutation.py"]:
        return [("dry-run", run_mutation, False)]
    if cmd.argv[:2] == ["python", "benchmarks/digits_table.py"]:
        return [("seed0", run_digits_table_one_seed, True), ("verbatim", run_digits_table, True)]
    if cmd.argv[:2] == ["jupyter", "lab"]:
        return [("version", run_jupyter_lab, False)]
    if prog == "rnb-report":
        return [("verbatim", run_report, False)]
    if prog == "rnb-train" and any("hydra/launcher=" in o and "slurm" in o for o in cmd.argv):
        return [("compose", run_launcher_compose, False)]
    if prog == "rnb-train" and _paper(cmd) is not None:
        return [("compose", run_paper_compose, False), ("fixture", run_rnb, True)]
    if prog == "rnb-train" and any(o in TRACKERS for o in cmd.overrides):
        return [("verbatim", run_tracker, True)]  # test_loggers.py logs in-process
    if prog in ("rnb-train", "rnb-regroup"):
        app = "train" if prog == "rnb-train" else "regroup"
        heavy = "trainer=ddp_cpu" in cmd.overrides or ("-m" in cmd.argv and _n_jobs(cmd) > 4)
        heavy = heavy or "regroup=faiss" in cmd.overrides  # a 51-value k sweep (55 s)
        if prog == "rnb-train" and _in_pipeline(cmd):
            return [("pipeline", run_rnb_pipeline, True)]
        if _uses_minilm(cmd, app):
            return [("tfidf", run_rnb_tfidf, heavy), ("verbatim", run_rnb, True)]
        return [("verbatim", run_rnb, heavy)]
    return []


#: Runners that start a console script (``SCRIPTS``) through :func:`_launch`.
CONSOLE_RUNNERS = {run_rnb, run_rnb_tfidf, run_rnb_pipeline, run_tracker, run_report}


def _first_per_script(commands: list[Command]) -> set[str]:
    """The first command of each console script that a default (not ``slow``) run starts."""
    first: dict[str, str] = {}
    for cmd in commands:
        for _, runner, slow in _dispatch(cmd):
            if runner in CONSOLE_RUNNERS and not slow and cmd.argv[0] in SCRIPTS:
                first.setdefault(cmd.argv[0], cmd.text)
    return set(first.values())


#: README commands run as a subprocess of the installed console script (one per script);
#: every other console-script command calls the same ``main`` in-process.
SUBPROCESS = _first_per_script(COMMANDS)


def _launch(cmd: Command, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run console-script ``argv`` for README command ``cmd``: a subprocess for the
    :data:`SUBPROCESS` representatives and for commands that start processes of their own
    (:func:`_multiprocess`), else in-process (same entry point, same argv)."""
    subprocess = cmd.text in SUBPROCESS or _multiprocess(argv)
    (run_cli if subprocess else run_main)(argv, cwd, env=env)


def _params() -> list:
    params = []
    for cmd in COMMANDS:
        variants = _dispatch(cmd) or [("unknown", None, False)]
        for variant, runner, slow in variants:
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(cmd, runner, id=f"{variant}:{cmd.text[:70]}", marks=marks))
    return params


def test_readme_has_commands() -> None:
    progs = {c.argv[0] for c in COMMANDS if c.argv}
    assert {"rnb-train", "rnb-regroup"} <= progs, progs


@pytest.mark.parametrize(("cmd", "runner"), _params())
def test_readme_command_runs(
    cmd: Command, runner: Runner | None, request: pytest.FixtureRequest
) -> None:
    if runner is None:
        pytest.fail(
            f"README command {cmd.text!r} has no runner in {Path(__file__).name}: "
            "teach _dispatch how to run it"
        )
    runner(cmd, request)


def test_every_console_script_runs_once_as_a_subprocess() -> None:
    """In-process runs call the ``main`` pyproject installs, and each installed script still
    starts once as a real subprocess in the default run."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {k: v.split(":")[0] for k, v in scripts.items()} == SCRIPTS
    assert all(v.endswith(":main") for v in scripts.values()), scripts
    by_script = {c.argv[0] for c in COMMANDS if c.text in SUBPROCESS}
    assert by_script == set(SCRIPTS) and len(SUBPROCESS) == len(SCRIPTS), SUBPROCESS


def test_commands_that_start_processes_run_as_subprocesses() -> None:
    """DDP re-launches ``sys.argv`` per rank and joblib spawns workers: never in-process."""
    assert _multiprocess(["rnb-train", "trainer=ddp_cpu"])
    assert _multiprocess(["rnb-train", "-m", "seed=0,1", "hydra/launcher=joblib"])
    assert _multiprocess(["rnb-train", "trainer.devices=2"])
    assert not _multiprocess(["rnb-train", "-m", "strategy=stratified,rnb", "seed=0,1"])
    assert not _multiprocess(["rnb-train", "strategy=static", "strategy.weights={a: 2, b: 1}"])
    assert not _multiprocess(["rnb-report", "runs", "--out", "x"])


def test_parser_and_dispatch_cover_odd_commands() -> None:
    text = (
        "```bash\nrnb-train a=1 \\\n  b=2   # comment\n# only a comment\n"
        "X=1 jupyter lab nb.ipynb\nmake something\n```\n```python\nrnb-train c=3\n```\n"
    )
    cmds = readme_commands(text)
    assert [c.argv for c in cmds] == [
        ["rnb-train", "a=1", "b=2"],
        ["jupyter", "lab", "nb.ipynb"],
        ["make", "something"],
    ]
    assert cmds[1].env == {"X": "1"}
    assert _dispatch(cmds[2]) == []  # unknown program -> the parametrised test fails
