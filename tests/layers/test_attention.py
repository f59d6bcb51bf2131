"""Tests for seqlab/layers/attention.py: masking, the d2l/Bahdanau formulation, torch parity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqlab.layers.attention import (
    AdditiveAttention,
    DotProductAttention,
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, max_len) bool, True at real tokens (kept local: layers do not import models)."""
    return torch.arange(max_len)[None, :] < lengths[:, None]


def test_masked_softmax_lengths_per_row_zero_weights_beyond_length():
    scores = torch.randn(3, 2, 5)
    weights = masked_softmax(scores, torch.tensor([2, 5, 1]))
    assert torch.equal(weights[0, :, 2:], torch.zeros(2, 3))
    assert torch.equal(weights[2, :, 1:], torch.zeros(2, 4))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    torch.testing.assert_close(weights[0, :, :2], torch.softmax(scores[0, :, :2], -1))


def test_masked_softmax_lengths_per_query():
    scores = torch.randn(2, 3, 4)
    lens = torch.tensor([[1, 2, 4], [3, 3, 0]])
    weights = masked_softmax(scores, lens)
    for b in range(2):
        for q in range(3):
            n = int(lens[b, q])
            assert torch.equal(weights[b, q, n:], torch.zeros(4 - n))
            if n:
                torch.testing.assert_close(weights[b, q, :n], torch.softmax(scores[b, q, :n], -1))


def test_masked_softmax_zero_length_rows_are_zero_not_nan():
    weights = masked_softmax(torch.randn(2, 3, 4), torch.tensor([0, 2]))
    assert torch.equal(weights[0], torch.zeros(3, 4))
    assert not weights.isnan().any()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=4), st.integers(1, 3))
def test_masked_softmax_bool_mask_equals_lengths(lengths, num_queries):
    lens = torch.tensor(lengths)
    scores = torch.randn(len(lengths), num_queries, 6) * 10
    mask = lengths_to_mask(lens, 6)  # (B, K) bool
    by_mask, by_lens = masked_softmax(scores, mask), masked_softmax(scores, lens)
    assert torch.equal(by_mask, by_lens)
    assert torch.equal(by_mask.sum(-1) > 0, (lens > 0).unsqueeze(1).expand(-1, num_queries))


def d2l_additive(attn: AdditiveAttention, queries, keys, values, valid_lens):
    """d2l's AdditiveAttention.forward verbatim (keys projected inside, valid_lens masking)."""
    queries, keys = attn.W_q(queries), attn.W_k(keys)
    features = torch.tanh(queries.unsqueeze(2) + keys.unsqueeze(1))
    scores = attn.w_v(features).squeeze(-1)
    # d2l's masked_softmax: fill with -1e6 then softmax
    mask = torch.arange(scores.size(-1))[None, None, :] < valid_lens[:, None, None]
    weights = torch.softmax(scores.masked_fill(~mask, -1e6), dim=-1)
    return torch.bmm(weights, values), weights


def test_additive_attention_with_projected_keys_equals_d2l():
    torch.manual_seed(0)
    attn = AdditiveAttention(query_size=5, key_size=6, num_hiddens=7).eval()
    queries, keys, values = torch.randn(3, 2, 5), torch.randn(3, 4, 6), torch.randn(3, 4, 8)
    lens = torch.tensor([4, 2, 1])
    context, weights = attn(
        queries, attn.project_keys(keys), values, lengths_to_mask(lens, 4), need_weights=True
    )
    ref_context, ref_weights = d2l_additive(attn, queries, keys, values, lens)
    assert context.shape == (3, 2, 8) and weights.shape == (3, 2, 4)
    torch.testing.assert_close(context, ref_context)
    torch.testing.assert_close(weights, ref_weights)
    assert torch.equal(attn(queries, attn.project_keys(keys), values, lens), context)


def test_dot_product_attention_is_scaled_and_masked():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    mask = lengths_to_mask(torch.tensor([5, 2]), 5)
    context, weights = DotProductAttention()(q, k, v, mask, need_weights=True)
    ref_weights = torch.softmax((q @ k.transpose(1, 2) / 2.0).masked_fill(~mask[:, None], -1e9), -1)
    torch.testing.assert_close(weights, ref_weights)
    torch.testing.assert_close(context, ref_weights @ v)
    assert torch.equal(weights[1, :, 2:], torch.zeros(3, 3))


