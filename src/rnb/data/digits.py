"""scikit-learn's bundled handwritten digits as a mixture problem (no download).

1797 grey-scale 8×8 images of the digits 0–9 (``sklearn.datasets.load_digits``, the UCI
optical-recognition test set), about 180 per class. Features: the 64 pixel intensities
scaled from ``0..16`` to ``[0, 1]``: the model's input and, for Regroup, the precomputed
image embedding (k-means on pixels finds writing styles: open and closed 4s, 1s with and
without a base, …). Predefined domains: the digit class (``digit0`` … ``digit9``) by
default, or any grouping of the classes (``data.domain_groups``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnb.data.features import FeatureDataModule, FeatureSet

__all__ = ["DigitsDataModule", "class_domains"]

CLASSES = [str(d) for d in range(10)]
# Regroup's report shows c-TF-IDF terms and examples per cluster; words survive its
# tokenizer (single characters such as "4" do not).
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def class_domains(
    target: np.ndarray, domain_groups: Mapping[str, Sequence[int]] | None
) -> list[str]:
    """The predefined domain of each example from its class.

    Args:
        target: ``[n]`` digit classes.
        domain_groups: ``{domain name: [digits]}`` covering each digit exactly once
            (``data.domain_groups``); ``None`` = one domain per digit, ``digit<d>``.

    Raises:
        ValueError: a digit is missing from the groups, listed twice, or not a digit.
    """
    if domain_groups is None:
        return [f"digit{int(y)}" for y in target]
    owner: dict[int, str] = {}
    for name, digits in domain_groups.items():
        for d in digits:
            digit = int(d)
            if digit not in range(10):
                raise ValueError(f"data.domain_groups: {d!r} in {name!r} is not a digit 0-9")
            if digit in owner:
                raise ValueError(
                    f"data.domain_groups: digit {digit} is in both {owner[digit]!r} and {name!r}"
                )
            owner[digit] = str(name)
    missing = sorted(set(range(10)) - set(owner))
    if missing:
        raise ValueError(f"data.domain_groups: digits {missing} belong to no domain")
    return [owner[int(y)] for y in target]


class DigitsDataModule(FeatureDataModule):
    """The bundled digits: 10 classes, 64 pixel features, domains by class or class group.

    Args:
        domain_groups: ``{domain name: [digits]}`` (``data.domain_groups``); ``None`` = one
            domain per digit class.
        **kwargs: :class:`~rnb.data.features.FeatureDataModule` arguments
            (``eval_fraction``, ``batch_size``, ``eval_batch_size``, ``num_workers``,
            ``cache_dir``, ``regroup``, ``seed``).
    """

    def __init__(
        self, domain_groups: Mapping[str, Sequence[int]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.domain_groups = None if domain_groups is None else dict(domain_groups)

    def load(self) -> FeatureSet:
        """The 1797 images as ``[1797, 64]`` pixels in ``[0, 1]`` with their classes."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        target = np.asarray(bunch.target, dtype=np.int64)
        return FeatureSet(
            features=np.asarray(bunch.data, dtype=np.float32) / 16.0,
            target=target,
            class_names=CLASSES,
            domain=class_domains(target, self.domain_groups),
            texts=[f"handwritten {_WORDS[int(y)]}" for y in target],
        )
