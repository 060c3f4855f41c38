"""GradientProbe's constructor checks and defaults, the probe loop, and select_parameters' error.

The constructor refuses a bad ``balance.probe`` block at build time with messages naming the
key; its defaults must be train.yaml's. The probe loop must go on past an empty domain, and
must work on a probe that no trainer was bound to. The regression model and datamodule are
``test_gradient_probe_rows``'s, whose rows have a float64 reference.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from rnb.accounting import OverheadMeter
from rnb.balance.services.gradient_probe import GradientProbe, select_parameters
from rnb.config import compose
from tests.unit.test_gradient_probe_rows import DOMAIN, Reg, datamodule, reference_row

NAMES = ["w", "unused", "b", "extra"]
MISSING_HINT = (
    "(needed by strategy.target=file): give an existing .jsonl/.json/.parquet/.csv file, "
    "a save_to_disk directory or hf:<name>"
)


def test_constructor_defaults_equal_train_yaml() -> None:
    """``GradientProbe()`` with no arguments is the probe train.yaml's block describes."""
    svc = GradientProbe()
    assert (svc.batch_size, svc.eval_size, svc.seed) == (16, 256, 0)
    assert (svc.params, svc.target_path, svc.target) == (None, None, "eval")
    yaml = compose("train", []).balance.probe
    assert (svc.batch_size, svc.eval_size, svc.seed) == (
        yaml.batch_size,
        yaml.eval_size,
        yaml.seed,
    )


def test_batch_size_one_is_accepted_and_zero_refused() -> None:
    assert GradientProbe(batch_size=1, target=None).batch_size == 1
    with pytest.raises(ValueError) as err:
        GradientProbe(batch_size=0, target=None)
    assert str(err.value) == "balance.probe.batch_size must be >= 1, got 0"


def test_target_file_without_path_message() -> None:
    with pytest.raises(ValueError) as err:
        GradientProbe(target="file")
    assert str(err.value) == "strategy.target=file needs balance.probe.target_path (a file)"


def test_missing_local_target_file_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError) as err:
        GradientProbe(target="file", target_path=str(missing))
    assert str(err.value) == (
        f"balance.probe.target_path='{missing}' does not exist " + MISSING_HINT
    )


def test_hf_target_is_not_checked_as_a_local_file() -> None:
    """An ``hf:<name>`` target loads later, from the hub: no local-file check at build time;
    the prefix is case-sensitive (``HF:`` is a local path)."""
    svc = GradientProbe(target="file", target_path="hf:no-such-org/no-such-set")
    assert svc.target_path == "hf:no-such-org/no-such-set"
    with pytest.raises(FileNotFoundError) as err:
        GradientProbe(target="file", target_path="HF:no-such-org/no-such-set")
    assert str(err.value) == (
        "balance.probe.target_path='HF:no-such-org/no-such-set' does not exist " + MISSING_HINT
    )


@pytest.mark.parametrize(
    ("target", "shown", "used"),
    [("eval", "eval", "the eval probe set"), (None, "train", "no target batch")],
)
def test_unused_target_path_message_names_what_is_used(
    target: str | None, shown: str, used: str
) -> None:
    with pytest.raises(ValueError) as err:
        GradientProbe(target=target, target_path="t.jsonl")
    assert str(err.value) == (
        f"balance.probe.target_path='t.jsonl' is set but strategy.target={shown} uses {used}: "
        "set strategy.target=file to use the file, or unset balance.probe.target_path"
    )


def _empty_first_datamodule() -> SimpleNamespace:
    """``test_gradient_probe_rows``'s data under three domains, the first without examples:
    domain 1 = rows 0-3, domain 2 = rows 4-7."""
    dm = datamodule()
    dm.train_data.domain = DOMAIN + 1
    dm.domain_names = ["empty", "a", "b"]
    return dm


def test_domains_after_an_empty_domain_are_probed() -> None:
    """An empty domain's zero row does not end the loop: the rows after it hold their
    gradients, also over a buffer full of garbage."""
    model = Reg()
    svc = GradientProbe(batch_size=4, target=None)
    svc.setup(SimpleNamespace(), model, _empty_first_datamodule(), OverheadMeter())  # type: ignore[arg-type]
    assert svc.present.tolist() == [False, True, True]
    assert svc.matrix is not None
    svc.matrix.fill_(float("nan"))
    matrix = svc.probe(model)
    assert torch.equal(matrix[0], torch.zeros(9))
    for row, rows in ((1, np.arange(4)), (2, np.arange(4, 8))):
        ref = reference_row(rows, NAMES)
        np.testing.assert_allclose(matrix[row].double().numpy(), ref, rtol=1e-6, atol=1e-6)
    assert svc.probes == 1


def test_probe_without_a_bound_trainer_runs_outside_any_precision_context() -> None:
    """A probe whose ``_trainer`` was never bound (state set up by hand, no ``setup``
    call's trainer) probes without a precision plugin."""
    model = Reg()
    svc = GradientProbe(batch_size=4, target=None)
    svc.setup(SimpleNamespace(), model, datamodule(), OverheadMeter())  # type: ignore[arg-type]
    del svc._trainer
    matrix = svc.probe(model)
    ref = reference_row(np.arange(4), NAMES)
    np.testing.assert_allclose(matrix[0].double().numpy(), ref, rtol=1e-6, atol=1e-6)


class _Many(nn.Module):
    """``n`` trainable scalars ``p00, p01, ...`` (and a frozen one, never listed)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        for i in range(n):
            self.register_parameter(f"p{i:02d}", nn.Parameter(torch.zeros(1)))
        self.frozen = nn.Parameter(torch.zeros(1), requires_grad=False)


@pytest.mark.parametrize("n", [12, 13])
def test_no_match_lists_at_most_twelve_names(n: int) -> None:
    """The error lists the first 12 trainable names, and ``...`` only when there are more."""
    shown = [f"p{i:02d}" for i in range(min(n, 12))] + (["..."] if n > 12 else [])
    with pytest.raises(ValueError) as err:
        select_parameters(_Many(n), "nope*")
    assert str(err.value) == (
        f"balance.probe.params=['nope*'] matches no trainable parameter; names look like {shown}"
    )
