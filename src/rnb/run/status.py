"""A run's outcome in ``summary.json``: its status, its failure, and strict JSON.

Every summary has ``status``: ``"completed"`` (a result), ``"diverged"`` (a non-finite loss,
see :mod:`rnb.run.divergence`) or ``"failed"`` (any other exception during training), and
``failure``: ``null``, or ``{step, reason, type, message}``. Summaries are strict JSON:
non-finite floats are written as ``null``, never as the bare ``NaN`` that JSON parsers
outside Python reject.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from rnb.run.divergence import DivergedError

__all__ = ["COMPLETED", "DIVERGED", "FAILED", "failure_record", "strict_json"]

COMPLETED, DIVERGED, FAILED = "completed", "diverged", "failed"


def failure_record(err: BaseException | None, step: int) -> dict[str, Any]:
    """``status`` and ``failure`` entries of a summary for a run that raised ``err``.

    Args:
        err: the exception that ended the run, or ``None`` for a completed run.
        step: the optimizer step the run reached (used when ``err`` carries none).
    """
    if err is None:
        return {"status": COMPLETED, "failure": None}
    if isinstance(err, DivergedError):
        status, at, reason = DIVERGED, err.step, err.reason
    else:
        status, at, reason = FAILED, int(step), f"{type(err).__name__}: {err}"
    return {
        "status": status,
        "failure": {"step": at, "reason": reason, "type": type(err).__name__, "message": str(err)},
    }


def strict_json(obj: Any) -> str:
    """``obj`` as indented strict JSON: non-finite floats become ``null``.

    Arrays and tensors become lists, other unknown objects their ``str``.

    Raises:
        ValueError: never for non-finite floats (they are replaced first).
    """
    return json.dumps(_finite(obj), indent=2, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        return _finite(obj.tolist())
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return str(obj)
