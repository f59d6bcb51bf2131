"""Tests for seqlab/models/transformer.py: the Decoder contract, padding invariance, overfitting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError, SeqlabError
from seqlab.models.interfaces import Decoder, Encoded, lengths_to_mask
from seqlab.models.transformer import (
    TransformerConfig,
    TransformerSeq2Seq,
    TransformerState,
    build_transformer,
)
from tests.models.contract import check_step_equals_forward

SRC_V, TGT_V, BOS, EOS = 11, 13, 2, 3
SMALL = TransformerConfig(
    d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64, max_len=40
)


def build(**changes) -> TransformerSeq2Seq:
    torch.manual_seed(0)
    return build_transformer(dataclasses.replace(SMALL, **changes), SRC_V, TGT_V).eval()


def batch(src_lens: list[int], tgt_len: int, seed: int = 1):
    """Random source ids (pad 0 beyond each length) and a target prefix starting with BOS."""
    gen = torch.Generator().manual_seed(seed)
    mask = lengths_to_mask(torch.tensor(src_lens))  # (B, S)
    src = torch.randint(4, SRC_V, mask.shape, generator=gen).masked_fill(~mask, 0)
    tgt_in = torch.randint(4, TGT_V, (len(src_lens), tgt_len), generator=gen)
    tgt_in[:, 0] = BOS
    return src, mask, tgt_in


def step_through(model: TransformerSeq2Seq, encoded: Encoded, tgt_in: torch.Tensor):
    """Logits (B, T, V) obtained by feeding tgt_in one token at a time."""
    state, logits = model.decoder.init_state(encoded), []
    for t in range(tgt_in.size(1)):
        out, state = model.decoder.step(tgt_in[:, t], state)
        logits.append(out)
    return torch.stack(logits, dim=1), state


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_stepping_equals_teacher_forcing(norm_first, positional):
    model = build(norm_first=norm_first, positional=positional)
    src, mask, tgt_in = batch([5, 3, 1], tgt_len=7)
    with torch.no_grad():
        encoded = model.encode(src, mask)
        expected = model.decoder(tgt_in, encoded)  # (B, T, V)
        stepped, state = step_through(model, encoded, tgt_in)
    assert expected.shape == (3, 7, TGT_V)
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=0)
    check_step_equals_forward(model.decoder, encoded, tgt_in)  # and logits at some rows only
    assert state.position == 7
    assert torch.equal(model(src, mask, tgt_in), expected)


def test_state_is_batch_first_and_cross_kv_is_computed_once():
    model = build()
    src, mask, _ = batch([4, 2], tgt_len=1)
    state = model.decoder.init_state(model.encode(src, mask))
    assert isinstance(state, TransformerState) and isinstance(model.decoder, Decoder)
    assert len(state.memory_kv) == len(state.self_kv) == SMALL.num_decoder_layers
    assert all(k.shape == (2, 4, 4, 8) for k, _ in state.memory_kv)
    assert all(k.shape == (2, 4, 0, 8) for k, _ in state.self_kv)
    _, after = model.decoder.step(torch.tensor([BOS, BOS]), state)
    assert all(a[0] is b[0] for a, b in zip(after.memory_kv, state.memory_kv))
    assert all(k.shape == (2, 4, 1, 8) for k, _ in after.self_kv)


def test_reorder_commutes_with_step():
    model = build()
    src, mask, tgt_in = batch([5, 2, 4], tgt_len=4)
    index = torch.tensor([2, 0, 0, 1])  # reorder and expand, as beam search does
    with torch.no_grad():
        _, state = step_through(model, model.encode(src, mask), tgt_in[:, :3])
        logits_a, state_a = model.decoder.step(tgt_in[index, 3], state.reorder(index))
        logits_b, state_b = model.decoder.step(tgt_in[:, 3], state)
        state_b = state_b.reorder(index)
        torch.testing.assert_close(logits_a, logits_b[index], atol=1e-6, rtol=0)
        next_a, _ = model.decoder.step(torch.full((4,), 5), state_a)
        next_b, _ = model.decoder.step(torch.full((4,), 5), state_b)
    torch.testing.assert_close(next_a, next_b, atol=1e-6, rtol=0)


def test_extra_source_padding_changes_nothing():
    model = build()
    src, mask, tgt_in = batch([4, 2], tgt_len=5)
    padded_src = torch.cat([src, torch.zeros(2, 3, dtype=src.dtype)], dim=1)  # (B, S+3)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        expected = model(src, mask, tgt_in)
        torch.testing.assert_close(
            model(padded_src, padded_mask, tgt_in), expected, atol=1e-5, rtol=0
        )
        stepped, _ = step_through(model, model.encode(padded_src, padded_mask), tgt_in)
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=0)


def test_sentence_alone_equals_sentence_in_a_batch_of_longer_ones():
    model = build()
    src, mask, tgt_in = batch([7, 3, 6], tgt_len=8)
    short_src, short_tgt = src[1:2, :3], tgt_in[1:2, :4]
    tgt_in[1, 4:] = 0  # the short target is padded in the batch
    with torch.no_grad():
        in_batch = model(src, mask, tgt_in)[1, :4]
        alone = model(short_src, mask[1:2, :3], short_tgt)[0]
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=0)


def test_position_beyond_max_len_is_a_clear_error():
    model = build(max_len=3)
    src, mask, tgt_in = batch([2], tgt_len=3)
    _, state = step_through(model, model.encode(src, mask), tgt_in)
    with pytest.raises(SeqlabError, match="max_len=3"):
        model.decoder.step(torch.tensor([EOS]), state)


def test_tied_and_shared_embeddings_are_the_same_parameter():
    tied = build()
    assert tied.decoder.output.weight is tied.decoder.embedding.weight
    assert tied.encoder.embedding is not tied.decoder.embedding
    untied = build(tie_output=False)
    assert untied.decoder.output.weight is not untied.decoder.embedding.weight
    count = sum(p.numel() for p in tied.parameters())
    assert count == sum(p.numel() for p in untied.parameters()) - TGT_V * SMALL.d_model
    torch.manual_seed(0)
    shared = build_transformer(dataclasses.replace(SMALL, share_embeddings=True), 20, 20)
    assert shared.encoder.embedding.weight is shared.decoder.embedding.weight
    assert shared.decoder.output.weight is shared.encoder.embedding.weight
    assert torch.equal(shared.encoder.embedding.weight[0], torch.zeros(SMALL.d_model))


def test_share_embeddings_with_different_vocab_sizes_is_a_config_error():
    with pytest.raises(ConfigError, match=r"share_embeddings.*11.*13"):
        build(share_embeddings=True)


def test_config_rejects_heads_that_do_not_divide_d_model():
    with pytest.raises(ValueError, match="num_heads = 5"):
        TransformerConfig(d_model=32, num_heads=5)


def greedy(model: TransformerSeq2Seq, src, mask, max_len: int) -> list[list[int]]:
    state = model.decoder.init_state(model.encode(src, mask))
    tokens, out = torch.full((src.size(0),), BOS), []
    for _ in range(max_len):
        logits, state = model.decoder.step(tokens, state)
        tokens = logits.argmax(-1)
        out.append(tokens)
    rows = torch.stack(out, 1).tolist()
    return [row[: row.index(EOS)] if EOS in row else row for row in rows]


def test_small_model_memorises_copy_pairs():
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=32,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=64,
        dropout=0.0,
        max_len=16,
    )
    model = build_transformer(config, 12, 12)
    lens = [5, 3, 6, 4, 5, 2, 6, 4]
    src, mask, _ = batch(lens, tgt_len=1, seed=3)
    src = src.clamp(max=11)
    tgt_out = torch.cat([src, torch.zeros(len(lens), 1, dtype=src.dtype)], 1)  # (B, S+1)
    tgt_out[torch.arange(len(lens)), torch.tensor(lens)] = EOS  # y + EOS
    tgt_in = torch.cat([torch.full((len(lens), 1), BOS), src], 1)  # BOS + y
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)
    for _ in range(300):
        loss = loss_fn(model(src, mask, tgt_in).flatten(0, 1), tgt_out.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        decoded = greedy(model, src, mask, max_len=8)
    assert decoded == [row[:n] for row, n in zip(src.tolist(), lens)]


def test_state_dict_keys_are_those_of_earlier_checkpoints():
    """Checkpoints saved before the layers became plain `nn.Linear` (issue 19) still load: a
    one-layer model's keys, frozen from the code before that change."""
    attn = [f"{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")]
    ffn = [f"ffn.linear{i}.{w}" for i in (1, 2) for w in ("weight", "bias")]
    norms = [f"norm{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")]
    enc, dec = "encoder.stack.layers.0.", "decoder.stack.layers.0."
    frozen = {
        "encoder.embedding.embed.weight",
        "encoder.stack.final_norm.weight",
        "encoder.stack.final_norm.bias",
        *(enc + "self_attn." + k for k in attn),
        *(enc + k for k in ffn + norms[:4]),
        "decoder.embedding.embed.weight",
        "decoder.output.weight",
        "decoder.stack.final_norm.weight",
        "decoder.stack.final_norm.bias",
        *(dec + "self_attn." + k for k in attn),
        *(dec + "cross_attn." + k for k in attn),
        *(dec + k for k in ffn + norms),
    }
    tiny = TransformerConfig(
        d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=16, max_len=10
    )
    assert len(frozen) == 49
    assert set(build_transformer(tiny, 7, 7).state_dict()) == frozen
