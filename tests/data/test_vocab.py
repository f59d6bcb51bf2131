"""Tests of seqlab/data/vocab.py: fixed specials, building from counts, encode/decode, save/load."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqlab.data.vocab import SPECIALS, Vocab
from seqlab.errors import ConfigError, DataError, SeqlabError

COUNTS = Counter({"the": 10, "a": 10, "dog": 5, "cat": 5, "runs": 2, "sits": 1, "rare": 1})


def test_specials_have_fixed_ids():
    vocab = Vocab.build(COUNTS)
    assert vocab.tokens[:7] == SPECIALS
    ids = (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id)
    assert ids == (0, 1, 2, 3)
    assert (vocab.mask_id, vocab.cls_id, vocab.sep_id) == (4, 5, 6)
    for i, special in enumerate(SPECIALS):
        assert vocab.token_to_id(special) == i
        assert vocab.id_to_token(i) == special


def test_build_orders_by_count_then_token():
    vocab = Vocab.build(COUNTS)
    assert vocab.tokens[7:] == ("a", "the", "cat", "dog", "runs", "rare", "sits")
    assert len(vocab) == 14


def test_build_min_freq_and_max_size():
    assert Vocab.build(COUNTS, min_freq=2).tokens[7:] == ("a", "the", "cat", "dog", "runs")
    small = Vocab.build(COUNTS, max_size=10)
    assert len(small) == 10
    assert small.tokens[7:] == ("a", "the", "cat")
    assert len(Vocab.build(COUNTS, max_size=7)) == 7
    assert len(Vocab.build(COUNTS, max_size=1000)) == 14


def test_build_rejects_impossible_settings():
    with pytest.raises(ConfigError, match="max_vocab=5"):
        Vocab.build(COUNTS, max_size=5)
    with pytest.raises(ConfigError, match="min_freq"):
        Vocab.build(COUNTS, min_freq=0)


def test_build_does_not_duplicate_special_strings():
    vocab = Vocab.build(Counter({"<unk>": 50, "<pad>": 3, "word": 2}))
    assert vocab.tokens == (*SPECIALS, "word")


@given(st.dictionaries(st.text(min_size=1, max_size=4), st.integers(1, 5), max_size=30))
def test_build_is_independent_of_insertion_order(counts):
    items = list(counts.items())
    random.Random(0).shuffle(items)
    assert Vocab.build(dict(items)) == Vocab.build(counts)
    # every kept token that is not a special appears exactly once
    built = Vocab.build(counts)
    assert len(set(built.tokens)) == len(built)
    assert set(built.tokens) == set(SPECIALS) | set(counts)


def test_constructor_requires_specials_first():
    with pytest.raises(DataError, match="specials"):
        Vocab(["hello", *SPECIALS])
    with pytest.raises(DataError, match="specials"):
        Vocab(SPECIALS[:5])
    swapped = list(SPECIALS)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(SeqlabError, match="<unk>"):
        Vocab(swapped)


def test_constructor_names_a_duplicate_token():
    with pytest.raises(DataError, match="'dog'"):
        Vocab([*SPECIALS, "dog", "cat", "dog"])


def test_encode_maps_unknown_to_unk_and_adds_nothing():
    vocab = Vocab.build(COUNTS)
    ids = vocab.encode(["the", "zebra", "dog"])
    assert ids == [vocab.token_to_id("the"), vocab.unk_id, vocab.token_to_id("dog")]
    assert vocab.encode([]) == []
    assert "zebra" not in vocab and "dog" in vocab


@given(st.lists(st.sampled_from(sorted(COUNTS)), max_size=20))
def test_decode_inverts_encode(tokens):
    vocab = Vocab.build(COUNTS)
    assert vocab.decode(vocab.encode(tokens)) == tokens


def test_decode_strips_specials_and_stops_at_eos():
    vocab = Vocab.build(COUNTS)
    the, dog = vocab.token_to_id("the"), vocab.token_to_id("dog")
    ids = [vocab.bos_id, the, vocab.unk_id, dog, vocab.eos_id, the, vocab.pad_id]
    assert vocab.decode(ids) == ["the", "<unk>", "dog"]
    assert vocab.decode(ids, strip_special=False) == [
        "<bos>", "the", "<unk>", "dog", "<eos>", "the", "<pad>"
    ]  # fmt: skip
    assert vocab.decode([the, vocab.pad_id, dog, vocab.pad_id]) == ["the", "dog"]


def test_decode_accepts_tensors():
    vocab = Vocab.build(COUNTS)
    ids = torch.tensor([*vocab.encode(["a", "cat", "runs"]), vocab.eos_id, vocab.pad_id])
    assert vocab.decode(ids) == ["a", "cat", "runs"]


def test_id_to_token_out_of_range():
    vocab = Vocab.build(COUNTS)
    with pytest.raises(IndexError):
        vocab.id_to_token(len(vocab))
    with pytest.raises(IndexError):
        vocab.id_to_token(-1)


def test_equality_is_by_tokens():
    assert Vocab.build(COUNTS) == Vocab(list(Vocab.build(COUNTS).tokens))
    assert Vocab.build(COUNTS) != Vocab.build(COUNTS, max_size=8)
    assert Vocab.build(COUNTS) != list(Vocab.build(COUNTS).tokens)


def test_save_load_round_trip(tmp_path):
    vocab = Vocab.build(Counter({"Straße": 3, "naïve": 2, "日本": 1, "x y": 1}))
    path = tmp_path / "sub" / "v.json"
    vocab.save(path)
    assert Vocab.load(path) == vocab
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload["format"] == "seqlab-vocab" and payload["version"] == 1
    assert payload["tokens"] == list(vocab.tokens)
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.json"]  # no temp file left


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "v.json"
    Vocab.build(COUNTS).save(path)
    Vocab.build(COUNTS, max_size=8).save(path)
    assert len(Vocab.load(path)) == 8


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "seqlab-vocab", "version": 1, "tokens": ["<pad>"', "not a JSON"),
        (b"\xff\xfe garbage", "not a JSON"),
        ('["<pad>", "<unk>"]', "not a seqlab-vocab"),
        ('{"format": "other", "version": 1, "tokens": []}', "not a seqlab-vocab"),
        ('{"format": "seqlab-vocab", "version": 9, "tokens": []}', "version 9"),
        ('{"format": "seqlab-vocab", "version": 1, "tokens": ["a"]}', "specials"),
    ],
)
def test_load_rejects_bad_files_naming_them(tmp_path, content, message):
    path = tmp_path / "broken.vocab.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        Vocab.load(path)
    assert "broken.vocab.json" in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.json"):
        Vocab.load(tmp_path / "nothere.json")
