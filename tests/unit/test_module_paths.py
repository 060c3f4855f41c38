"""Public names that moved when over-long modules were split still import from the old path."""

from __future__ import annotations

import importlib

import pytest

# (old module, name, module it lives in now)
MOVED = [
    (
        "rnb.regroup.embedders",
        "SentenceTransformerEmbedder",
        "rnb.regroup.embedders.sentence_transformer",
    ),
    ("rnb.regroup.embedders", "TfidfSvdEmbedder", "rnb.regroup.embedders.tfidf"),
    ("rnb.regroup.embedders", "resolve_model", "rnb.regroup.embedders.sentence_transformer"),
    (
        "rnb.regroup.embedders",
        "DEFAULT_MODEL_ALIASES",
        "rnb.regroup.embedders.sentence_transformer",
    ),
    ("rnb.regroup.embedders", "PrecomputedEmbedder", "rnb.regroup.precomputed"),
    ("rnb.regroup.pipeline", "FORMAT_VERSION", "rnb.regroup.pipeline_key"),
    ("rnb.regroup.selection", "expand_values", "rnb.regroup.sweep_values"),
    ("rnb.regroup.cache", "fingerprint_texts", "rnb.regroup.fingerprints"),
    ("rnb.regroup.cache", "fingerprint_array", "rnb.regroup.fingerprints"),
    ("rnb.regroup.cache", "fingerprint_config", "rnb.regroup.fingerprints"),
    ("rnb.regroup.cache", "make_key", "rnb.regroup.fingerprints"),
    ("rnb.regroup.report", "write_report", "rnb.regroup.report_files"),
    ("rnb.data.store", "build_store", "rnb.data.store_build"),
    (
        "rnb.balance.services.gradient_probe",
        "select_parameters",
        "rnb.balance.services.probe_params",
    ),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_name_is_the_same_object_under_its_old_path(old: str, name: str, new: str) -> None:
    assert getattr(importlib.import_module(old), name) is getattr(
        importlib.import_module(new), name
    )


def test_unknown_store_attribute_still_raises() -> None:
    store = importlib.import_module("rnb.data.store")
    with pytest.raises(AttributeError, match="no_such_name"):
        store.no_such_name  # noqa: B018
