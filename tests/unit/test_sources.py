"""Data sources, labels and tokenisation: formats, errors that name the config key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnb.data.labels import labels_from_field, single_domain
from rnb.data.sources import build_texts, column, load_records, split_records
from rnb.data.tokenize import encode_examples, load_tokenizer

ROWS = [
    {"q": "what is two plus two", "a": "four", "cat": "math", "skill": "add"},
    {"q": "reverse the word cat", "a": "tac", "cat": "text", "skill": "rev"},
    {"q": "what is three plus one", "a": "four", "cat": "math", "skill": "add"},
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    pq = tmp_path / "d.parquet"
    pd.DataFrame(ROWS).to_parquet(pq)
    csv = tmp_path / "d.csv"
    pd.DataFrame(ROWS).to_csv(csv, index=False)
    return {"jsonl": jl, "parquet": pq, "csv": csv}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_formats_load_identically(files: dict[str, Path], fmt: str) -> None:
    rows = load_records(str(files[fmt]))
    assert [r["q"] for r in rows] == [r["q"] for r in ROWS]


def test_hf_save_to_disk_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    assert load_records(str(path))[1]["a"] == "tac"


def test_missing_file_names_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.eval_path"):
        load_records(str(tmp_path / "nope.jsonl"), "data.eval_path")


def test_empty_file_and_bad_format(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no records"):
        load_records(str(empty))
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(ValueError, match="unsupported format"):
        load_records(str(other))


def test_texts_from_fields_and_template() -> None:
    assert build_texts(ROWS, ["q", "a"])[1] == "reverse the word cat\ntac"
    assert build_texts(ROWS, "Q: {q} A: {a}")[0] == "Q: what is two plus two A: four"


def test_missing_field_lists_columns() -> None:
    with pytest.raises(
        ValueError,
        match=r"data.text_fields: field 'text' not in columns \['a', 'cat', 'q', 'skill'\]",
    ):
        build_texts(ROWS, ["text"])
    with pytest.raises(ValueError, match="data.text_fields: field .nope. not in columns"):
        build_texts(ROWS, "{nope}")
    with pytest.raises(ValueError, match="data.domain_field='dom' missing"):
        column(ROWS, "dom", "data.domain_field")


def test_empty_text_rejected() -> None:
    with pytest.raises(ValueError, match="record 0 has empty text"):
        build_texts([{"q": "  "}], ["q"])


def test_split_is_seeded_and_disjoint() -> None:
    rows = [{"i": i} for i in range(100)]
    tr, ev = split_records(rows, 0.1, seed=1)
    _tr2, ev2 = split_records(rows, 0.1, seed=1)
    assert ev == ev2 and len(ev) == 10 and len(tr) == 90
    assert not {r["i"] for r in tr} & {r["i"] for r in ev}
    with pytest.raises(ValueError, match="data.eval_fraction"):
        split_records(rows, 1.5, seed=0)


def test_domain_labels_and_unknown_eval_domain() -> None:
    labels = labels_from_field(ROWS, ROWS[:2], "cat")
    assert labels.names == ["math", "text"]
    assert labels.train.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="zero training examples"):
        labels_from_field(ROWS[:1], ROWS[1:2], "cat")
    with pytest.raises(ValueError, match="eval split is empty"):
        single_domain(3, 0)


def test_bpe_trains_offline_caches_and_masks_prompt(tmp_path: Path) -> None:
    texts = [r["q"] + " " + r["a"] for r in ROWS] * 20
    tok = load_tokenizer("bpe", texts, tmp_path, vocab_size=320, min_frequency=1)
    files = list((tmp_path / "tokenizers").glob("*/tokenizer.json"))
    assert len(files) == 1
    again = load_tokenizer("bpe", texts, tmp_path, vocab_size=320, min_frequency=1)
    assert again.encode("two plus") == tok.encode("two plus")
    split = encode_examples(tok, [r["q"] for r in ROWS], [r["a"] for r in ROWS], [0, 1, 0], 24)
    n_src = len(tok(ROWS[0]["q"], add_special_tokens=False)["input_ids"])
    assert (split.labels[0, :n_src] == -100).all()
    assert split.labels[0, n_src] != -100
    assert split.input_ids[0, split.attention_mask[0].sum() - 1] == tok.eos_token_id
    assert split.domain.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="data.max_length"):
        encode_examples(tok, ["a b c d e f g h i j k l m n o p"], ["x"], [0], 4)
    assert np.isin(split.labels, [-100, *range(len(tok))]).all()
