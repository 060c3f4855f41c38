"""FeatureDataModule: a custom source, its splits, domains, batches and errors."""

from __future__ import annotations

import numpy as np
import pytest

from rnb.data.features import FeatureDataModule, FeatureSet


class Blobs(FeatureDataModule):
    """Two Gaussian blobs; predefined domains optional."""

    def __init__(self, domains: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.domains = domains

    def load(self) -> FeatureSet:
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1], 50)
        x = rng.normal(size=(100, 3)) + y[:, None] * 4
        dom = ["left" if v == 0 else "right" for v in y] if self.domains else None
        return FeatureSet(x, y, ["a", "b"], dom, [f"blob {v}" for v in y])


def test_custom_source_splits_batches_and_model_inputs() -> None:
    dm = Blobs(eval_fraction=0.2, batch_size=8, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.domain_names == ["left", "right"]
    assert dm.domain_sizes.tolist() == [40, 40]  # stratified 20 % split
    np.testing.assert_allclose(dm.eval_proportions, [0.5, 0.5])
    assert dm.model_inputs() == {"num_features": 3, "num_classes": 2}
    assert dm.tokens_per_example == 1 and dm.domain_tokens.tolist() == [40.0, 40.0]
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape == (8, 3) and str(batch["features"].dtype) == "torch.float32"
    assert batch["target"].shape == (8,) and batch["domain"].shape == (8,)
    # the domain of a row is its example's (here the class decides the domain)
    assert (batch["domain"] == batch["target"]).all()
    ev = next(iter(dm.val_dataloader()))
    assert ev["features"].shape[0] == 20
    with pytest.raises(
        ValueError, match="balance.probe.target_path='x.jsonl'.*strategy.target=eval"
    ):
        dm.encode_file("x.jsonl", "balance.probe.target_path")


def test_without_predefined_domains_one_domain() -> None:
    dm = Blobs(domains=False)
    dm.setup("fit")
    assert dm.domain_names == ["all"] and dm.domain_sizes.tolist() == [80]


def test_feature_set_checks_shapes_and_values() -> None:
    x = np.zeros((3, 2))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in the features of example 2"):
        FeatureSet(x, [0, 1, 0], ["a", "b"], None, ["t"] * 3)
    with pytest.raises(ValueError, match="need features"):
        FeatureSet(np.zeros((3, 2)), [0, 1], ["a", "b"], None, ["t"] * 3)
    with pytest.raises(ValueError, match="2 domains for 3 examples"):
        FeatureSet(np.zeros((3, 2)), [0, 1, 0], ["a", "b"], ["d", "d"], ["t"] * 3)