def test_causal_mask_is_bottom_right_aligned():
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3).tril().bool())
    assert torch.equal(causal_mask(1, 4), torch.ones(1, 4, dtype=torch.bool))
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


def copied_pair(d_model=8, num_heads=2, kdim=None, vdim=None):
    """Our MHA and torch's with identical weights (biases made non-zero so they matter)."""
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, num_heads, kdim=kdim, vdim=vdim).eval()
    ref = nn.MultiheadAttention(d_model, num_heads, batch_first=True, kdim=kdim, vdim=vdim).eval()
    with torch.no_grad():
        for proj in (ours.q_proj, ours.k_proj, ours.v_proj, ours.out_proj):
            proj.bias.normal_()
        if ref._qkv_same_embed_dim:
            ref.in_proj_weight.copy_(
                torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
            )
        else:
            ref.q_proj_weight.copy_(ours.q_proj.weight)
            ref.k_proj_weight.copy_(ours.k_proj.weight)
            ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ours, ref


def test_mha_parity_with_torch_cross_attention_key_padding():
    ours, ref = copied_pair(kdim=6, vdim=5)
    query, key, value = torch.randn(3, 4, 8), torch.randn(3, 7, 6), torch.randn(3, 7, 5)
    mask = lengths_to_mask(torch.tensor([7, 3, 1]), 7)
    expected, ref_weights = ref(
        query, key, value, key_padding_mask=~mask, average_attn_weights=False
    )
    torch.testing.assert_close(ours(query, key, value, key_mask=mask), expected, atol=1e-5, rtol=0)
    out, weights = ours(query, key, value, key_mask=mask, need_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=0)
    assert torch.equal(weights[2, :, :, 1:], torch.zeros(2, 4, 6))


@pytest.mark.parametrize("with_padding", [False, True])
def test_mha_parity_with_torch_causal_self_attention(with_padding):
    ours, ref = copied_pair()
    x = torch.randn(2, 5, 8)
    mask = lengths_to_mask(torch.tensor([5, 3]), 5) if with_padding else None
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)  # torch: True = not allowed
    expected, ref_weights = ref(
        x,
        x,
        x,
        key_padding_mask=None if mask is None else ~mask,
        attn_mask=future,
        average_attn_weights=False,
    )
    torch.testing.assert_close(
        ours(x, x, x, key_mask=mask, causal=True), expected, atol=1e-5, rtol=0
    )
    out, weights = ours(x, x, x, key_mask=mask, causal=True, need_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=0)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))


def test_mha_fully_padded_row_gives_no_nan_and_leaves_other_rows_alone():
    ours, _ = copied_pair()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    out = ours(query, memory, memory, key_mask=mask)
    out_w, weights = ours(query, memory, memory, key_mask=mask, need_weights=True)
    assert not out.isnan().any() and not out_w.isnan().any()
    assert torch.equal(weights[1], torch.zeros(2, 3, 4))
    alone = ours(query[:1], memory[:1], memory[:1], key_mask=mask[:1])
    torch.testing.assert_close(out[:1], alone, atol=1e-6, rtol=0)
    # a row without keys gets a zero context, so only the output bias remains
    torch.testing.assert_close(out[1], ours.out_proj.bias.expand(3, 8))
    out.sum().backward()
    assert all(not p.grad.isnan().any() for p in ours.parameters())


def test_mha_project_kv_once_then_attend_equals_forward():
    ours, _ = copied_pair()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    mask = lengths_to_mask(torch.tensor([6, 4]), 6)
    k, v = ours.project_kv(memory, memory)
    assert k.shape == v.shape == (2, 2, 6, 4)
    torch.testing.assert_close(ours.attend(query, k, v, mask), ours(query, memory, memory, mask))


def test_mha_incremental_single_query_needs_no_causal_mask():
    ours, _ = copied_pair()
    x = torch.randn(2, 5, 8)
    full = ours(x, x, x, causal=True)
    k, v = ours.project_kv(x, x)
    for t in range(5):
        step = ours.attend(x[:, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1])
        torch.testing.assert_close(step, full[:, t : t + 1], atol=1e-6, rtol=0)


def test_mha_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
