"""``ReferenceModel``: a frozen reference model's per-token losses on each training batch.

DoReMi (Xie et al. 2023, §2 and Alg. 1) scores a domain by the *excess loss* of the model
being trained over a fixed reference model, token by token, on the very batch the model
trains on. This service loads the reference (a previous rnb run, or one of its
checkpoints), runs it on every training batch in eval mode under ``no_grad``, and sums per
domain the clipped and the plain excess loss and the token count, so a strategy can use
either clipping convention (per token: the reference code; after the domain mean: Aioli's
re-implementation). The model's own per-token losses come from its training forward
(``pl_module.keep_token_losses``), so the model is not run twice.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import get_class

from rnb.accounting import OverheadMeter
from rnb.balance.services.base import ReduceFn, SignalService, evaluating
from rnb.run.fingerprint import sha256_path, tokenizer_digest

__all__ = ["ReferenceModel", "resolve_reference"]

log = logging.getLogger(__name__)

_KEY = "strategy.reference"
_SUMS = ("clipped", "excess", "tokens")


def resolve_reference(path: str | Path | None) -> tuple[Path, dict[str, Any] | None]:
    """The checkpoint of ``strategy.reference`` and the summary of its run (if a run dir).

    Args:
        path: a ``.ckpt`` file, or a run directory (its ``checkpoints/last.ckpt``).

    Returns:
        ``(checkpoint path, summary.json of the run or None for a bare .ckpt)``.

    Raises:
        ValueError: ``path`` unset; a run dir without a completed ``summary.json`` (a run
            still training, killed, diverged or failed is no reference).
        FileNotFoundError: the path or the run's ``checkpoints/last.ckpt`` does not exist.
    """
    if path in (None, ""):
        raise ValueError(
            f"{_KEY} is not set: DoReMi needs a reference model. Train one first (e.g. "
            "`rnb-train strategy=stratified hydra.run.dir=outputs/doremi/reference`) and pass "
            f"{_KEY}=<its run dir or a .ckpt>"
        )
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{_KEY}='{p}' does not exist (a run dir or a .ckpt file)")
    if p.is_file():
        return p, None
    summary_path = p / "summary.json"
    if not summary_path.exists():
        raise ValueError(
            f"{_KEY}='{p}' has no summary.json: the run has not finished (or is no rnb run "
            "dir); let it complete, or pass one of its checkpoints as "
            f"{_KEY}=<run dir>/checkpoints/<name>.ckpt"
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    status = summary.get("status", "completed")
    if status != "completed":
        failure = summary.get("failure") or {}
        raise ValueError(
            f"{_KEY}='{p}': that run {status} at step {failure.get('step')} "
            f"({failure.get('reason')}); a reference must be a completed run: point "
            f"{_KEY} at a completed run dir"
        )
    ckpt = p / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{_KEY}='{p}': {ckpt} does not exist")
    return ckpt, summary


class ReferenceModel(SignalService):
    """Excess loss of the model over a frozen reference, summed per domain over a round.

    Per training batch, with ``ℓ`` the model's per-token loss from its training forward and
    ``ℓ_ref`` the reference's on the same tokens, it adds per domain
    ``Σ max(ℓ − ℓ_ref, 0)``, ``Σ (ℓ − ℓ_ref)`` and the token count (loss-bearing tokens
    only). Costs one reference forward per step: ``2·N_ref·B·T`` FLOPs.

    Args:
        reference: ``strategy.reference``: a run dir (must be completed) or a ``.ckpt``.

    Raises:
        ValueError: (in :meth:`setup`) data without tokens (feature data), a reference with
            another vocabulary or tokenizer, or one whose context is shorter than
            ``data.max_length``.
    """

    provides: ClassVar[frozenset[str]] = frozenset({"reference_loss"})

    def __init__(self, reference: str | Path | None) -> None:
        self.ckpt_path, self.run_summary = resolve_reference(reference)
        self.reference = str(reference)
        self.sha256 = ""
        self.ref: L.LightningModule | None = None

    @classmethod
    def from_config(cls, probe: dict[str, Any], strategy: Any) -> ReferenceModel:
        return cls(getattr(strategy, "reference", None))

    # ------------------------------------------------------------------ setup
    def setup(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        datamodule: Any,
        meter: OverheadMeter,
    ) -> None:
        self.meter = meter
        self._trainer = trainer
        if getattr(datamodule, "tokenizer", None) is None:  # feature data (data=digits)
            raise ValueError(
                f"strategy=doremi compares per-token LM losses with a reference LM; "
                f"{type(datamodule).__name__} (data._target_) has no tokens: use a strategy "
                "without a reference model (e.g. strategy=rnb, doge, odm)"
            )
        self.m = len(datamodule.domain_names)
        self.vocab_size = int(datamodule.vocab_size)
        try:  # weights only: a reference file must never run code when it is read
            ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{_KEY}='{self.reference}': {self.ckpt_path} holds objects other than tensors "
                "and plain containers, which are not unpickled (torch.load weights_only=True; "
                f"{str(err).splitlines()[0]}): point it at a Lightning checkpoint of an rnb run"
            ) from err
        self._check_vocabulary(ckpt, datamodule)
        cls = type(pl_module)
        target = ((self.run_summary or {}).get("config") or {}).get("model", {}).get("_target_")
        if target:
            cls = get_class(target)
        ref = cls(**ckpt.get("hyper_parameters", {}))
        ref.load_state_dict(ckpt["state_dict"])
        ref.requires_grad_(False)
        ref.eval()
        positions = getattr(getattr(ref, "model", None), "config", None)
        positions = getattr(positions, "max_position_embeddings", None)
        if positions is not None and positions < datamodule.max_length:
            raise ValueError(
                f"{_KEY}='{self.reference}': the reference model takes {positions} positions, "
                f"this run's data.max_length is {datamodule.max_length}; use a reference "
                "trained with the same data.max_length"
            )
        self.ref = ref
        self.n_ref = int(sum(p.numel() for p in ref.parameters()))
        self.sha256 = sha256_path(self.ckpt_path)
        self._module = pl_module
        pl_module.keep_token_losses = True  # the model's forward hands its token losses over
        self._zero(torch.device("cpu"))
        log.info("DoReMi reference: %s (%d parameters)", self.ckpt_path, self.n_ref)

    def _check_vocabulary(self, ckpt: dict[str, Any], datamodule: Any) -> None:
        """Same vocabulary size and, when the checkpoint records it, the same tokenizer."""
        theirs = (ckpt.get("hyper_parameters") or {}).get("vocab_size")
        mine = int(datamodule.vocab_size)
        problems = []
        if theirs is not None and int(theirs) != mine:
            problems.append(f"its vocabulary has {theirs} tokens, this run's {mine}")
        record = (ckpt.get("callbacks") or {}).get("RunRecord") or {}
        digest = (record.get("fingerprint") or {}).get("tokenizer")
        if digest is not None and digest != tokenizer_digest(datamodule.tokenizer):
            problems.append(
                f"its tokenizer differs (sha256 {digest[:12]} vs "
                f"{tokenizer_digest(datamodule.tokenizer)[:12]})"
            )
        if problems:
            raise ValueError(
                f"{_KEY}='{self.reference}' ({self.ckpt_path}) cannot score this run: "
                + "; ".join(problems)
                + ". Per-token losses compare only under one tokenizer: train the reference "
                "with this run's data and data.tokenizer settings (and the same data.cache_dir)"
            )

    def _zero(self, device: torch.device) -> None:
        self.sums = {k: torch.zeros(self.m, dtype=torch.float64, device=device) for k in _SUMS}

    # ------------------------------------------------------------------ per step
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, outputs: Any
    ) -> None:
        if not isinstance(outputs, dict) or "token_loss" not in outputs:
            raise ValueError(
                f"the model ({type(pl_module).__name__}, model._target_) returned no "
                "token_loss/token_valid from training_step although keep_token_losses is set; "
                "DoReMi's reference service needs the per-token losses of the training forward"
            )
        assert self.ref is not None
        tok, valid = outputs["token_loss"], outputs["token_valid"]
        device = tok.device
        if next(self.ref.parameters()).device != device:
            self.ref.to(device)
        if self.sums["tokens"].device != device:
            self.sums = {k: v.to(device) for k, v in self.sums.items()}
        with evaluating(self.ref), trainer.precision_plugin.forward_context():
            ref_tok, _ = self.ref.token_losses(batch)
        excess = (tok.double() - ref_tok.double()) * valid
        domain = batch["domain"].to(device).long()
        self.sums["clipped"].index_add_(0, domain, excess.clamp_min(0).sum(dim=1))
        self.sums["excess"].index_add_(0, domain, excess.sum(dim=1))
        self.sums["tokens"].index_add_(0, domain, valid.sum(dim=1).double())
        self.meter.add_flops(2.0 * self.n_ref * batch["input_ids"].numel())

    # ------------------------------------------------------------------ per round
    def collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, reduce_fn: ReduceFn
    ) -> dict[str, Any]:
        """``{"excess_loss": {"clipped", "mean", "tokens", "vocab_size"}}``.

        ``clipped`` is the per-token-clipped mean ``Σ max(e, 0) / tokens``, ``mean`` the
        unclipped mean (both ``nan`` for a domain without tokens this round), ``tokens`` the
        loss-bearing tokens: float64 ``[m]`` CPU tensors summed over ranks. ``vocab_size``
        (``|V|``, an int) is for DoReMi's initial score ``log |V|``.
        """
        sums = self._reduced(reduce_fn)
        tokens = sums["tokens"]
        present = tokens > 0

        def mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(present, x / tokens.clamp_min(1), torch.nan)

        return {
            "excess_loss": {
                "clipped": mean(sums["clipped"]),
                "mean": mean(sums["excess"]),
                "tokens": tokens,
                "vocab_size": self.vocab_size,
            }
        }

    def _reduced(self, reduce_fn: ReduceFn) -> dict[str, torch.Tensor]:
        if reduce_fn is None:
            return {k: v.detach().cpu().clone() for k, v in self.sums.items()}
        return {k: reduce_fn(v.clone()).double().cpu() for k, v in self.sums.items()}

    def reset(self) -> None:
        for v in self.sums.values():
            v.zero_()

    def teardown(self) -> None:
        """Free the reference; the model stops returning per-token losses."""
        self.ref = None
        module = getattr(self, "_module", None)
        if module is not None:
            module.keep_token_losses = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Mid-round sums (summed over ranks: a collective) and the reference's digest."""
        trainer = getattr(self, "_trainer", None)
        reduce_fn = None
        if trainer is not None and trainer.world_size > 1:

            def reduce_fn(t: torch.Tensor) -> torch.Tensor:
                return trainer.strategy.reduce(t, reduce_op="sum")

        sums = self._reduced(reduce_fn)
        return {"sums": sums, "reference": self.reference, "sha256": self.sha256}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sums (rank 0 takes the rank sum, others start at 0).

        Raises:
            ValueError: the reference checkpoint's content changed since the checkpoint
                (its losses would not continue the trajectory).
        """
        if state.get("sha256") and self.sha256 and state["sha256"] != self.sha256:
            raise ValueError(
                f"{_KEY}='{self.reference}': the reference checkpoint {self.ckpt_path} changed "
                f"since this run's checkpoint (sha256 {state['sha256'][:12]} -> "
                f"{self.sha256[:12]}); resume with the original reference or start a new run"
            )
        trainer = getattr(self, "_trainer", None)
        rank0 = trainer is None or trainer.global_rank == 0
        self.sums = {
            k: (torch.as_tensor(state["sums"][k]).double() * (1.0 if rank0 else 0.0)) for k in _SUMS
        }
