"""The token store: round trip, fingerprint, interrupted builds, DataModule batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from rnb.config import compose
from rnb.data.encode_file import model_io
from rnb.data.sources import load_records
from rnb.data.split import split_indices
from rnb.data.store import StoreSplit
from rnb.data.store_build import build_store
from rnb.data.streams import FileSource
from rnb.data.tokenize import encode_examples, load_tokenizer
from tests.data_files import FILES

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
PAIRS = [
    (" ".join(WORDS[(i + j) % 8] for j in range(1 + i % 9)), f"answer {WORDS[i % 8]} {i}")
    for i in range(50)
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    texts = [s + " " + t for s, t in PAIRS]
    return load_tokenizer("bpe", texts, tmp_path_factory.mktemp("tok"), 300, 1)


class CountingTokenizer:
    """Delegates to a tokenizer and counts the texts it encodes."""

    def __init__(self, tok) -> None:
        self.tok, self.encoded = tok, 0

    def __call__(self, texts, **kw):
        self.encoded += len(texts)
        return self.tok(texts, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("with_target", [True, False])
def test_store_round_trip_equals_in_memory_encoding(tmp_path: Path, tok, with_target) -> None:
    pairs = PAIRS if with_target else [(s, None) for s, _ in PAIRS]
    store = build_store(tmp_path, "fp", lambda: iter(pairs), len(pairs), tok, 12, chunk_size=7)
    sources = [s for s, _ in PAIRS]
    targets = [t for _, t in PAIRS] if with_target else None
    ref = encode_examples(tok, sources, targets, np.arange(50) % 3, 12)
    rows = np.random.default_rng(0).permutation(50)[:30]
    split = StoreSplit(store, rows, ref.domain[rows])
    for key in ("input_ids", "attention_mask", "labels"):
        np.testing.assert_array_equal(getattr(split, key), getattr(ref, key)[rows])
    item = split[4]
    np.testing.assert_array_equal(item["labels"], ref.labels[rows[4]])
    assert item["domain"] == ref.domain[rows[4]]
    # the DataLoader's batch read gives each row exactly as split[i] does
    idx = [4, 0, 29, 4, 11]
    for got, i in zip(split.__getitems__(idx), idx, strict=True):
        assert got.keys() == split[i].keys()
        for key, value in split[i].items():
            np.testing.assert_array_equal(got[key], value)
            assert got[key].dtype == value.dtype
    loss = (ref.labels[:, 1:] != -100).sum(axis=1)
    np.testing.assert_array_equal(store.loss_tokens(rows), loss[rows])
    assert not list(tmp_path.glob("*.partial"))  # published, nothing left behind


def _arrays(store) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in store._arrays().items()}


def test_interrupted_build_resumes_to_an_identical_store(tmp_path: Path, tok) -> None:
    def broken():
        for i, pair in enumerate(PAIRS):
            if i == 17:  # mid-chunk: chunks 0 and 1 (7 examples each) are complete
                raise RuntimeError("killed")
            yield pair

    with pytest.raises(RuntimeError, match="killed"):
        build_store(tmp_path / "a", "fp", broken, len(PAIRS), tok, 12, chunk_size=7)
    partial = tmp_path / "a" / "fp.partial"
    assert sorted(p.name for p in partial.glob("chunk_*.npz")) == [
        "chunk_000000.npz",
        "chunk_000001.npz",
    ]
    assert not (tmp_path / "a" / "fp").exists()  # a half-written store is never published
    counting = CountingTokenizer(tok)
    resumed = build_store(
        tmp_path / "a", "fp", lambda: iter(PAIRS), len(PAIRS), counting, 12, chunk_size=7
    )
    assert counting.encoded == 2 * (len(PAIRS) - 14)  # sources + targets of the rest only
    clean = build_store(tmp_path / "b", "fp", lambda: iter(PAIRS), len(PAIRS), tok, 12, 7)
    # a published store holds its arrays and meta.json only (no resume bookkeeping)
    for root in (tmp_path / "a" / "fp", tmp_path / "b" / "fp"):
        assert sorted(p.name for p in root.iterdir()) == [
            "lab_from.npy", "meta.json", "offsets.npy", "tokens.npy",
        ]  # fmt: skip
    a, b = _arrays(resumed), _arrays(clean)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not partial.exists()


def test_data_error_mid_build_leaves_no_partial_store(tmp_path: Path, tok) -> None:
    long_source = [(" ".join(WORDS * 4), "x")] * 3
    with pytest.raises(ValueError, match="example 0 has no target tokens"):
        build_store(tmp_path, "fp", lambda: iter(long_source), 3, tok, 8, chunk_size=2)
    assert list(tmp_path.iterdir()) == [tmp_path / "fp.lock"]


ROWS = [{"text": f"record {i} about {d} and {d} {i % 5}", "src": d} for i, d in
        enumerate(["math", "code", "prose"] * 10)]  # fmt: skip


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _dm(path: Path, *extra: str):
    cfg = compose("train", [*FILES, f"data.train_path={path}", "data.domain_field=src", *extra])
    dm = instantiate(cfg.data, regroup=None, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "abc", "true"])
def test_store_chunk_size_must_be_a_whole_number(tmp_path: Path, bad: str) -> None:
    """A fraction is refused, not truncated (``1.5`` used to build with chunks of 1)."""
    path = _write(tmp_path / "d.jsonl", ROWS)
    cfg = compose("train", [*FILES, f"data.train_path={path}", f"data.store_chunk_size={bad}"])
    with pytest.raises(Exception, match=r"data\.store_chunk_size=.*need a whole number >= 1"):
        instantiate(cfg.data, regroup=None, _recursive_=False)
    cfg = compose("train", [*FILES, f"data.train_path={path}", "data.store_chunk_size=2e4"])
    assert instantiate(cfg.data, regroup=None, _recursive_=False).store_chunk_size == 20000


def test_build_store_refuses_a_chunk_size_below_one_without_writing(tmp_path: Path, tok) -> None:
    with pytest.raises(ValueError, match="data.store_chunk_size=0"):
        build_store(tmp_path, "fp", lambda: iter(PAIRS), len(PAIRS), tok, 12, chunk_size=0)
    assert list(tmp_path.iterdir()) == []


def test_store_fingerprint_follows_content_tokenizer_and_max_length(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", ROWS)
    base = _dm(path).train_data.store.path
    assert _dm(path).train_data.store.path == base  # same inputs: the same store
    assert _dm(path, "data.max_length=24").train_data.store.path != base
    assert _dm(path, "data.tokenizer.vocab_size=320").train_data.store.path != base
    rows = [dict(r) for r in ROWS]
    rows[3]["text"] = "a changed record"
    assert _dm(_write(path, rows)).train_data.store.path != base


def test_datamodule_batches_equal_the_in_memory_encoding(tmp_path: Path) -> None:
    """The store path serves exactly the batches of the former in-memory arrays."""
    path = _write(tmp_path / "d.jsonl", ROWS)
    dm = _dm(path, "data.store_chunk_size=4")
    train, ev = dm.load_splits()
    ref = {}
    for name, records, ids in (("train", train, dm.labels.train), ("eval", ev, dm.labels.eval)):
        sources, targets = model_io(records, dm.text_fields, dm.target_field)
        ref[name] = encode_examples(dm.tokenizer, sources, targets, ids, dm.max_length)
    sampler_state = dm.sampler.state_dict()
    batches = [b for b, _ in zip(dm.train_dataloader(), range(6), strict=False)]
    dm.sampler.load_state_dict(sampler_state)
    for got, idx in zip(batches, iter(dm.sampler), strict=False):
        for key in ("input_ids", "attention_mask", "labels", "domain"):
            np.testing.assert_array_equal(got[key].numpy(), getattr(ref["train"], key)[idx])
    val = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(val["labels"].numpy(), ref["eval"].labels[: len(val["labels"])])
    want = np.bincount(ref["train"].domain, (ref["train"].labels[:, 1:] != -100).sum(1))
    np.testing.assert_array_equal(dm.domain_tokens, want)


def test_streamed_jsonl_equals_the_whole_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    text = "\ufeff" + "\n".join(json.dumps(r) for r in ROWS[:5]) + "\n\n" + json.dumps(ROWS[5])
    path.write_text(text, encoding="utf-8")
    streamed = list(FileSource(str(path), "data.train_path"))
    whole = load_records(str(path))
    assert streamed == whole and [r.origin for r in streamed] == [r.origin for r in whole]


def test_split_indices_from_codes_equal_those_from_names() -> None:
    """The store path splits on int codes; the records path on the strings: same split."""
    rng = np.random.default_rng(3)
    domains = [f"d{int(x)}" for x in rng.integers(0, 4, 97)]
    codes = np.unique(domains, return_inverse=True)[1].astype(np.int32)
    for a, b in zip(
        split_indices(97, 0.2, 5, domains), split_indices(97, 0.2, 5, codes), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert split_indices(97, 0.2, 5, codes)[1].size == sum(
        min(int(n * 0.2 + 0.5), n - 1) for n in np.bincount(codes)
    )
