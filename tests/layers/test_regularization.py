"""AWD-LSTM's regularisers: what each drops, that eval mode drops nothing, and parity of the
layer-by-layer stack with torch's fused multi-layer LSTM."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from seqlab.layers.recurrent import Recurrent
from seqlab.layers.regularization import (
    LockedDropout,
    VariationalRecurrent,
    activation_penalty,
    embedding_dropout,
    weight_drop,
)


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    out = drop(torch.ones(8, 6, 32))
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same mask at every step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert 0.3 < (out == 0).float().mean() < 0.7
    drop.eval()
    x = torch.randn(2, 3, 4)
    assert drop(x) is x


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    embedding = nn.Embedding(40, 8)
    ids = torch.arange(40).repeat(2, 1)  # every word twice
    out = embedding_dropout(embedding, ids, 0.5, training=True)  # (2, 40, 8)
    dropped = (out == 0).all(dim=-1)  # (2, 40)
    assert torch.equal(dropped[0], dropped[1]) and 5 < int(dropped[0].sum()) < 35
    kept = ~dropped[0]
    torch.testing.assert_close(out[0, kept], embedding.weight[kept] * 2)
    torch.testing.assert_close(embedding_dropout(embedding, ids, 0.5, False), embedding(ids))


def test_weight_drop_drops_the_recurrent_weights_once_per_forward():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, batch_first=True)
    plain = nn.LSTM(6, 8, batch_first=True)
    plain.load_state_dict(lstm.state_dict())
    weight_drop(lstm, 0.5)
    assert "parametrizations.weight_hh_l0.original" in lstm.state_dict()
    x = torch.randn(3, 5, 6)
    with parametrize.cached():
        dropped = lstm.weight_hh_l0  # the matrix this forward uses
        out, _ = lstm(x)
    assert 0.3 < (dropped == 0).float().mean() < 0.7
    with torch.no_grad():
        plain.weight_hh_l0.copy_(dropped)
    torch.testing.assert_close(out, plain(x)[0])
    out.sum().backward()  # the gradient reaches the undropped weight, through the mask
    grad = lstm.parametrizations.weight_hh_l0.original.grad
    assert bool((grad[dropped == 0] == 0).all()) and grad.abs().sum() > 0  # dropped: no gradient
    lstm.eval()
    plain.load_state_dict({k.replace("parametrizations.", "").replace(".original", ""): v
                           for k, v in lstm.state_dict().items()})  # fmt: skip
    torch.testing.assert_close(lstm(x)[0], plain(x)[0])  # eval: the weights themselves


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_variational_stack_without_dropout_equals_the_fused_stack(mode):
    torch.manual_seed(0)
    stack = VariationalRecurrent(mode, 6, 8, num_layers=3, dropout=0.0)
    fused = Recurrent(mode, 6, 8, num_layers=3)
    with torch.no_grad():
        for index, layer in enumerate(stack.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fused.rnn, f"{name}_l{index}").copy_(getattr(layer.rnn, f"{name}_l0"))
    x = torch.randn(2, 5, 6)
    h0 = torch.randn(2, 3, 8)
    hx = (h0, torch.randn(2, 3, 8)) if mode == "lstm" else h0
    got, got_final = stack(x, None, hx)
    want, want_final = fused(x, None, hx)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_final if mode == "lstm" else [got_final],
                    want_final if mode == "lstm" else [want_final]):  # fmt: skip
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no padding mask"):
        stack(x, torch.ones(2, 5, dtype=torch.bool))


def test_activation_penalty_by_hand():
    raw = torch.tensor([[[1.0], [3.0], [2.0]]])  # (1, 3, 1)
    dropped = torch.tensor([[[2.0], [0.0], [4.0]]])
    ar = (4 + 0 + 16) / 3
    tar = ((3 - 1) ** 2 + (2 - 3) ** 2) / 2
    assert activation_penalty(dropped, raw, 2.0, 1.0).item() == pytest.approx(2 * ar + tar)
    assert activation_penalty(dropped, raw, 0.0, 0.0).item() == 0.0
