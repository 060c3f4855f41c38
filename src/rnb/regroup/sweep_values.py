"""The values a Regroup sweep tries: ``regroup.k_values`` as a list of ints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["expand_values"]


def expand_values(values: Sequence[float] | Mapping[str, int], n: int | None = None) -> list[int]:
    """Turn a sweep spec into a list of ints.

    Args:
        values: a list of ints, or a range spec ``{start, stop, step}`` with Python
            ``range`` semantics (``stop`` excluded, ``step`` defaults to 1), e.g.
            ``{start: 2, stop: 12, step: 2}`` -> ``[2, 4, 6, 8, 10]``. A list entry in
            ``(0, 1)`` is a fraction of ``n`` (``round(f * n)``, at least 2), so a density
            clusterer's ``min_cluster_size`` grid scales with the data; fractions that
            round to the same value are kept once.
        n: number of training examples (needed for fractions).

    Returns:
        The values in the given order.

    Raises:
        ValueError: empty result, non-integers, duplicates, a fraction without ``n``, or
            a malformed range spec.
    """
    if isinstance(values, Mapping):
        unknown = set(values) - {"start", "stop", "step"}
        if unknown or not {"start", "stop"} <= set(values):
            raise ValueError(
                f"regroup.k_values: a range spec needs keys start, stop[, step], got {dict(values)}"
            )
        try:
            start, stop = int(values["start"]), int(values["stop"])
            step = int(values.get("step", 1))
        except (TypeError, ValueError) as err:
            raise ValueError(f"regroup.k_values: non-integer range spec {dict(values)}") from err
        if step <= 0:
            raise ValueError(f"regroup.k_values: need step >= 1, got {step}")
        out = list(range(start, stop, step))
    elif isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(
            f"regroup.k_values: need a list or a {{start, stop, step}} spec, got {values!r}"
        )
    else:
        out = []
        for v in values:
            try:
                f = float("nan") if isinstance(v, bool) else float(v)
            except (TypeError, ValueError):
                f = float("nan")
            if 0 < f < 1 and n is not None:
                value = max(2, round(f * n))
                if value not in out:  # small n: neighbouring fractions may coincide
                    out.append(value)
            elif f.is_integer():
                out.append(int(f))
            else:
                raise ValueError(
                    f"regroup.k_values: values must be integers or fractions in (0, 1) of the "
                    f"number of training examples, got {v!r}"
                )
    if not out:
        raise ValueError(f"regroup.k_values: the sweep is empty ({values!r})")
    if len(set(out)) != len(out):
        raise ValueError(f"regroup.k_values: duplicate values in {out}")
    return out
