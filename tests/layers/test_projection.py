"""Tests for seqlab/layers/projection.py: its decoding copy never changes what nn.Linear gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.layers.projection import OutputProjection


def reference(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 16), (1, 16), (3, 4, 16), (64, 16)])
def test_decoding_path_equals_linear(bias, shape):
    torch.manual_seed(0)
    layer = OutputProjection(16, 300, bias=bias).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = layer(x)
        assert layer._transposed is not None  # the decoding path ran
    assert out.shape == (*shape[:-1], 300)
    torch.testing.assert_close(out, reference(layer, x))


def test_copy_follows_every_kind_of_weight_change():
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 8)
    layer = OutputProjection(8, 50, bias=False)
    layer.weight = embedding.weight  # tied, as the models do
    layer.eval()
    x = torch.randn(3, 8)

    def check() -> None:
        with torch.no_grad():
            torch.testing.assert_close(layer(x), reference(layer, x))

    check()
    with torch.no_grad():
        embedding.weight.mul_(-2.0)  # in place, through the tied embedding
    check()
    optimizer = torch.optim.SGD(embedding.parameters(), lr=1.0)
    embedding(torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    check()
    layer.load_state_dict({"weight": torch.randn(50, 8)})
    check()
    layer.weight = nn.Parameter(torch.randn(50, 8))  # a new tensor
    check()
    layer.double()
    x = x.double()
    check()


def test_gradients_flow_when_enabled_even_in_eval_mode():
    layer = OutputProjection(8, 20).eval()
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer._transposed is None


def test_checkpoints_are_those_of_nn_linear():
    plain = nn.Linear(8, 20)
    layer = OutputProjection(8, 20).eval()
    with torch.no_grad():
        layer(torch.randn(2, 8))
    assert layer.state_dict().keys() == plain.state_dict().keys()
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x))
    layer.train()
    assert layer._transposed is None
