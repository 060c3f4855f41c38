"""Regroup inside a training run: eval labels are the nearest training centroid.

The run's DataModule holds the train and eval domain labels Regroup produced. The test
re-embeds the same texts with the same (seeded, deterministic) TF-IDF embedder, takes each
training cluster's mean embedding as its centroid and assigns every eval text to the nearest
one by brute force: the run's eval labels must be exactly those. A pipeline that shifts the
eval labels by one cluster (or assigns against another space or clustering) fails, and so do
the mixture's inputs in ``summary.json`` (domain sizes, eval proportions ``q``).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import instantiate

from rnb.config import compose
from rnb.data.sources import build_texts
from rnb.train import train


class _Grab(L.Callback):
    """Keeps the records and labels the DataModule trained on."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        self.train, self.eval = dm.train_records, dm.eval_records
        self.fields = dm.embed_fields or dm.text_fields
        self.names = list(dm.domain_names)
        self.labels_train = np.asarray(dm.labels.train)
        self.labels_eval = np.asarray(dm.labels.eval)


def test_eval_labels_are_nearest_training_centroid(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [
        *tiny_overrides,
        "regroup=kmeans",
        "regroup/embedder=tfidf",
        "regroup.embedder.progress=false",
        "regroup.k_values=[5,8]",
        "regroup.min_cluster_size=5",
        "trainer.max_steps=4",
        "initial_eval=false",
        "logger=none",
        f"output_dir={tmp_path}",
    ]
    cfg = compose("train", over)
    grab = _Grab()
    train(cfg, callbacks=[grab])
    summary = json.loads((tmp_path / "summary.json").read_text())

    embedder = instantiate(cfg.regroup.embedder, _convert_="all")
    texts, ev_texts = build_texts(grab.train, grab.fields), build_texts(grab.eval, grab.fields)
    embedder.fit(texts)
    X = np.asarray(embedder.encode(texts), dtype=np.float64)
    Xe = np.asarray(embedder.encode(ev_texts), dtype=np.float64)

    k = len(grab.names)
    assert 5 <= k <= 8 and summary["regroup"]["k"] == k
    assert sorted(set(grab.labels_train.tolist())) == list(range(k))
    centroids = np.stack([X[grab.labels_train == c].mean(axis=0) for c in range(k)])
    expected = np.array([int(np.argmin([np.sum((x - c) ** 2) for c in centroids])) for x in Xe])
    np.testing.assert_array_equal(grab.labels_eval, expected)
    # the labels are not trivially constant: the check would see a shifted assignment
    assert len(set(expected.tolist())) >= 3
    assert (grab.labels_eval != (expected + 1) % k).all()

    # what the mixture sees follows from these labels
    np.testing.assert_array_equal(
        summary["domain_sizes"], np.bincount(grab.labels_train, minlength=k)
    )
    np.testing.assert_allclose(
        summary["eval_proportions"], np.bincount(expected, minlength=k) / len(expected)
    )
    assert summary["domains"] == grab.names
