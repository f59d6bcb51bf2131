"""`record_batches` and `encode_dataset`: streamed reads give a dataset's rows, encoding is cached
and sharded without changing a single id."""

from __future__ import annotations

from collections import Counter

import datasets
import numpy as np
import pyarrow as pa
import pytest

from seqlab.data import arrow_stream
from seqlab.data import dataset as dataset_module
from seqlab.data.arrow_stream import record_batches
from seqlab.data.dataset import encode_dataset, text_dataset
from seqlab.data.tokenize import WordTokenizer
from seqlab.data.vocab import Vocab

ROWS = 25_000  # more than one 10,000-row record batch


def _rows(n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        words = rng.integers(0, 50, size=int(rng.integers(1, 8)))
        yield {"src": f"row{i} " + " ".join(f"w{w}" for w in words), "tgt": f"t{i}"}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> datasets.Dataset:
    """A file-backed text table of several record batches, as `text_dataset` writes it."""
    return text_dataset(_rows, {"n": ROWS}, "arrow-stream-test", tmp_path_factory.mktemp("ds"))


def _streamed(ds: datasets.Dataset, columns: list[str], start=0, stop=None) -> list:
    batches = list(record_batches(ds, columns, start, stop))
    return pa.Table.from_batches(batches).to_pylist() if batches else []


def _mapped(ds: datasets.Dataset, columns: list[str], start=0, stop=None) -> list:
    stop = len(ds) if stop is None else min(stop, len(ds))
    return ds.select_columns(columns).select(range(start, stop)).to_list()


@pytest.fixture
def no_mapped_reads(monkeypatch):
    """Fail if a read falls back to the memory map."""

    def refuse(*args, **kwargs):
        raise AssertionError("read through the memory map")

    monkeypatch.setattr(arrow_stream, "_mapped_batches", refuse)


def test_the_rows_of_a_table_and_of_its_ranges(table, no_mapped_reads):
    assert len(table.data.to_batches()) == 3  # 10,000-row record batches
    assert _streamed(table, ["src", "tgt"]) == _mapped(table, ["src", "tgt"])
    for start, stop in [(0, 1), (9_999, 10_001), (12_345, 24_999), (24_999, None), (30, 30)]:
        assert _streamed(table, ["tgt"], start, stop) == _mapped(table, ["tgt"], start, stop)


def test_the_rows_of_an_ascending_selection(table, no_mapped_reads):
    rows = np.sort(np.random.default_rng(1).choice(ROWS, size=7_000, replace=False))
    held = table.select(rows)
    assert _streamed(held, ["src"]) == _mapped(held, ["src"])
    assert _streamed(held, ["src"], 1_000, 5_000) == _mapped(held, ["src"], 1_000, 5_000)


def test_anything_else_is_read_through_the_map_with_the_same_rows(table):
    shuffled = table.select([20_000, 3, 15_000, 3])
    assert _streamed(shuffled, ["tgt"]) == [{"tgt": t} for t in ["t20000", "t3", "t15000", "t3"]]
    in_memory = datasets.Dataset.from_dict({"src": ["a", "b", "c"]})
    assert _streamed(in_memory, ["src"], 1) == [{"src": "b"}, {"src": "c"}]
    renamed = table.rename_column("tgt", "target")  # a column changed after loading
    assert _streamed(renamed, ["target"], 0, 2) == [{"target": "t0"}, {"target": "t1"}]


def _sides():
    tokenizer = WordTokenizer()
    counts = Counter(w for i in range(ROWS) for w in (f"w{i % 50}", f"row{i}"))
    vocab = Vocab.build(counts, min_freq=1, max_size=None)
    return {"src": ("src_ids", tokenizer, vocab)}


def test_encoding_in_shards_equals_one_process_and_is_cached(table, tmp_path, monkeypatch):
    held = table.select(np.arange(0, ROWS, 3))  # a hold-out: rows through an index mapping
    one = encode_dataset(held, _sides(), tmp_path / "one")
    assert one.features["src_ids"] == datasets.List(datasets.Value("int32"))
    assert one.column_names == ["src", "tgt", "src_ids"]
    assert one["src"] == held["src"] and one["tgt"] == held["tgt"]
    tokenizer, vocab = _sides()["src"][1:]
    assert one["src_ids"][:50] == [vocab.encode(tokenizer.tokenize(t)) for t in held["src"][:50]]
    two = encode_dataset(held, _sides(), tmp_path / "two", num_proc=2)
    assert len(list((tmp_path / "two" / "encoded").glob("*.arrow"))) == 2
    assert two.to_list() == one.to_list()
    assert two._fingerprint == one._fingerprint

    def refuse(*args):
        raise AssertionError("encoded again")

    monkeypatch.setattr(dataset_module, "_write_encoded", refuse)
    assert encode_dataset(held, _sides(), tmp_path / "one").to_list() == one.to_list()


def test_an_interrupted_encoding_leaves_nothing_a_rerun_would_load(table, tmp_path, monkeypatch):
    real, calls = dataset_module._encode_batch, []

    def fail_on_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(dataset_module, "_encode_batch", fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(table, _sides(), tmp_path)
    assert list((tmp_path / "encoded").iterdir()) == []
    monkeypatch.setattr(dataset_module, "_encode_batch", real)
    assert len(encode_dataset(table, _sides(), tmp_path)) == ROWS
