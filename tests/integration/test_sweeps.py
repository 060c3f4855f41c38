"""Packaged sweeps on launchers (issue 12 item 3): joblib runs them, SLURM is configured.

* ``hydra/launcher=joblib`` runs a packaged sweep narrowed to 2 jobs, in parallel processes
  (``slow``: three Python processes start).
* ``hydra/launcher=slurm`` (rnb's values over the plugin's ``submitit_slurm``) composes,
  instantiates the plugin's launcher and, with submitit's submission replaced by a recorder,
  renders the sbatch script of a 2-job array: nothing is submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate

from rnb.config import config_dir
from tests.conftest import TINY
from tests.sweeps import sweep_jobs

REGROUP_TINY = [
    "regroup/embedder=tfidf",
    "regroup.embedder.progress=false",
    "regroup.k_values=[4,6]",
]


@pytest.mark.slow  # 3 processes (Hydra + 2 joblib workers): 80 s measured on the loaded 2-core box
def test_joblib_runs_a_packaged_sweep_narrowed_to_two_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    narrow = ["seed=0", "strategy.lambda_=1,3"]  # replace the sweep's own values of these keys
    assert len(sweep_jobs("lambda", narrow)) == 2
    cmd = [
        str(Path(sys.executable).with_name("rnb-train")),
        "-m",
        "sweep=lambda",
        *narrow,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        *TINY,
        "trainer.max_steps=8",
        *REGROUP_TINY,
    ]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "rnb.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RNB_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lambdas = {}
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        hydra_cfg = yaml.safe_load((sweep / job / ".hydra" / "hydra.yaml").read_text())
        assert hydra_cfg["hydra"]["launcher"]["_target_"].endswith("JoblibLauncher")
        assert summary["status"] == "completed" and summary["steps"] == 8
        assert summary["regroup"]["k"] in (4, 6) and summary["seed"] == 0
        lambdas[job] = summary["strategy"]["lambda_"]
    assert sorted(lambdas.values()) == [1.0, 3.0]


def _hydra_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides, return_hydra_config=True)


@pytest.mark.parametrize("option", ["slurm", "submitit_slurm"])
def test_slurm_launcher_composes_and_instantiates(option: str, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="extra `slurm`")
    cfg = _hydra_cfg([f"hydra/launcher={option}", f"hydra.sweep.dir={tmp_path}"])
    launcher = instantiate(cfg.hydra.launcher)
    # (by name: Hydra's plugin discovery may import the plugin module a second time)
    assert type(launcher).__name__ == "SlurmLauncher" and launcher._EXECUTOR == "slurm"
    if option == "slurm":  # rnb's values over the plugin's defaults
        p = launcher.params
        assert (p["gpus_per_node"], p["timeout_min"], p["cpus_per_task"]) == (1, 240, 8)
        assert p["submitit_folder"] == f"{tmp_path}/.submitit/%j"


#: (overrides, sbatch lines): rnb's single-GPU values, and the multi-node example whose
#: SLURM geometry is read from the trainer (trainer.num_nodes x trainer.devices).
SBATCH_CASES = {
    "single_gpu": (
        ["hydra/launcher=slurm", "trainer=gpu"],
        ["--gpus-per-node=1", "--cpus-per-task=8", "--time=240", "--mem=32GB",
         "--ntasks-per-node=1"],
    ),
    "multinode_fsdp": (
        ["hydra/launcher=slurm_multinode", "trainer=gpu_fsdp", "trainer.num_nodes=2",
         "trainer.devices=4"],
        ["--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8",
         "--time=1440", "--mem=256GB"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SBATCH_CASES))
def test_slurm_launcher_renders_an_sbatch_array_without_submitting(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher's own ``launch`` runs up to the submission: submitit validates every
    parameter name against sbatch's, and the script it would submit is checked."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="extra `slurm`")
    import submitit

    # submitit's SLURM executor looks for `srun` on PATH; a stub that is never run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    case_overrides, lines = SBATCH_CASES[case]
    overrides = [*case_overrides, "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"]
    cfg = _hydra_cfg(overrides)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    seen = {}

    def record(self, fn, *args):
        seen["script"] = self._executor._make_submission_file_text("python -m rnb.train", "uid")
        seen["jobs"] = list(zip(*args, strict=True))

        class Done:
            def results(self) -> list[JobReturn]:
                return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

        return [Done() for _ in seen["jobs"]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", record)
    returns = launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    assert len(returns) == 2 and [j[0] for j in seen["jobs"]] == [["seed=0"], ["seed=1"]]
    script = seen["script"]
    for line in [*lines, "--partition=gpu"]:
        assert f"#SBATCH {line}" in script, (line, script)


@pytest.mark.parametrize(
    ("override", "key"),
    [("trainer.devices=-1", "trainer.devices=-1"), ("trainer.devices=auto", "trainer.devices='auto'"),
     ("trainer.num_nodes=0", "trainer.num_nodes=0")],
)  # fmt: skip
def test_slurm_multinode_refuses_a_device_count_it_cannot_size_a_job_from(
    override: str, key: str, tmp_path: Path
) -> None:
    """``trainer.devices=-1`` (all visible GPUs) cannot size ``--gpus-per-node``: refused when
    the launcher is set up, naming the key, instead of rendering ``--gpus-per-node=-1``."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="extra `slurm`")
    overrides = [
        "hydra/launcher=slurm_multinode",
        "trainer=gpu_fsdp",
        "trainer.devices=4",
        override,
    ]
    cfg = _hydra_cfg([*overrides, f"hydra.sweep.dir={tmp_path}"])
    with pytest.raises(Exception, match=r"need a whole number >= 1") as err:
        instantiate(cfg.hydra.launcher)
    assert key in str(err.value)
