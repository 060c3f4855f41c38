"""``rnb-train``: Regroup (via the DataModule) + Balance (via the callback) + Lightning fit.

``train(cfg)`` is the library entry point (composable from notebooks and tests);
``main`` is the thin Hydra wrapper. All ``instantiate`` calls of a run live here.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rnb.accounting import training_flops
from rnb.balance.callback import BalanceCallback
from rnb.balance.sharding import check_sharding_support
from rnb.config import config_dir, enabled, hydra_output_dir
from rnb.console import StepProgressBar, quiet_lightning
from rnb.run.divergence import DivergedError, DivergenceGuard, divergence_hint
from rnb.run.hydra_io import adopt_invocation
from rnb.run.record import ResumeRefused, RunRecord
from rnb.run.resume_point import finished_summary, resume_path
from rnb.run.status import failure_record, strict_json
from rnb.run.trackers import build_loggers, close_loggers

__all__ = ["build_datamodule", "build_run", "main", "regroup_off_wins", "train"]

log = logging.getLogger(__name__)


def _set_threads(threads: Any) -> None:
    """Config key ``threads``: CPU threads of torch and of the BLAS/OpenMP pools.

    None keeps the libraries' defaults (one thread per core). The limit is process-wide.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: need a positive integer or null, got {threads!r}")
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy / scikit-learn / faiss pools (Regroup, Balance maths)


