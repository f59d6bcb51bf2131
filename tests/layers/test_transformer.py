"""Tests for seqlab/layers/transformer.py: parity with torch.nn layers, stepping with caches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.transformer import (
    PositionwiseFeedForward,
    TransformerDecoderLayer,
    TransformerDecoderStack,
    TransformerEncoderLayer,
    TransformerEncoderStack,
)

D_MODEL, HEADS, D_FF = 16, 4, 32


def lengths_to_mask(lengths: list[int], max_len: int) -> torch.Tensor:
    return torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)


def copy_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    weights = [ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]
    biases = [ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]
    ref.in_proj_weight.copy_(torch.cat(weights))
    ref.in_proj_bias.copy_(torch.cat(biases))
    ref.out_proj.load_state_dict(ours.out_proj.state_dict())


def randomize(module: nn.Module) -> None:
    """Make biases and LayerNorm affine parameters non-trivial so that a wrong copy shows."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)


def copy_common(ours: nn.Module, ref: nn.Module, norms: int) -> None:
    ref.linear1.load_state_dict(ours.ffn.linear1.state_dict())
    ref.linear2.load_state_dict(ours.ffn.linear2.state_dict())
    for i in range(1, norms + 1):
        getattr(ref, f"norm{i}").load_state_dict(getattr(ours, f"norm{i}").state_dict())


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(D_MODEL, HEADS, D_FF, 0.1, norm_first, activation).eval()
    randomize(ours)
    ref = nn.TransformerEncoderLayer(
        D_MODEL, HEADS, D_FF, 0.1, activation, batch_first=True, norm_first=norm_first
    ).eval()
    with torch.no_grad():
        copy_mha(ours.self_attn, ref.self_attn)
        copy_common(ours, ref, norms=2)
    x, mask = torch.randn(3, 6, D_MODEL), lengths_to_mask([6, 4, 1], 6)
    expected = ref(x, src_key_padding_mask=~mask)
    got = ours(x, mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_layer_matches_torch(norm_first):
    torch.manual_seed(0)
    ours = TransformerDecoderLayer(D_MODEL, HEADS, D_FF, 0.1, norm_first).eval()
    randomize(ours)
    ref = nn.TransformerDecoderLayer(
        D_MODEL, HEADS, D_FF, 0.1, batch_first=True, norm_first=norm_first
    ).eval()
    with torch.no_grad():
        copy_mha(ours.self_attn, ref.self_attn)
        copy_mha(ours.cross_attn, ref.multihead_attn)
        copy_common(ours, ref, norms=3)
    x, memory = torch.randn(3, 5, D_MODEL), torch.randn(3, 7, D_MODEL)
    mask = lengths_to_mask([7, 2, 5], 7)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    expected = ref(x, memory, tgt_mask=causal, memory_key_padding_mask=~mask, tgt_is_causal=True)
    got = ours(x, ours.project_memory(memory), mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_stack_step_equals_forward_and_cache_grows(norm_first):
    torch.manual_seed(0)
    stack = TransformerDecoderStack(2, D_MODEL, HEADS, D_FF, 0.1, norm_first).eval()
    x, memory = torch.randn(2, 6, D_MODEL), torch.randn(2, 4, D_MODEL)
    mask = lengths_to_mask([4, 3], 4)
    memory_kv = stack.project_memory(memory)
    full = stack(x, memory_kv, mask)  # (B, T, H)
    caches = stack.empty_cache(2, memory)
    for t in range(6):
        y, caches = stack.step(x[:, t : t + 1], caches, memory_kv, mask)
        assert all(k.shape == v.shape == (2, HEADS, t + 1, D_MODEL // HEADS) for k, v in caches)
        torch.testing.assert_close(y[:, 0], full[:, t], atol=1e-5, rtol=0)


def test_encoder_stack_final_norm_only_when_pre_ln_and_padding_is_ignored():
    torch.manual_seed(0)
    pre = TransformerEncoderStack(2, D_MODEL, HEADS, D_FF, 0.0, norm_first=True).eval()
    post = TransformerEncoderStack(2, D_MODEL, HEADS, D_FF, 0.0, norm_first=False)
    assert isinstance(pre.final_norm, nn.LayerNorm) and isinstance(post.final_norm, nn.Identity)
    x = torch.randn(1, 3, D_MODEL)
    padded = torch.cat([x, torch.randn(1, 4, D_MODEL)], dim=1)  # (1, 7, H) junk at padding
    alone = pre(x, lengths_to_mask([3], 3))
    torch.testing.assert_close(pre(padded, lengths_to_mask([3], 7))[:, :3], alone)


def test_feed_forward_is_positionwise_and_checks_activation():
    torch.manual_seed(0)
    ffn = PositionwiseFeedForward(D_MODEL, D_FF, activation="gelu")
    x = torch.randn(2, 5, D_MODEL)
    out = ffn(x)
    torch.testing.assert_close(out[:, 2:3], ffn(x[:, 2:3]))
    torch.testing.assert_close(out, ffn.linear2(nn.functional.gelu(ffn.linear1(x))))
    with pytest.raises(ValueError, match="swish"):
        PositionwiseFeedForward(D_MODEL, D_FF, activation="swish")
