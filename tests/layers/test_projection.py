"""Tests for seqlab/layers/projection.py: the adaptive softmax equals torch's and also runs under
bf16 autocast."""

from __future__ import annotations

import pytest
import torch


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
