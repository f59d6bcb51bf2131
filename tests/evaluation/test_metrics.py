"""perplexity, accuracy and MeanAccumulator."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqlab.evaluation.metrics import MeanAccumulator, accuracy, perplexity


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    assert perplexity(10 * math.log(50), 10) == pytest.approx(50.0)
    assert perplexity(0.0, 3) == 1.0


def test_perplexity_overflow_and_empty():
    assert perplexity(1e6, 1) == float("inf")
    with pytest.raises(ValueError, match="n_tokens=0"):
        perplexity(1.0, 0)


def test_accuracy_with_and_without_mask():
    pred = torch.tensor([[1, 2, 3], [4, 5, 6]])
    gold = torch.tensor([[1, 0, 3], [4, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert accuracy(pred, gold) == pytest.approx(3 / 6)
    assert accuracy(pred, gold, mask) == pytest.approx(3 / 4)  # padding ignored
    logits = torch.nn.functional.one_hot(pred, 7).float()  # (B, T, V): argmax is `pred`
    assert accuracy(logits, gold, mask) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="no positions"):
        accuracy(pred, gold, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy(pred[:, :2], gold)


@given(
    st.lists(st.tuples(st.floats(-1e3, 1e3), st.integers(1, 50)), min_size=1, max_size=20),
    st.integers(0, 20),
)
def test_streaming_and_merged_means_equal_the_batch_mean(pairs, split):
    whole = MeanAccumulator()
    for s, c in pairs:
        whole.add(s, c)
    left, right = MeanAccumulator(), MeanAccumulator()
    for s, c in pairs[:split]:
        left.add(s, c)
    for s, c in pairs[split:]:
        right.add(s, c)
    expected = sum(s for s, _ in pairs) / sum(c for _, c in pairs)
    assert whole.mean == pytest.approx(expected, abs=1e-9)
    assert left.merge(right).mean == pytest.approx(expected, abs=1e-9)
    assert left.count == whole.count


def test_empty_accumulator_has_no_mean():
    with pytest.raises(ValueError, match="no items"):
        _ = MeanAccumulator().mean
