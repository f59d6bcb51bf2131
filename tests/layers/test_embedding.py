"""Tests for seqlab/layers/embedding.py: scaling, the sinusoid table, offsets, max_len errors."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.errors import SeqlabError
from seqlab.layers.embedding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)


def test_token_embedding_scales_and_zeroes_padding():
    torch.manual_seed(0)
    emb = TokenEmbedding(10, 16)
    ids = torch.tensor([[3, 0, 7]])
    out = emb(ids)
    torch.testing.assert_close(out[0, 0], emb.weight[3] * 4.0)
    assert torch.equal(out[0, 1], torch.zeros(16))
    out.sum().backward()
    assert torch.equal(emb.weight.grad[0], torch.zeros(16))
    unscaled = TokenEmbedding(10, 16, scale=False)
    torch.testing.assert_close(unscaled(ids)[0, 2], unscaled.weight[7])


def test_sinusoidal_table_matches_the_paper_formula():
    pe = SinusoidalPositionalEncoding(d_model=6, max_len=50)
    out = pe(torch.zeros(1, 50, 6))[0]  # (T, H)
    for pos in (0, 1, 17, 49):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert out[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert out[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_odd_d_model():
    pe = SinusoidalPositionalEncoding(d_model=5, max_len=8)
    assert pe.table.shape == (8, 5)
    torch.testing.assert_close(pe.table[:, 4], torch.sin(torch.arange(8.0) * 10000 ** (-4 / 5)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SinusoidalPositionalEncoding(8, max_len=10),
        lambda: LearnedPositionalEmbedding(10, 8),
    ],
)
def test_offset_and_per_row_positions_agree_with_the_full_sequence(make):
    torch.manual_seed(0)
    pe = make().eval()
    x = torch.randn(2, 6, 8)
    full = pe(x)
    torch.testing.assert_close(pe(x[:, 4:5], offset=4), full[:, 4:5])
    torch.testing.assert_close(pe(x[:, 2:], offset=torch.tensor([2, 2])), full[:, 2:])
    shifted = pe(x[:, :1], offset=torch.tensor([0, 3]))  # row 1 at position 3
    torch.testing.assert_close(shifted[1], pe(x[1:2, :1], offset=3)[0])
    assert not torch.allclose(shifted[1], full[1, :1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SinusoidalPositionalEncoding(8, max_len=10),
        lambda: LearnedPositionalEmbedding(10, 8),
    ],
)
def test_position_beyond_max_len_is_a_clear_error(make):
    pe = make()
    pe(torch.zeros(1, 10, 8))
    with pytest.raises(SeqlabError, match="max_len=10"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(SeqlabError, match="position 10"):
        pe(torch.zeros(2, 1, 8), offset=torch.tensor([3, 10]))
    with pytest.raises(SeqlabError, match="position 10"):
        pe(torch.zeros(1, 1, 8), offset=10)
