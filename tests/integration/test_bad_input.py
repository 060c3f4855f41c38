"""Bad-input matrix: every source format x every bad input (issue 8, acceptance).

Each cell either fails with an error naming the file, the record / line and the config key,
leaving the run directory and the cache exactly as they were -- or takes a documented
fallback (one domain ``all``; a 1-record domain kept in train) and trains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from rnb.config import compose
from rnb.train import train
from tests.data_files import BYTE_POS, FILES, FORMATS, POS, write, write_bytes_text, write_empty

ROWS = [
    {"text": f"record {i} is about {d} and more {d}", "source": d}
    for i, d in enumerate(["math", "code", "prose"] * 8)
]


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _bad_file(case: str, fmt: str, tmp: Path) -> tuple[Path, list[str]]:
    """The file of an error cell and what its message must contain (besides the name)."""
    rows = [dict(r) for r in ROWS]
    if case == "missing_text":
        rows[2]["text"] = None
        return write(fmt, rows, tmp), [POS[fmt], "data.text_fields", "data.on_missing"]
    if case == "missing_domain":
        rows[2]["source"] = None
        return write(fmt, rows, tmp), [POS[fmt], "data.domain_field", "data.on_missing"]
    if case == "undecodable":
        path = write_bytes_text(fmt, rows, tmp, b"\xe9")
        return path, [BYTE_POS[fmt], "data.encoding", "data.encoding_errors"]
    return write_empty(fmt, tmp), ["data.train_path", "contains no records"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", ["missing_text", "missing_domain", "undecodable", "empty"])
def test_bad_input_fails_clearly_and_leaves_run_and_cache_untouched(
    tmp_path: Path, _isolated_cache: Path, fmt: str, case: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path, expected = _bad_file(case, fmt, data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    before_run, before_cache = _snapshot(run), _snapshot(_isolated_cache)
    cfg = compose("train", [*FILES, f"data.train_path={path}", f"output_dir={run}"])
    with pytest.raises(ValueError) as err:
        train(cfg)
    msg = str(err.value)
    for part in [path.name, *expected]:
        assert part in msg, (part, msg)
    assert _snapshot(run) == before_run
    assert _snapshot(_isolated_cache) == before_cache
    assert not [p for p in _isolated_cache.rglob("*") if ".tmp" in p.name or "partial" in p.name]


def _datamodule(path: Path, *extra: str):
    cfg = compose("train", [*FILES, f"data.train_path={path}", *extra])
    dm = instantiate(cfg.data, regroup=None, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_domain_fallback(tmp_path: Path, fmt: str) -> None:
    rows = [{"text": r["text"]} for r in ROWS]  # no domain field at all
    dm = _datamodule(write(fmt, rows, tmp_path), "data.domain_field=null")
    assert dm.domain_names == ["all"]
    assert dm.domain_sizes.tolist() == [len(dm.train_data)] and len(dm.eval_data) == 5
    assert dm.eval_proportions.tolist() == [1.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_record_per_domain_stays_in_train(tmp_path: Path, fmt: str) -> None:
    rows = [*ROWS, {"text": "the only alpha record", "source": "alpha"}]
    rows += [{"text": "the only beta record", "source": "beta"}]
    path = write(fmt, rows, tmp_path)
    for seed in range(4):
        dm = _datamodule(path, f"seed={seed}")
        sizes = dict(zip(dm.domain_names, dm.domain_sizes.tolist(), strict=True))
        # per domain: floor(8 * 0.2 + 0.5) = 2 held out; a 1-record domain keeps its record
        assert sizes == {"alpha": 1, "beta": 1, "code": 6, "math": 6, "prose": 6}


@pytest.mark.parametrize("fmt", FORMATS)
def test_undecodable_replace_fallback(tmp_path: Path, fmt: str) -> None:
    path = write_bytes_text(fmt, ROWS, tmp_path, b"\xe9")
    dm = _datamodule(path, "data.encoding_errors=replace")
    texts = [r["text"] for r in dm.train_records + dm.eval_records]
    assert "caf\ufffd au lait" in texts and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("fmt", FORMATS)
def test_on_missing_drop_fallback(tmp_path: Path, fmt: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["text"], rows[4]["source"] = None, None
    dm = _datamodule(write(fmt, rows, tmp_path), "data.on_missing=drop")
    assert len(dm.train_records) + len(dm.eval_records) == len(ROWS) - 2
    assert "nan" not in dm.domain_names and "None" not in dm.domain_names


@pytest.mark.parametrize(
    "case", ["one_domain", "one_record_per_domain", "missing_drop", "undecodable_replace"]
)
def test_fallbacks_train(tmp_path: Path, case: str) -> None:
    """The documented fallbacks train through Lightning's Trainer (CSV, the issue's format)."""
    rows = [dict(r) for r in ROWS]
    extra = []
    if case == "one_domain":
        rows, extra = [{"text": r["text"]} for r in rows], ["data.domain_field=null"]
    elif case == "one_record_per_domain":
        rows.append({"text": "the only alpha record", "source": "alpha"})
    elif case == "missing_drop":
        rows[2]["text"], extra = None, ["data.on_missing=drop"]
    if case == "undecodable_replace":
        # every stage sees the replaced text: tokenizer, TF-IDF embedder, Regroup reports
        rows = [{**r, "text": r["text"] + " naïve café"} for r in rows]
        path = write_bytes_text("csv", rows, tmp_path, b"\xe9")
        extra = ["data.encoding_errors=replace", *REGROUP]
    else:
        path = write("csv", rows, tmp_path)
    cfg = compose("train", [*FILES, f"data.train_path={path}", f"output_dir={tmp_path}", *extra])
    summary = train(cfg)
    assert summary["steps"] == 12 and summary["eval_loss"] < summary["eval_loss_initial"]
    assert (tmp_path / "summary.json").exists()
    if case == "undecodable_replace":
        assert summary["regroup"]["k"] in (2, 3)
        assert (tmp_path / "regroup.md").read_text(encoding="utf-8").strip()


REGROUP = [
    "regroup=kmeans",
    "regroup/embedder=tfidf",
    "regroup.embedder.dim=8",
    "regroup.embedder.progress=false",
    "regroup.k_values=[2,3]",
    "regroup.min_cluster_size=2",
]
