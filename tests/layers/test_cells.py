"""Tests for seqlab/layers/cells.py: our cells equal torch.nn's after load_state_dict."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqlab.layers.cells import GRUCell, LSTMCell, RNNCell

PAIRS = {
    "rnn_tanh": (lambda i, h, b: RNNCell(i, h, b), lambda i, h, b: nn.RNNCell(i, h, b)),
    "rnn_relu": (
        lambda i, h, b: RNNCell(i, h, b, nonlinearity="relu"),
        lambda i, h, b: nn.RNNCell(i, h, b, nonlinearity="relu"),
    ),
    "gru": (GRUCell, nn.GRUCell),
    "lstm": (LSTMCell, nn.LSTMCell),
}


def make_pair(kind: str, input_size: int, hidden_size: int, bias: bool, seed: int):
    """(ours, theirs) with theirs' random weights loaded into ours."""
    ours_cls, theirs_cls = PAIRS[kind]
    torch.manual_seed(seed)
    theirs = theirs_cls(input_size, hidden_size, bias)
    ours = ours_cls(input_size, hidden_size, bias)
    ours.load_state_dict(theirs.state_dict())  # strict: names and shapes must match
    return ours, theirs


def random_state(kind: str, shape: tuple[int, ...], gen: torch.Generator):
    h = torch.randn(*shape, generator=gen)
    return (h, torch.randn(*shape, generator=gen)) if kind == "lstm" else h


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(PAIRS)),
    input_size=st.integers(1, 9),
    hidden_size=st.integers(1, 9),
    batch=st.integers(1, 5),
    bias=st.booleans(),
    with_state=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batched_parity_with_torch(kind, input_size, hidden_size, batch, bias, with_state, seed):
    ours, theirs = make_pair(kind, input_size, hidden_size, bias, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, input_size, generator=gen)
    hx = random_state(kind, (batch, hidden_size), gen) if with_state else None
    torch.testing.assert_close(ours(x, hx), theirs(x, hx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_unbatched_input_and_gradients_match(kind):
    ours, theirs = make_pair(kind, 4, 6, True, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, generator=gen)  # (I,) unbatched
    hx = random_state(kind, (6,), gen)
    out_ours, out_theirs = ours(x, hx), theirs(x, hx)
    torch.testing.assert_close(out_ours, out_theirs, atol=1e-5, rtol=0)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    assert first(out_ours).shape == (6,)
    first(out_ours).sum().backward()
    first(out_theirs).sum().backward()
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, dict(theirs.named_parameters())[name].grad)


@pytest.mark.parametrize("cls", [RNNCell, GRUCell, LSTMCell])
def test_init_is_uniform_within_one_over_sqrt_hidden(cls):
    torch.manual_seed(0)
    cell = cls(50, 16)
    bound = 1 / math.sqrt(16)
    for name, param in cell.named_parameters():
        assert param.abs().max() <= bound, name
        assert param.abs().max() > 0.9 * bound, name  # spread over the range, not zeros
    assert cell.weight_ih.shape == (cell.weight_hh.shape[0], 50)


def test_bad_input_rank_is_rejected():
    with pytest.raises(ValueError, match="expected input"):
        GRUCell(3, 4)(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(3, 4, nonlinearity="sigmoid")
