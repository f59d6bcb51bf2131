"""Tests for seqlab.data.synthetic: each task's target, determinism, ids agreeing with text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.synthetic import FIRST_SYMBOL_ID, synthetic_id_pairs, synthetic_pairs

EXPECTED = {
    "copy": lambda words: words,
    "reverse": lambda words: words[::-1],
    "sort": lambda words: sorted(words, key=lambda w: int(w[1:])),
}


@settings(max_examples=30, deadline=None)
@given(
    task=st.sampled_from(sorted(EXPECTED)),
    seed=st.integers(0, 10**6),
    num_symbols=st.integers(1, 30),
    min_len=st.integers(1, 5),
    extra=st.integers(0, 6),
)
def test_targets_follow_the_task_and_sizes_are_respected(task, seed, num_symbols, min_len, extra):
    pairs = synthetic_pairs(
        task, 25, num_symbols=num_symbols, min_len=min_len, max_len=min_len + extra, seed=seed
    )
    assert len(pairs) == 25
    for src, tgt in pairs:
        words = src.split(" ")
        assert tgt.split(" ") == EXPECTED[task](words)
        assert min_len <= len(words) <= min_len + extra
        assert all(w[0] == "s" and 0 <= int(w[1:]) < num_symbols for w in words)


def test_hand_examples():
    src, tgt = synthetic_pairs("reverse", 1, seed=4)[0]
    assert tgt == " ".join(reversed(src.split()))
    src, tgt = synthetic_pairs("sort", 1, num_symbols=12, min_len=8, max_len=8, seed=1)[0]
    numbers = [int(w[1:]) for w in tgt.split()]
    assert numbers == sorted(int(w[1:]) for w in src.split())


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert synthetic_pairs("copy", 50, seed=3) == synthetic_pairs("copy", 50, seed=3)
    assert synthetic_pairs("copy", 50, seed=3) != synthetic_pairs("copy", 50, seed=4)
    assert synthetic_id_pairs("sort", 50, seed=3) == synthetic_id_pairs("sort", 50, seed=3)


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_id_pairs_are_the_text_pairs_mapped_to_ids(task):
    options = {"num_symbols": 15, "min_len": 2, "max_len": 9, "seed": 11}
    text = synthetic_pairs(task, 40, **options)
    ids = synthetic_id_pairs(task, 40, **options)

    def to_ids(line: str) -> list[int]:
        return [FIRST_SYMBOL_ID + int(w[1:]) for w in line.split()]

    assert ids == [(to_ids(s), to_ids(t)) for s, t in text]
    assert all(FIRST_SYMBOL_ID <= i < FIRST_SYMBOL_ID + 15 for s, _ in ids for i in s)
    shifted = synthetic_id_pairs(task, 40, first_id=100, **options)
    assert shifted[0][0] == [i - FIRST_SYMBOL_ID + 100 for i in ids[0][0]]


def test_unknown_task_lists_the_tasks():
    with pytest.raises(ValueError, match=r"copy.*reverse.*sort"):
        synthetic_pairs("rotate", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options", [{"min_len": 0}, {"min_len": 5, "max_len": 4}, {"num_symbols": 0}, {"n": -1}]
)
def test_impossible_sizes_raise(options):
    n = options.pop("n", 3)
    with pytest.raises(ValueError):
        synthetic_id_pairs("copy", n, **options)


def test_zero_pairs():
    assert synthetic_pairs("reverse", 0) == []
