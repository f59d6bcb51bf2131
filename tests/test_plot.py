"""Attention plots: which weights (cross_attention, TransformerDecoder.attention_weights), PNGs."""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.errors import WriteError
from seqlab.models.interfaces import Encoded, lengths_to_mask
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer
from seqlab.plot import PlotError, cross_attention, plot_attention

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_TRANSFORMER = TransformerConfig(
    d_model=16, num_heads=4, num_encoder_layers=1, num_decoder_layers=2, d_ff=32, dropout=0.0
)
TINY_RNN = RNNSeq2SeqConfig(embed_dim=8, hidden_size=12, num_layers=1, dropout=0.0)


def _transformer():
    torch.manual_seed(0)
    return build_transformer(TINY_TRANSFORMER, 20, 20).eval()


def _encoded(model, lengths: list[int]) -> Encoded:
    mask = lengths_to_mask(torch.tensor(lengths))  # (B, S)
    src = torch.randint(4, 20, mask.shape).masked_fill(~mask, 0)  # (B, S)
    return model.encode(src, mask)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    tgt_len=st.integers(1, 5),
    layer=st.sampled_from([0, 1, -1]),
    head=st.sampled_from([None, 0, 3]),
)
def test_transformer_rows_sum_to_one_over_real_source(lengths, tgt_len, layer, head):
    model = _transformer()
    encoded = _encoded(model, lengths)
    tgt_in = torch.randint(4, 20, (len(lengths), tgt_len))  # (B, T)
    with torch.no_grad():
        weights = model.decoder.attention_weights(tgt_in, encoded, layer=layer, head=head)
    assert weights.shape == (len(lengths), tgt_len, max(lengths))
    real = encoded.mask[:, None, :].expand_as(weights)  # (B, T, S)
    assert torch.all(weights[~real] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(lengths), tgt_len))


def test_transformer_head_mean_and_layer_indexing():
    model = _transformer()
    encoded, tgt_in = _encoded(model, [5, 3]), torch.randint(4, 20, (2, 4))
    weights = model.decoder.attention_weights
    with torch.no_grad():
        heads = torch.stack([weights(tgt_in, encoded, 1, h) for h in range(4)], dim=1)
        torch.testing.assert_close(weights(tgt_in, encoded, 1, None), heads.mean(dim=1))
        torch.testing.assert_close(weights(tgt_in, encoded, -1), weights(tgt_in, encoded, 1))
        assert not torch.allclose(weights(tgt_in, encoded, 0), weights(tgt_in, encoded, 1))
    for layer, head in [(2, None), (-3, None), (0, 4)]:
        with pytest.raises(IndexError):
            weights(tgt_in, encoded, layer, head)


def test_transformer_weights_are_those_of_the_normal_forward(monkeypatch):
    """Reference: softmax(q k^T / sqrt(d)) from the very query and keys `forward` attends with."""
    model = _transformer()
    encoded, tgt_in = _encoded(model, [6, 2]), torch.randint(4, 20, (2, 5))
    seen = {}
    for index, layer in enumerate(model.decoder.stack.layers):
        attend = layer.cross_attn.attend

        def spy(h, k, v, key_mask=None, *args, _attend=attend, _index=index, **kwargs):
            seen[_index] = (h, k, key_mask)
            return _attend(h, k, v, key_mask, *args, **kwargs)

        monkeypatch.setattr(layer.cross_attn, "attend", spy)
    with torch.no_grad():
        logits = model.decoder(tgt_in, encoded)
        for index, (h, k, key_mask) in list(seen.items()):
            attn = model.decoder.stack.layers[index].cross_attn
            q = attn._split_heads(attn.q_proj(h))  # (B, h, T, d)
            scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, h, T, S)
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
            expected = torch.softmax(scores, dim=-1)  # (B, h, T, S)
            for head in range(attn.num_heads):
                got = model.decoder.attention_weights(tgt_in, encoded, index, head)
                torch.testing.assert_close(got, expected[:, head])
        torch.testing.assert_close(model.decoder(tgt_in, encoded), logits)  # read-only
    assert sorted(seen) == [0, 1]


def test_cross_attention_rnn_shape_rows_and_mode_restored():
    torch.manual_seed(0)
    model = build_rnn_seq2seq(TINY_RNN, 20, 20)  # left in training mode on purpose
    weights = cross_attention(model, [5, 6, 7, 8], [9, 10])
    assert weights.shape == (3, 5)  # (outputs + eos, source + eos)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert model.training
    with torch.no_grad():
        src = torch.tensor([[5, 6, 7, 8, 3]])
        encoded = model.eval().encode(src, torch.ones_like(src, dtype=torch.bool))
        direct = model.decoder.attention_weights(torch.tensor([[2, 9, 10]]), encoded)
    torch.testing.assert_close(weights, direct[0])


def test_cross_attention_transformer_picks_layer_and_head():
    model = _transformer()
    mean_last = cross_attention(model, [5, 6, 7], [8, 9, 10, 11])
    assert mean_last.shape == (5, 4)
    heads = torch.stack([cross_attention(model, [5, 6, 7], [8, 9, 10, 11], 1, h) for h in range(4)])
    torch.testing.assert_close(mean_last, heads.mean(0))
    first = cross_attention(model, [5, 6, 7], [8, 9, 10, 11], layer=0, head=2)
    torch.testing.assert_close(first.sum(-1), torch.ones(5))


def test_cross_attention_refuses_what_cannot_be_plotted():
    torch.manual_seed(0)
    no_attention = build_rnn_seq2seq(dataclasses.replace(TINY_RNN, attention=False), 20, 20)
    with pytest.raises(PlotError, match="no attention"):
        cross_attention(no_attention, [5], [6])
    with pytest.raises(PlotError, match="single attention"):
        cross_attention(build_rnn_seq2seq(TINY_RNN, 20, 20), [5], [6], layer=0)
    with pytest.raises(PlotError, match="2 decoder layers, 4 heads"):
        cross_attention(_transformer(), [5], [6], layer=2)
    with pytest.raises(PlotError, match="out of range"):
        cross_attention(_transformer(), [5], [6], head=-5)


def test_plot_attention_writes_a_png_atomically(tmp_path):
    weights = torch.softmax(torch.randn(1, 3, 4), dim=-1)  # (1, T, S)
    target = plot_attention(
        weights, ["a", "b", "c", "<eos>"], ["c", "b", "<eos>"], tmp_path / "a.png"
    )
    assert target.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left behind
    with pytest.raises(PlotError, match="do not match"):
        plot_attention(weights, ["a", "b"], ["c", "b", "<eos>"], tmp_path / "b.png")
    with pytest.raises(WriteError, match=r"c.png: cannot be written: no folder .*no$"):
        plot_attention(weights[0], list("abcd"), list("xyz"), tmp_path / "no" / "c.png")
    assert not (tmp_path / "b.png").exists()


def test_missing_matplotlib_is_a_one_line_plot_error(tmp_path, monkeypatch):
    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(PlotError, match=r"seqlab\[plot\]") as info:
        plot_attention(torch.ones(1, 1), ["a"], ["b"], tmp_path / "x.png")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.png").exists()