def regroup_off_wins(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``regroup: null`` when ``regroup=none`` met keys set for a Regroup.

    An experiment tunes its Regroup (``regroup.k_values`` of ``experiment=paper/dolly``);
    ``regroup=none`` (a sweep's predefined arm, or the command line) selects no Regroup, but
    the experiment's keys still merge into the empty node, leaving a mapping without
    ``_target_``. ``none`` is the user's choice, so Regroup stays off; the dropped keys are
    logged. A node with ``_target_`` or an already empty one is returned unchanged.
    """
    node = cfg.get("regroup")
    if not enabled(node) or "_target_" in node:
        return cfg
    log.info("regroup=none: Regroup off; ignoring regroup keys %s", sorted(node))
    return OmegaConf.merge(cfg, {"regroup": None})


def build_datamodule(cfg: DictConfig) -> Any:
    """Seed the run with ``cfg.seed`` and build its DataModule (prepared and set up).

    Writes only into the cache (tokenizer, Regroup), never into the run dir: a resume is
    checked against the built DataModule before the run dir is touched. Sets the thread
    count (``threads``) first: Regroup's embedding and clustering run here.
    """
    cfg = regroup_off_wins(cfg)
    _set_threads(cfg.get("threads"))
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    regroup = instantiate(cfg.regroup, _convert_="all") if enabled(cfg.get("regroup")) else None
    dm = instantiate(cfg.data, regroup=regroup, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_run(
    cfg: DictConfig,
    out: Path,
    callbacks: list[L.Callback] | None = None,
    datamodule: Any = None,
) -> dict[str, Any]:
    """Instantiate the DataModule, model, strategy, callbacks and trainer of a run.

    Seeds everything with ``cfg.seed`` first (via `build_datamodule`, unless a DataModule it
    built is passed), so a run built here (by `train` or by a benchmark driving the trainer
    itself) starts from the same weights every time.
    """
    dm = datamodule if datamodule is not None else build_datamodule(cfg)
    model = instantiate(
        cfg.model,
        domain_names=dm.domain_names,
        **dm.model_inputs(),  # an LM's vocab_size / eos id; a classifier's feature / class counts
        _convert_="all",  # plain containers in hparams: checkpoints load with weights_only=True
    )
    strategy = instantiate(cfg.strategy, _convert_="all")
    balance = BalanceCallback(
        strategy=strategy, **OmegaConf.to_container(cfg.balance, resolve=True)
    )
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_train_steps,
        save_top_k=1,
        monitor=None,
        save_last=True,
        # Overwrite last.ckpt: with the default counter a run dir that was moved or copied
        # before a resume got last-v1.ckpt, and resume=auto kept restarting from the old one.
        enable_version_counter=False,
    )
    guard = DivergenceGuard(**(cfg.get("divergence") or {}), hint=divergence_hint(cfg))
    logger = build_loggers(cfg.get("logger"), instantiate)
    bar = [StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer = instantiate(
        cfg.trainer,
        callbacks=[guard, balance, *(callbacks or []), *bar, ckpt],
        logger=logger,
        default_root_dir=str(out),
    )
    # Before any evaluation: the callback's setup repeats it for hand-built trainers.
    check_sharding_support(trainer, balance.strategy, balance.services)
    return {
        "datamodule": dm,
        "model": model,
        "strategy": strategy,
        "balance": balance,
        "trainer": trainer,
    }


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Run one training job and write ``summary.json`` into ``cfg.output_dir``.

    Args:
        cfg: the composed ``train`` config.
        callbacks: extra Lightning callbacks (e.g. from notebooks or tests).

    Returns:
        The summary dictionary (also written to disk by global rank 0), ``status``
        ``"completed"``.

    Raises:
        DivergedError: a training or eval loss became non-finite; ``summary.json`` was
            written with ``status: "diverged"`` and the step (see ``divergence``).
        Exception: any other error during evaluation or training, re-raised after
            ``summary.json`` was written with ``status: "failed"``.
    """
    composed = cfg
    cfg = regroup_off_wins(cfg)
    out = Path(cfg.output_dir or hydra_output_dir() or os.getcwd()).resolve()
    if cfg.output_dir is None:
        cfg = OmegaConf.merge(cfg, {"output_dir": str(out)})
    # A resume is checked against the checkpoint's fingerprint before anything is written
    # into the run dir: config + data files first (no build), then tokenizer + domains.
    ckpt_path = resume_path(cfg, out)
    record = RunRecord.open(cfg, ckpt_path)
    dm = build_datamodule(cfg)
    record.verify(dm)
    done = finished_summary(cfg, out, record)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    saved = adopt_invocation(out, composed)  # held log lines; this invocation's config
    if saved is not None and record.resumes and ckpt_path is not None:
        record.resumes[-1]["config_dir"] = str(saved)
    if rank_zero_only.rank == 0:
        dm.write_reports(out)
    run = build_run(cfg, out, [record, *(callbacks or [])], datamodule=dm)
    model, balance, trainer = run["model"], run["balance"], run["trainer"]
    n_params = int(model.num_parameters())  # before FSDP shards them (a rank sees its shard)
    record.continue_logs(trainer.loggers)
    for lg in trainer.loggers:  # the whole run config, so a tracker can compare runs by it
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    error: Exception | None = None
    t0 = time.perf_counter()
    # Any exception from here on ends the run with a summary that says so (status
    # "diverged" / "failed"), so a failed run never passes for a result.
    try:
        if ckpt_path is None and cfg.get("initial_eval", True):
            trainer.validate(model, datamodule=dm, verbose=False)
            record.eval_loss_initial = model.last_eval["eval_loss"]
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        if model.last_eval is None or model.last_eval["step"] != trainer.global_step:
            trainer.validate(model, datamodule=dm, verbose=False)
    except Exception as err:  # recorded in summary.json, then re-raised
        error = err
    wall = time.perf_counter() - t0
    final = (model.last_eval or {}) if error is None else {}

    try:
        mixture = balance.summary()
    except Exception:  # a run that failed before Balance was set up has no mixture
        if error is None:
            raise
        mixture = {}
    tokens = trainer.global_step * dm.batch_size * trainer.world_size * dm.tokens_per_example
    summary: dict[str, Any] = {
        **failure_record(error, trainer.global_step),
        "eval_loss": final.get("eval_loss"),
        "eval_loss_per_domain": final.get("eval_loss_per_domain"),
        # the model's other eval metrics (a classifier's eval_accuracy[_per_domain])
        **{k: v for k, v in final.items() if k.startswith("eval_")},
        "eval_loss_initial": record.eval_loss_initial,
        "domains": list(dm.domain_names),
        "eval_proportions": [float(x) for x in dm.eval_proportions],
        "domain_sizes": [int(x) for x in dm.domain_sizes],
        "strategy": run["strategy"].describe(),
        "steps": int(trainer.global_step),
        "wall_time_s": record.wall_before + wall,
        "seed": int(cfg.seed),
        "num_parameters": n_params,
        "overhead": balance.meter.report(training_flops(n_params, tokens)),
        "regroup": dm.regroup_summary,
        "resumed_from": ckpt_path,
        "resumes": record.resumes,
        **mixture,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if trainer.is_global_zero:
        tmp = out / "summary.json.tmp"
        tmp.write_text(strict_json(summary), encoding="utf-8")
        tmp.replace(out / "summary.json")
        if error is None:
            log.info(
                "eval_loss %.4f (initial %s) -> %s",
                summary["eval_loss"] or float("nan"),
                summary["eval_loss_initial"],
                out / "summary.json",
            )
        else:
            log.error("%s: %s -> %s", summary["status"], error, out / "summary.json")
    close_loggers(trainer.loggers, success=error is None)
    if error is not None:
        raise error
    return summary


def main() -> None:
    """Console entry point ``rnb-train`` (Hydra app over ``conf/train.yaml``)."""
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
    def _app(cfg: DictConfig) -> float | None:
        try:
            summary = train(cfg)
        except (DivergedError, ResumeRefused) as err:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if HydraConfig.get().mode == RunMode.MULTIRUN:
                # An Exception (not SystemExit): Hydra's launcher records the job as failed,
                # runs the remaining jobs, then re-raises it, so the sweep exits non-zero.
                raise
            # A single run: the error says what to do (logged for a divergence, printed
            # for a refused resume); exit 1 without a traceback.
            if isinstance(err, ResumeRefused):
                print(f"rnb-train: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        return summary["eval_loss"]

    _app()


if __name__ == "__main__":
    main()
