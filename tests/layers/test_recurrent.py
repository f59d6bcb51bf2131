"""Tests for seqlab/layers/recurrent.py: padding invariance, own cells == fused, state layout."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqlab.layers.recurrent import DirectionBridge, Recurrent
from seqlab.models.interfaces import lengths_to_mask

MODES = ["rnn", "gru", "lstm"]


def pair(mode: str, input_size: int, hidden: int, layers: int, bi: bool, seed: int = 0):
    """(fused, own cells) holding the same weights, in eval mode."""
    torch.manual_seed(seed)
    fused = Recurrent(mode, input_size, hidden, layers, bi, dropout=0.3).eval()
    own = Recurrent(mode, input_size, hidden, layers, bi, dropout=0.3, use_own_cells=True).eval()
    own.load_state_dict(fused.state_dict())
    return fused, own


def padded_batch(lengths: list[int], input_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    mask = lengths_to_mask(torch.tensor(lengths), max(lengths) + 1)  # (B, S), >= 1 pad column
    x = torch.randn(*mask.shape, input_size, generator=gen)  # (B, S, I), garbage at padding
    return x, mask


def initial_state(mode: str, batch: int, layers_dirs: int, hidden: int):
    h = torch.randn(batch, layers_dirs, hidden)
    return (h, torch.randn_like(h)) if mode == "lstm" else h


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_own_cells_equal_fused(mode, bidirectional, layers):
    fused, own = pair(mode, 5, 6, layers, bidirectional)
    x, mask = padded_batch([4, 7, 1, 2], 5)
    hx = initial_state(mode, 4, layers * (2 if bidirectional else 1), 6)
    with torch.no_grad():
        for start in (None, hx):
            out_f, final_f = fused(x, mask, start)
            out_o, final_o = own(x, mask, start)
            torch.testing.assert_close(out_o, out_f, atol=1e-5, rtol=0)
            torch.testing.assert_close(final_o, final_f, atol=1e-5, rtol=0)


@settings(max_examples=20, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    bidirectional=st.booleans(),
    own_cells=st.booleans(),
    lengths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    row=st.integers(0, 3),
)
def test_padding_never_changes_a_real_position(mode, bidirectional, own_cells, lengths, row):
    """A sentence alone gives the outputs and final state it gets inside a padded batch."""
    torch.manual_seed(0)
    layer = Recurrent(mode, 3, 4, 2, bidirectional, use_own_cells=own_cells).eval()
    x, mask = padded_batch(lengths, 3, seed=len(lengths))
    row = row % len(lengths)
    n = lengths[row]
    with torch.no_grad():
        out, final = layer(x, mask)
        alone_out, alone_final = layer(x[row : row + 1, :n], None)  # no padding at all
    torch.testing.assert_close(out[row : row + 1, :n], alone_out, atol=1e-5, rtol=0)
    assert out[row, n:].abs().sum() == 0  # re-padded with zeros
    pick = (
        (lambda s: tuple(p[row : row + 1] for p in s))
        if mode == "lstm"
        else (lambda s: s[row : row + 1])
    )
    torch.testing.assert_close(pick(final), alone_final, atol=1e-5, rtol=0)


@pytest.mark.parametrize("own_cells", [False, True])
def test_final_layout_is_batch_first_layer_major_like_torch(own_cells):
    """final[:, l*D + d] == torch's h_n[l*D + d], and the top layer's directions are the ends of
    the outputs: forward at the last real token, backward at position 0."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, 2, True, use_own_cells=own_cells).eval()
    reference = nn.GRU(3, 4, 2, batch_first=True, bidirectional=True).eval()
    reference.load_state_dict(layer.rnn.state_dict())
    x, mask = padded_batch([3, 5], 3)
    with torch.no_grad():
        out, final = layer(x, mask)  # (B, S, 8), (B, 4, 4)
        _, h_n = reference(x[:1, :3])  # row 0 alone, unpadded: (L*D, 1, H)
    assert final.shape == (2, 4, 4)
    torch.testing.assert_close(final[:1], h_n.transpose(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(final[0, 2], out[0, 2, :4], atol=1e-6, rtol=0)  # top fwd, t = 2
    torch.testing.assert_close(final[0, 3], out[0, 0, 4:], atol=1e-6, rtol=0)  # top bwd, t = 0


def test_state_dict_is_the_fused_modules_and_interchangeable():
    fused, own = pair("lstm", 3, 4, 2, True)
    keys = set(fused.state_dict())
    assert keys == set(own.state_dict())
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l1_reverse", "rnn.bias_ih_l1"} <= keys
    bare = nn.LSTM(3, 4, 2, batch_first=True, bidirectional=True)
    own.rnn.load_state_dict(bare.state_dict())  # a bare torch module's weights load as they are
    x, _ = padded_batch([2, 3], 3)  # no mask: every position is real
    with torch.no_grad():
        torch.testing.assert_close(own(x)[0], bare(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("own_cells", [False, True])
def test_empty_row_keeps_its_initial_state_and_outputs_zeros(own_cells):
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, use_own_cells=own_cells).eval()
    x, mask = padded_batch([3, 2], 3)
    mask[1] = False
    hx = torch.randn(2, 1, 4)
    with torch.no_grad():
        out, final = layer(x, mask, hx)
    assert out[1].abs().sum() == 0
    torch.testing.assert_close(final[1], hx[1])


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    fused, own = pair("gru", 3, 8, 2, False)
    x, mask = padded_batch([4, 4], 3)
    for layer in (fused, own):
        layer.train()
        assert not torch.equal(layer(x, mask)[0], layer(x, mask)[0])  # random masks differ
        layer.eval()
        torch.testing.assert_close(layer(x, mask)[0], layer(x, mask)[0])


def test_bad_masks_are_rejected():
    layer = Recurrent("rnn", 3, 4)
    x = torch.randn(2, 3, 3)
    with pytest.raises(TypeError, match="bool"):
        layer(x, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="right-padded"):
        layer(x, torch.tensor([[False, True, True], [True, True, True]]))
    with pytest.raises(ValueError, match="mode"):
        Recurrent("transformer", 3, 4)


@pytest.mark.parametrize("lstm", [False, True])
def test_direction_bridge_merges_each_layer(lstm):
    torch.manual_seed(0)
    bridge = DirectionBridge(num_layers=2, hidden_size=3, lstm=lstm)
    final = torch.randn(5, 4, 3)  # (B, L*D, H)
    merged = bridge((final, final * 2) if lstm else final)
    h = merged[0] if lstm else merged
    assert h.shape == (5, 2, 3)
    layer1 = torch.cat([final[:, 2], final[:, 3]], dim=-1)  # [fwd; bwd] of layer 1
    torch.testing.assert_close(h[:, 1], torch.tanh(bridge.hidden[1](layer1)))
    if lstm:
        torch.testing.assert_close(merged[1][:, 0], bridge.cell[0](2 * final[:, :2].flatten(1)))
