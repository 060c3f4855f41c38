"""Missing values and undecodable text: every reader, every field role (issue 8, kinds 1-2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnb.data.sources import (
    build_texts,
    check_records,
    column,
    field_roles,
    load_records,
    split_records,
)
from tests.data_files import BYTE_POS, POS, write, write_bytes_text

ROWS = [
    {"text": f"example {i} of {d}", "out": f"answer {i}", "emb": d, "source": d, "ref": f"r{i % 2}"}
    for i, d in enumerate(["math", "code", "prose"] * 4)
]
ROLES = {
    "data.text_fields": "text",
    "data.target_field": "out",
    "data.embed_fields": "emb",
    "data.domain_field": "source",
    "data.reference_field": "ref",
}


@pytest.mark.parametrize("fmt", list(POS))
@pytest.mark.parametrize("key", list(ROLES))
def test_missing_value_is_an_error_naming_file_row_and_key(
    tmp_path: Path, fmt: str, key: str
) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2][ROLES[key]] = None
    path = write(fmt, rows, tmp_path)
    records = load_records(str(path))
    # never the text 'nan' / 'None'; CSV has no null, so its empty cell is the empty string
    assert records[2][ROLES[key]] == ("" if fmt == "csv" else None)
    roles = field_roles(["text"], "out", ["emb"], "source", "ref")
    with pytest.raises(ValueError) as err:
        check_records(records, roles, source=f"data.train_path='{path}'")
    msg = str(err.value)
    assert path.name in msg and POS[fmt] in msg and key in msg and "1 of 12 records" in msg


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_absent_json_key_is_missing_too(tmp_path: Path, fmt: str) -> None:
    rows = [dict(r) for r in ROWS]
    del rows[2]["source"]
    records = load_records(str(write(fmt, rows, tmp_path)))
    with pytest.raises(ValueError, match=rf"data.domain_field: .*d.{fmt}, {POS[fmt]} has no value"):
        check_records(records, field_roles("text", domain_field="source"))
    with pytest.raises(
        ValueError, match=rf"data.domain_field='source' missing in 1 records .*{POS[fmt]}"
    ):
        column(records, "source", "data.domain_field")


def test_csv_empty_cell_was_the_text_nan(tmp_path: Path) -> None:
    """Reproducer: an empty CSV cell became the training text 'nan' / a domain 'nan'."""
    rows = [dict(r) for r in ROWS]
    rows[2]["text"], rows[4]["source"] = None, None
    records = load_records(str(write("csv", rows, tmp_path)))
    assert records[2]["text"] == "" and records[4]["source"] == ""
    with pytest.raises(ValueError, match=r"d.csv, row 3 has empty text"):
        build_texts(records, ["text"])
    with pytest.raises(ValueError, match=r"missing in 1 records \(first: .*d.csv, row 5\)"):
        column(records, "source", "data.domain_field")


def test_csv_empty_optional_field_in_multi_field_text_is_allowed(tmp_path: Path) -> None:
    """An Alpaca-style CSV: an empty `input` cell is "" (as in JSONL), not a missing value."""
    p = tmp_path / "a.csv"
    p.write_text("instruction,input,output\nAdd 1 and 2,,3\nUpper,abc,ABC\n", encoding="utf-8")
    records = load_records(str(p))
    assert build_texts(records, ["instruction", "input", "output"]) == [
        "Add 1 and 2\n\n3",
        "Upper\nabc\nABC",
    ]


def test_none_fields_in_multi_field_text_and_template_are_errors() -> None:
    rows = [{"a": "x", "b": "y"}, {"a": None, "b": "y"}]
    # the list path used to drop the None field silently, the template to write 'None'
    with pytest.raises(ValueError, match="record 1 has no value for field 'a'"):
        build_texts(rows, ["a", "b"])
    with pytest.raises(ValueError, match="record 1 has no value for field 'a'"):
        build_texts(rows, "{a} / {b}")
    assert build_texts(rows[:1], "{a} / {b}") == ["x / y"]
    # an empty string inside a multi-field text is a value (e.g. Alpaca's empty `input`)
    assert build_texts([{"a": "", "b": "y"}], ["a", "b"]) == ["\ny"]


def test_csv_keeps_cells_verbatim(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("text,source,id\nNA,None,007\nnull,1,10\n", encoding="utf-8")
    rows = load_records(str(p))
    assert [r["text"] for r in rows] == ["NA", "null"]  # pandas' default would make them NaN
    assert [r["source"] for r in rows] == ["None", "1"] and rows[0]["id"] == "007"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_byte_order_mark_is_not_data(tmp_path: Path, fmt: str) -> None:
    path = write(fmt, ROWS, tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_records(str(path))[0]["text"] == ROWS[0]["text"]


def test_tsv_is_split_on_tabs(tmp_path: Path) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("text\tsource\na, b\tx\n", encoding="utf-8")
    assert load_records(str(p)) == [{"text": "a, b", "source": "x"}]


def test_on_missing_drop_skips_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["text"], rows[5]["source"] = None, ""
    records = load_records(str(write("csv", rows, tmp_path)))
    roles = field_roles("text", domain_field="source")
    with caplog.at_level(logging.WARNING):
        kept = check_records(records, roles, "drop", "data.train_path='d.csv'")
    assert len(kept) == 10 and all(r["text"] and r["source"] for r in kept)
    assert "dropped 2 of 12 records" in caplog.text
    with pytest.raises(ValueError, match="data.on_missing='skip': choose one of"):
        check_records(records, roles, "skip")
    with pytest.raises(ValueError, match="dropped all 1 records"):
        check_records(records[2:3], roles, "drop")


# ------------------------------------------------------------------ undecodable text
#: the text readers (Parquet / dataset binary columns: test_binary_columns_...)
LINE = {f: BYTE_POS[f] for f in ("jsonl", "json", "csv")}


def _latin1(fmt: str, tmp: Path) -> Path:
    return write_bytes_text(fmt, ROWS, tmp, b"\xe9")


@pytest.mark.parametrize("fmt", list(LINE))
def test_undecodable_bytes_strict_names_file_line_and_keys(tmp_path: Path, fmt: str) -> None:
    path = _latin1(fmt, tmp_path)
    with pytest.raises(ValueError) as err:
        load_records(str(path))
    msg = str(err.value)
    assert f"{path}, {LINE[fmt]}" in msg and "[e9]" in msg
    assert "data.encoding" in msg and "data.encoding_errors=replace" in msg
    assert not isinstance(err.value, UnicodeDecodeError)


@pytest.mark.parametrize("fmt", list(LINE))
def test_undecodable_bytes_replace_counts_and_latin1_decodes(
    tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _latin1(fmt, tmp_path)
    with caplog.at_level(logging.WARNING):
        rows = load_records(str(path), encoding_errors="replace")
    assert rows[2]["text"] == "caf\ufffd au lait"
    assert "replaced 1 undecodable" in caplog.text and LINE[fmt] in caplog.text
    assert load_records(str(path), encoding="latin-1")[2]["text"] == "café au lait"


def test_binary_columns_follow_the_encoding_policy(tmp_path: Path) -> None:
    p = tmp_path / "b.parquet"
    texts = [b"plain", b"caf\xc3\xa9", b"caf\xe9"]
    pq.write_table(pa.table({"text": pa.array(texts, pa.binary())}), p)
    with pytest.raises(ValueError, match=r"b.parquet, row 3, field 'text'.*data.encoding"):
        load_records(str(p))
    rows = load_records(str(p), encoding_errors="replace")
    assert [r["text"] for r in rows] == ["plain", "café", "caf\ufffd"]  # str, never b'...'


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_lone_surrogate_escape(tmp_path: Path, fmt: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["text"] = "caf\udce9"  # json.dumps writes the escape "\udce9"
    path = write(fmt, rows, tmp_path)
    with pytest.raises(ValueError, match=rf"{POS[fmt]}: field 'text' holds the lone surrogate"):
        load_records(str(path))
    text = load_records(str(path), encoding_errors="replace")[2]["text"]
    assert text == "caf\ufffd" and text.encode("utf-8")  # valid for tokenizers / utf-8 writes


def test_bad_encoding_keys_are_named(tmp_path: Path) -> None:
    path = write("jsonl", ROWS, tmp_path)
    with pytest.raises(ValueError, match="data.encoding='klingon'"):
        load_records(str(path), encoding="klingon")
    with pytest.raises(ValueError, match="data.encoding_errors='ignore': choose one of"):
        load_records(str(path), encoding_errors="ignore")


# ------------------------------------------------------------------ eval split (kind 10)
def _with_singleton() -> list[dict]:
    rows = [{"text": f"t{i}", "source": ["a", "b", "c"][i % 3]} for i in range(60)]
    return [*rows, {"text": "lonely", "source": "solo"}]


@pytest.mark.parametrize("seed", range(10))
def test_stratified_split_keeps_every_domain_trainable(seed: int) -> None:
    """Reproducer: a 1-record domain landed in eval for some seeds (seed 1 at 0.2)."""
    from rnb.data.labels import labels_from_field

    rows = _with_singleton()
    domains = [r["source"] for r in rows]
    train, ev = split_records(rows, 0.2, seed, domains)
    labels = labels_from_field(train, ev, "source")  # raised 'zero training examples'
    assert labels.names == ["a", "b", "c", "solo"]
    per = {d: sum(r["source"] == d for r in ev) for d in labels.names}
    assert per == {"a": 4, "b": 4, "c": 4, "solo": 0}  # floor(20 * 0.2 + 0.5) per domain
    assert split_records(rows, 0.2, seed, domains) == (train, ev)  # deterministic
    assert {r["text"] for r in train} | {r["text"] for r in ev} == {r["text"] for r in rows}


def test_stratified_split_rounding_and_fallbacks() -> None:
    rows = [{"d": d} for d in ["x"] * 3 + ["y"] * 2 + ["z"]]
    domains = [r["d"] for r in rows]
    _, ev = split_records(rows, 0.5, 0, domains)
    # x: floor(1.5 + .5) = 2; y: min(floor(1 + .5), 1) = 1; z: 1 record -> stays in train
    assert sorted(r["d"] for r in ev) == ["x", "x", "y"]
    _, ev = split_records(rows, 0.01, 0, domains)  # everything rounds to 0: one from x
    assert [r["d"] for r in ev] == ["x"]
    with pytest.raises(ValueError, match="every domain of data.domain_field has a single"):
        split_records([*rows[-1:], {"d": "w"}], 0.5, 0, ["z", "w"])


def test_provenance_survives_the_split(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[7]["text"] = None
    records = load_records(str(write("csv", rows, tmp_path)))
    train, ev = split_records(records, 0.3, 0)
    both = train + ev
    with pytest.raises(ValueError, match=r"d.csv, row 8 has empty text"):
        build_texts(sorted(both, key=lambda r: r["text"] != ""), ["text"])
