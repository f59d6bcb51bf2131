"""Tests for seqlab/layers/projection.py: the decoding copy never changes what nn.Linear gives;
the adaptive softmax equals torch's and also runs under bf16 autocast."""

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


# -- AdaptiveSoftmax ----------------------------------------------------------------------------


def _adaptive_pair():
    from seqlab.layers.projection import AdaptiveSoftmax

    torch.manual_seed(0)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 50, [5, 20], div_value=2.0)
    ours = AdaptiveSoftmax(16, 50, [5, 20], div_value=2.0)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_adaptive_softmax_equals_torch_output_loss_and_gradients():
    ref, ours = _adaptive_pair()
    hidden = torch.randn(40, 16, requires_grad=True)
    target = torch.cat([torch.arange(50), torch.tensor([0, 4, 5, 19, 20, 49])])[:40]
    target = target[torch.randperm(40)]  # head, both clusters, every boundary
    a, b = ref(hidden, target), ours(hidden, target)
    torch.testing.assert_close(b.output, a.output)
    torch.testing.assert_close(b.loss, a.loss)
    grads_a = torch.autograd.grad(a.loss, [hidden, *ref.parameters()])
    grads_b = torch.autograd.grad(b.loss, [hidden, *ours.parameters()])
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(gb, ga)
    torch.testing.assert_close(ours.log_prob(hidden), ref.log_prob(hidden))
    torch.testing.assert_close(ours.predict(hidden), ref.predict(hidden))
    # unbatched input, as torch accepts it
    torch.testing.assert_close(ours(hidden[0], target[0]).output, a.output[0])


def test_adaptive_softmax_runs_under_bf16_autocast_in_float32_outputs():
    """torch's own forward fails here (bf16 log-probs copied into a float32 buffer)."""
    ref, ours = _adaptive_pair()
    hidden, target = torch.randn(30, 16), torch.randint(0, 50, (30,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            ref(hidden, target)
        out = ours(hidden, target).output
        full = ours.log_prob(hidden)
    assert out.dtype == full.dtype == torch.float32
    exact = ours(hidden, target).output
    assert (out - exact).abs().max() < 0.05  # bf16 products, float32 softmax
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(30))
    torch.testing.assert_close(full.gather(1, target.unsqueeze(1)).squeeze(1), out)


def test_adaptive_softmax_names_a_target_out_of_range():
    _, ours = _adaptive_pair()
    with pytest.raises(IndexError, match=r"\[0, 50\)"):
        ours(torch.randn(2, 16), torch.tensor([3, 50]))
