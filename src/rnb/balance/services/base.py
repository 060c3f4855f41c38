"""The contract of a signal service: extra work a strategy asks for through ``needs``.

R&B reads signals training computes anyway (losses, final-layer gradients); baselines need
more: per-domain eval losses (Skill-It, Aioli), a reference model's losses (DoReMi),
per-domain and target gradients from extra batches (DoGE, DGA). Each of these is a
:class:`SignalService`. The :class:`~rnb.balance.callback.BalanceCallback` builds a service
only when the strategy's ``needs`` names a signal it provides (:data:`SERVICES`), runs its
hooks inside the callback's :class:`~rnb.accounting.OverheadMeter` sections (wall time),
and the service adds its analytic FLOPs with ``meter.add_flops``. At the end of each round
``collect`` returns entries that land in :attr:`RoundStats.extra`, already reduced over
ranks so every rank computes the same mixture.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import torch

from rnb.accounting import OverheadMeter

__all__ = ["SERVICES", "ReduceFn", "SignalService", "build_services", "evaluating"]

#: Sum a tensor over ranks (``None`` in single-process runs).
ReduceFn = Callable[[torch.Tensor], torch.Tensor] | None

#: Which service provides each signal a strategy may list in ``needs`` (``"module:Class"``).
#: ``gram`` (final-layer capture) and ``loss_weights`` (a model hook) are handled by the
#: callback itself.
SERVICES: dict[str, str] = {
    "eval_loss": "rnb.balance.services.evaluator:ProbeEvaluator",
    "reference_loss": "rnb.balance.services.reference:ReferenceModel",
    "domain_grads": "rnb.balance.services.gradient_probe:GradientProbe",
    "target_grad": "rnb.balance.services.gradient_probe:GradientProbe",
}

#: Needs served by the callback without a service.
BUILT_IN_NEEDS = frozenset({"gram", "loss_weights"})


class SignalService(ABC):
    """One kind of extra signal, built by the callback for the strategies that need it.

    Lifecycle (all on every rank): ``from_config`` → ``setup`` (after the DataModule and
    model exist, before a checkpoint is restored) → ``load_state_dict`` on resume →
    per step ``on_train_batch_end`` → per round ``collect`` then ``reset`` → ``teardown``.
    """

    #: Signals (``needs`` names) this service provides.
    provides: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_config(cls, probe: dict[str, Any], strategy: Any) -> SignalService:
        """Build from ``balance.probe`` and the strategy (for strategy-owned options).

        Args:
            probe: the ``balance.probe`` mapping (``eval_size``, ``batch_size``, ``params``,
                ``target_path``, ``seed``); a service takes the keys it understands.
            strategy: the :class:`~rnb.balance.strategies.base.MixingStrategy` (e.g. its
                ``reference`` path).
        """
        return cls()

    def setup(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: Any,
        meter: OverheadMeter,
    ) -> None:
        """Allocate buffers and load what the service needs (called once per fit)."""
        self.meter = meter

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, outputs: Any
    ) -> None:
        """Per-step work on the training batch just used (default: nothing)."""

    @abstractmethod
    def collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> dict[str, Any]:
        """Round end: the signals, reduced over ranks, for :attr:`RoundStats.extra`."""

    def reset(self) -> None:
        """Start a new round (per-step accumulators back to zero)."""

    def teardown(self) -> None:
        """Release hooks and large buffers."""

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (``weights_only``-loadable: tensors, numbers, strings, lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


def build_services(
    needs: frozenset[str], probe: dict[str, Any], strategy: Any
) -> list[SignalService]:
    """One service per class providing any of ``needs`` (in a stable order).

    Raises:
        ValueError: a need no service provides (names the strategy and the known needs).
    """
    unknown = sorted(set(needs) - set(SERVICES) - BUILT_IN_NEEDS)
    if unknown:
        known = sorted(set(SERVICES) | BUILT_IN_NEEDS)
        raise ValueError(
            f"{type(strategy).__name__}.needs names {unknown}, which no service provides; "
            f"known signals: {known}"
        )
    services: dict[str, SignalService] = {}
    for need in sorted(set(needs) & set(SERVICES)):
        target = SERVICES[need]
        if target not in services:
            module, name = target.split(":")
            cls = getattr(importlib.import_module(module), name)
            services[target] = cls.from_config(dict(probe), strategy)
    return list(services.values())


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode under ``no_grad`` for a probe pass; the previous mode is restored after.

    Dropout off so a probe measures the model, not a random sub-network; ``no_grad`` so no
    activation memory is kept and ``.grad`` is untouched.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)
