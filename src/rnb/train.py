"""``rnb-train``: Regroup (via the DataModule) + Balance (via the callback) + Lightning fit.

``train(cfg)`` is the library entry point (composable from notebooks and tests);
``main`` is the thin Hydra wrapper. All ``instantiate`` calls of a run live here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rnb.accounting import training_flops
from rnb.balance.callback import BalanceCallback
from rnb.config import config_dir, enabled, hydra_output_dir
from rnb.console import StepProgressBar, quiet_lightning

__all__ = ["build_run", "main", "train"]

log = logging.getLogger(__name__)


def _resume_path(cfg: DictConfig, out: Path) -> str | None:
    resume = cfg.get("resume")
    if resume in (None, "", False):
        return None
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(resume).exists():
        raise FileNotFoundError(f"resume='{resume}' does not exist (use a .ckpt path or 'auto')")
    return str(resume)


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


def build_run(
    cfg: DictConfig, out: Path, callbacks: list[L.Callback] | None = None
) -> dict[str, Any]:
    """Instantiate the DataModule, model, strategy, callbacks and trainer of a run.

    Seeds everything with ``cfg.seed`` first, so a run built here (by `train` or by a
    benchmark driving the trainer itself) starts from the same weights every time.
    """
    _set_threads(cfg.get("threads"))
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = instantiate(cfg.data, regroup=None, _recursive_=False)
    dm.regroup_cfg = cfg.regroup if enabled(cfg.get("regroup")) else None
    dm.output_dir = out
    dm.prepare_data()
    dm.setup("fit")
    model = instantiate(
        cfg.model,
        vocab_size=dm.vocab_size,
        domain_names=dm.domain_names,
        eos_token_id=dm.tokenizer.eos_token_id,
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
    )
    logger = instantiate(cfg.logger) if enabled(cfg.get("logger")) else False
    bar = [StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer = instantiate(
        cfg.trainer,
        callbacks=[balance, *(callbacks or []), *bar, ckpt],
        logger=logger,
        default_root_dir=str(out),
    )
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
        The summary dictionary (also written to disk by global rank 0).
    """
    out = Path(cfg.output_dir or hydra_output_dir() or os.getcwd()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.output_dir is None:
        cfg = OmegaConf.merge(cfg, {"output_dir": str(out)})
    run = build_run(cfg, out, callbacks)
    dm, model, balance, trainer = run["datamodule"], run["model"], run["balance"], run["trainer"]
    ckpt_path = _resume_path(cfg, out)

    initial = None
    if ckpt_path is None and cfg.get("initial_eval", True):
        trainer.validate(model, datamodule=dm, verbose=False)
        initial = model.last_eval
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    wall = time.perf_counter() - t0
    if model.last_eval is None or model.last_eval["step"] != trainer.global_step:
        trainer.validate(model, datamodule=dm, verbose=False)
    final = model.last_eval or {}

    tokens = trainer.global_step * dm.batch_size * trainer.world_size * dm.max_length
    summary: dict[str, Any] = {
        "eval_loss": final.get("eval_loss"),
        "eval_loss_per_domain": final.get("eval_loss_per_domain"),
        "eval_loss_initial": initial["eval_loss"] if initial else None,
        "domains": list(dm.domain_names),
        "eval_proportions": [float(x) for x in dm.eval_proportions],
        "domain_sizes": [int(x) for x in dm.domain_sizes],
        "strategy": run["strategy"].describe(),
        "steps": int(trainer.global_step),
        "wall_time_s": wall,
        "seed": int(cfg.seed),
        "num_parameters": int(model.num_parameters()),
        "overhead": balance.meter.report(training_flops(model.num_parameters(), tokens)),
        "regroup": dm.regroup_summary,
        "resumed_from": ckpt_path,
        **balance.summary(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if trainer.is_global_zero:
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=_json_default))
        tmp.replace(out / "summary.json")
        log.info(
            "eval_loss %.4f (initial %s) -> %s",
            summary["eval_loss"] or float("nan"),
            summary["eval_loss_initial"],
            out / "summary.json",
        )
    return summary


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def main() -> None:
    """Console entry point ``rnb-train`` (Hydra app over ``conf/train.yaml``)."""
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
    def _app(cfg: DictConfig) -> float | None:
        summary = train(cfg)
        return summary.get("eval_loss")

    _app()


if __name__ == "__main__":
    main()
