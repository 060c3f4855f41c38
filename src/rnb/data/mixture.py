"""What every rnb DataModule shares: domains, eval proportions, the mixture sampler and its
loaders, Regroup.

The Balance callback and the strategies read a DataModule through this surface only
(:func:`rnb.balance.context.mixture_context`): ``domain_names``, ``domain_sizes``,
``eval_proportions``, ``sampler`` (a :class:`~rnb.data.sampler.MixtureBatchSampler`),
``batch_size``, ``seed``, ``labels`` and the Regroup result. The text DataModule
(:class:`~rnb.data.datamodule.RnBDataModule`) and the feature-vector one
(:class:`~rnb.data.features.FeatureDataModule`) both inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from rnb.data.labels import DomainLabels
from rnb.data.sampler import MixtureBatchSampler

if TYPE_CHECKING:
    from rnb.regroup.result import RegroupResult

__all__ = ["MixtureData", "stack_rows"]


class MixtureData:
    """Mixin of a ``LightningDataModule`` whose training batches come from domain mixtures.

    Subclasses set ``labels`` (:class:`~rnb.data.labels.DomainLabels`), ``batch_size``,
    ``eval_batch_size``, ``seed``, ``regroup_result`` (``None`` without Regroup) and the
    datasets ``train_data`` / ``eval_data`` (rows of NumPy arrays), then call
    :meth:`_build_mixture` in ``setup``.
    """

    labels: DomainLabels
    batch_size: int
    eval_batch_size: int
    num_workers: int
    seed: int
    regroup_result: RegroupResult | None
    trainer: Any
    train_data: Dataset
    eval_data: Dataset

    def _build_mixture(self) -> None:
        """Domain names and sizes, eval proportions ``q`` and the mixture sampler."""
        m = self.num_domains
        self.domain_names = self.labels.names
        self.domain_sizes = np.bincount(self.labels.train, minlength=m)
        counts = np.bincount(self.labels.eval, minlength=m)
        self.eval_proportions = counts / counts.sum()
        self.sampler = MixtureBatchSampler(
            [np.flatnonzero(self.labels.train == i) for i in range(m)],
            batch_size=self.batch_size,
            seed=self.seed,
        )

    @property
    def num_domains(self) -> int:
        """Number of domains ``m``."""
        return len(self.labels.names)

    @property
    def regroup_summary(self) -> dict[str, Any] | None:
        """The ``regroup`` entry of ``summary.json`` (None without Regroup)."""
        return None if self.regroup_result is None else self.regroup_result.summary

    @property
    def regroup_fingerprint(self) -> str | None:
        """Cache key of the Regroup result (resume checks compare it); None without Regroup."""
        return None if self.regroup_result is None else self.regroup_result.fingerprint

    def write_reports(self, out_dir: Path) -> list[Path]:
        """Copy Regroup's reports into ``out_dir`` (``regroup.json``, ``regroup.md``,
        ``regroup_sweep.json``, ``regroup_sweep.png``); nothing without Regroup.

        Call after ``prepare_data``/``setup``, which never write outside the cache.
        """
        return [] if self.regroup_result is None else self.regroup_result.write_reports(out_dir)

    def _loader_kwargs(self) -> dict[str, Any]:
        """DataLoader arguments of the training loader (workers kept alive between epochs)."""
        workers = self.num_workers
        kw: dict[str, Any] = {"num_workers": workers, "collate_fn": stack_rows}
        if workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=2)
            if os.name != "nt":
                kw["multiprocessing_context"] = "fork"
        return kw

    def _attach_rank(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.sampler.rank = trainer.global_rank
            self.sampler.world_size = trainer.world_size
            self._eval_rank, self._eval_world = trainer.global_rank, trainer.world_size
        else:
            self._eval_rank, self._eval_world = 0, 1

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        """Infinite loader driven by the mixture sampler (no distributed sampler: it shards)."""
        return DataLoader(self.train_data, batch_sampler=self.sampler, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        """The full eval set, strided over ranks (each example evaluated exactly once)."""
        idx = list(range(self._eval_rank, len(self.eval_data), self._eval_world))
        return DataLoader(
            Subset(self.eval_data, idx),
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=stack_rows,
        )

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Identity of the domains (recorded in checkpoints for inspection)."""
        return {
            "regroup_fingerprint": self.regroup_fingerprint or "none",
            "domains": list(self.domain_names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Last-line invariant: the checkpoint's domains are this run's.

        The real check runs earlier: ``rnb.run.RunRecord`` compares the domain assignment
        (names and every label) before anything in the run dir is written. The Regroup
        fingerprint is not compared here: a cache-format change with identical labels is the
        same trajectory, and this hook runs only after the run dir was touched.

        Raises:
            ValueError: the domain names differ (a checkpoint restored outside ``train``).
        """
        if list(state.get("domains", [])) != list(self.domain_names):
            raise ValueError(
                f"checkpoint domains {state.get('domains')} differ from this run's "
                f"{list(self.domain_names)}: resume with the same data.domain_field / regroup "
                "config, or start a new run without `resume`"
            )


def stack_rows(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Collate dict rows of NumPy arrays into a dict of stacked tensors."""
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
