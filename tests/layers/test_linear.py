"""Tests for seqlab/layers/linear.py: the packed inference copy never changes what nn.Linear gives,
follows every change of the weight, and is used only where it may be (eval, no grad, CPU float32
outside autocast). Every test runs on both packed paths: oneDNN's and the transposed fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.layers import linear
from seqlab.layers.linear import PackedLinear, fused_linears, packing


@pytest.fixture(params=["onednn", "transpose"])
def path(request, monkeypatch):
    """Run the test on oneDNN's packed weight, and again on the (in, out) transposed copy."""
    if request.param == "onednn":
        if not linear.onednn_packing_available():
            pytest.skip("this PyTorch build has no oneDNN packed linear")
    else:
        monkeypatch.setattr(linear, "onednn_packing_available", lambda: False)
    return request.param


def reference(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def assert_packed(layer: PackedLinear, path: str) -> None:
    assert layer._packed is not None, "the packed path did not run"
    assert layer._packed[1].is_mkldnn == (path == "onednn")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 16), (1, 16), (3, 4, 16), (64, 16), (0, 16)])
def test_packed_path_equals_linear(path, bias, shape):
    torch.manual_seed(0)
    layer = PackedLinear(16, 300, bias=bias).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = layer(x)
    assert_packed(layer, path)
    assert out.shape == (*shape[:-1], 300)
    torch.testing.assert_close(out, reference(layer, x))


def test_non_contiguous_input_and_inference_mode(path):
    torch.manual_seed(0)
    layer = PackedLinear(16, 24).eval()
    x = torch.randn(16, 6).t()  # (6, 16), column-major
    with torch.inference_mode():
        out = layer(x)
    assert_packed(layer, path)
    torch.testing.assert_close(out, reference(layer, x))
    with torch.no_grad():  # a copy made under inference_mode serves outside it
        torch.testing.assert_close(layer(x), reference(layer, x))


def test_copy_follows_every_kind_of_weight_change(path):
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 8)
    layer = PackedLinear(8, 50, bias=False)
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
    layer.double()  # float64 is not packed: nn.Linear's own path
    x = x.double()
    check()


def test_gradients_flow_when_enabled_even_in_eval_mode(path):
    layer = PackedLinear(8, 20).eval()
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer._packed is None


def test_autocast_keeps_nn_linear_semantics(path):
    torch.manual_seed(0)
    layer = PackedLinear(8, 20).eval()
    x = torch.randn(3, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        expected = reference(layer, x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert layer._packed is None
    torch.testing.assert_close(out, expected)


def test_packing_can_be_switched_off(path):
    layer = PackedLinear(8, 20).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        with packing(False):
            off = layer(x)
        assert layer._packed is None
        on = layer(x)
    assert_packed(layer, path)
    torch.testing.assert_close(on, off)


def test_checkpoints_are_those_of_nn_linear(path):
    plain = nn.Linear(8, 20)
    layer = PackedLinear(8, 20).eval()
    with torch.no_grad():
        layer(torch.randn(2, 8))
    assert layer.state_dict().keys() == plain.state_dict().keys()
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x))
    layer.train()
    assert layer._packed is None


def test_small_weights_are_not_packed(monkeypatch):
    monkeypatch.setattr(linear, "MIN_PACKED_SIZE", 16384)  # the default (the suite packs all)
    small, large = PackedLinear(256, 1).eval(), PackedLinear(256, 64).eval()
    x = torch.randn(7, 256)
    with torch.no_grad():
        torch.testing.assert_close(small(x), reference(small, x))
        torch.testing.assert_close(large(x), reference(large, x))
    assert small._packed is None and large._packed is not None


def test_same_initialisation_as_nn_linear():
    torch.manual_seed(3)
    plain = nn.Linear(8, 20)
    torch.manual_seed(3)
    layer = PackedLinear(8, 20)
    torch.testing.assert_close(layer.weight, plain.weight, rtol=0, atol=0)
    torch.testing.assert_close(layer.bias, plain.bias, rtol=0, atol=0)


# -- fused_linears ------------------------------------------------------------------------------


def _three(bias: bool) -> tuple[PackedLinear, ...]:
    torch.manual_seed(0)
    layers = (PackedLinear(12, 12, bias=bias), PackedLinear(12, 8), PackedLinear(12, 12, bias=bias))
    return tuple(layer.eval() for layer in layers)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 1, 12), (2, 7, 12), (1, 12)])
def test_fused_linears_equal_each_layer(path, bias, shape):
    layers = _three(bias)
    x = torch.randn(*shape)
    with torch.no_grad():
        outs = fused_linears(layers, x)
    assert layers[0]._stacked is not None, "the fused path did not run"
    assert layers[0]._stacked[1].is_mkldnn == (path == "onednn")
    for layer, out in zip(layers, outs, strict=True):
        torch.testing.assert_close(out, reference(layer, x))


def test_fused_linears_follow_a_change_of_any_weight(path):
    layers = _three(True)
    x = torch.randn(4, 12)

    def check() -> None:
        with torch.no_grad():
            for layer, out in zip(layers, fused_linears(layers, x), strict=True):
                torch.testing.assert_close(out, reference(layer, x))

    check()
    for layer in layers:
        with torch.no_grad():
            layer.weight.add_(1.0)  # in place
            layer.bias.mul_(3.0)
        check()
    layers[1].weight = nn.Parameter(torch.randn(8, 12))  # a new tensor
    check()


def test_fused_linears_run_each_layer_when_not_packing(path):
    layers = _three(True)
    x = torch.randn(3, 12)
    outs = fused_linears(layers, x)  # gradients on: plain nn.Linear, differentiable
    sum(out.sum() for out in outs).backward()
    assert layers[0]._stacked is None
    assert all(layer.weight.grad is not None for layer in layers)
    layers[0].train()
    with torch.no_grad():
        fused_linears(layers, x)
    assert layers[0]._stacked is None  # one layer in training mode: no packing


def test_moves_and_casts_drop_the_packed_copies(path):
    """A model moved or cast after CPU inference must not keep copies of its old weights."""
    model = nn.Sequential(PackedLinear(12, 20), PackedLinear(20, 6)).eval()
    layers = _three(True)
    x = torch.randn(3, 12)
    with torch.no_grad():
        model(x)
        fused_linears(layers, x)
    assert all(layer._packed is not None for layer in model) and layers[0]._stacked is not None
    model.double()  # through the parent: every child's _apply runs
    nn.ModuleList(layers).to(torch.float64)
    assert all(layer._packed is None for layer in model) and layers[0]._stacked is None
    with torch.no_grad():  # float64 runs as nn.Linear
        x = x.double()
        torch.testing.assert_close(model(x), reference(model[1], reference(model[0], x)))
