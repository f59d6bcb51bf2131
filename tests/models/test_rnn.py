"""Tests for seqlab/models/rnn.py and seq2seq.py: the Decoder contract over every variant,
keys projected once, encoder layout, config errors, and a small model memorising reversal."""

from __future__ import annotations

import dataclasses
import itertools
from unittest import mock

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.models.interfaces import Decoder, lengths_to_mask
from seqlab.models.rnn import (
    AttentionDecoderState,
    AttentionRNNDecoder,
    RNNDecoder,
    RNNSeq2SeqConfig,
    build_rnn_seq2seq,
)
from seqlab.models.seq2seq import Seq2Seq
from tests.models.contract import (
    check_reorder_commutes,
    check_source_padding_invariance,
    check_step_equals_forward,
    step_logits,
)

SRC_V, TGT_V, BOS, EOS = 11, 13, 2, 3
SMALL = RNNSeq2SeqConfig(embed_dim=8, hidden_size=12, num_layers=2, dropout=0.1)
VARIANTS = list(itertools.product(["gru", "lstm", "rnn"], [True, False], [True, False]))


def build(**changes) -> Seq2Seq:
    torch.manual_seed(0)
    return build_rnn_seq2seq(dataclasses.replace(SMALL, **changes), SRC_V, TGT_V).eval()


def batch(src_lens: list[int], tgt_len: int, seed: int = 1):
    """Random source ids (pad 0 beyond each length) and a target prefix starting with BOS."""
    gen = torch.Generator().manual_seed(seed)
    mask = lengths_to_mask(torch.tensor(src_lens))  # (B, S)
    src = torch.randint(4, SRC_V, mask.shape, generator=gen).masked_fill(~mask, 0)
    tgt_in = torch.randint(4, TGT_V, (len(src_lens), tgt_len), generator=gen)
    tgt_in[:, 0] = BOS
    return src, mask, tgt_in


@pytest.mark.parametrize(("cell", "attention", "bidirectional"), VARIANTS)
def test_decoder_contract(cell, attention, bidirectional):
    model = build(cell=cell, attention=attention, bidirectional=bidirectional)
    src, mask, tgt_in = batch([5, 3, 1], tgt_len=6)
    assert isinstance(model.decoder, Decoder)
    assert isinstance(model.decoder, AttentionRNNDecoder if attention else RNNDecoder)
    with torch.no_grad():
        encoded = model.encode(src, mask)
    check_step_equals_forward(model.decoder, encoded, tgt_in)
    check_reorder_commutes(model.decoder, encoded, tgt_in)
    check_source_padding_invariance(model, src, mask, tgt_in)


@pytest.mark.parametrize("attention", [True, False])
def test_own_cells_model_equals_fused_model(attention):
    fused, own = build(attention=attention), build(attention=attention, own_cells=True)
    own.load_state_dict(fused.state_dict())
    src, mask, tgt_in = batch([4, 2], tgt_len=5)
    with torch.no_grad():
        torch.testing.assert_close(
            own(src, mask, tgt_in), fused(src, mask, tgt_in), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_shapes_and_final_layout(cell, bidirectional):
    model = build(cell=cell, bidirectional=bidirectional)
    src, mask, _ = batch([5, 2], tgt_len=1)
    encoded = model.encode(src, mask)
    directions = 2 if bidirectional else 1
    assert encoded.memory.shape == (2, 5, directions * 12)
    assert encoded.memory[1, 2:].abs().sum() == 0  # zero at padding
    finals = encoded.final if cell == "lstm" else (encoded.final,)
    assert len(finals) == (2 if cell == "lstm" else 1)
    assert all(f.shape == (2, 2, 12) for f in finals)  # (B, L, H) whatever the directions
    if not bidirectional:  # top layer's final state = output at each row's last real token
        torch.testing.assert_close(finals[0][:, -1], encoded.memory[[0, 1], [4, 1]])


def test_keys_are_projected_once_in_init_state():
    model = build(attention=True)
    src, mask, tgt_in = batch([5, 3, 1], tgt_len=6)
    attention = model.decoder.attention
    with (
        torch.no_grad(),
        mock.patch.object(attention, "project_keys", wraps=attention.project_keys) as spy,
    ):
        encoded = model.encode(src, mask)
        state = model.decoder.init_state(encoded)
        assert spy.call_count == 1
        for t in range(tgt_in.size(1)):
            _, state = model.decoder.step(tgt_in[:, t], state)
        assert spy.call_count == 1  # six steps, still one projection
        model.decoder(tgt_in, encoded)
        assert spy.call_count == 2  # teacher forcing: once per batch, not once per position
    assert isinstance(state, AttentionDecoderState)
    assert state.projected_keys.shape == (3, 5, 12)


def test_attention_weights_are_distributions_over_real_source_tokens():
    model = build(attention=True, attention_size=7)
    src, mask, tgt_in = batch([5, 3, 1], tgt_len=4)
    with torch.no_grad():
        weights = model.decoder.attention_weights(tgt_in, model.encode(src, mask))  # (B, T, S)
    assert weights.shape == (3, 4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert weights.masked_select(~mask.unsqueeze(1)).abs().sum() == 0


def test_tied_output_shares_the_target_embedding():
    model = build(tie_output=True)
    head = model.decoder.output[-1]  # features -> E -> V
    assert head.weight is model.decoder.embedding.weight
    untied = build(attention=False, embed_dim=12, tie_output=True)  # features are H = E wide
    assert untied.decoder.output.weight is untied.decoder.embedding.weight


def test_state_tensors_are_batch_first():
    model = build(cell="lstm", attention=True)
    src, mask, tgt_in = batch([5, 3, 1], tgt_len=2)
    with torch.no_grad():
        _, state = step_logits(model.decoder, model.encode(src, mask), tgt_in)
    for field in dataclasses.fields(state):
        assert getattr(state, field.name).size(0) == 3, field.name


@pytest.mark.parametrize(
    ("change", "key"),
    [({"hidden_size": 0}, "model.hidden_size"), ({"dropout": 1.0}, "model.dropout")],
)
def test_bad_config_names_the_key(change, key):
    with pytest.raises(ConfigError, match=key):
        build_rnn_seq2seq(dataclasses.replace(SMALL, **change), SRC_V, TGT_V)


def reverse_pairs(count: int, seed: int = 0):
    """Sources of 3-6 symbols (ids 4..11) and their reversals + EOS, padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 7, (count,), generator=gen)
    src_mask = lengths_to_mask(lengths)  # (B, S)
    src = torch.randint(4, 12, src_mask.shape, generator=gen).masked_fill(~src_mask, 0)
    targets = [[*src[i, : lengths[i]].flip(0).tolist(), EOS] for i in range(count)]
    return src, src_mask, targets


def greedy(model: Seq2Seq, src, mask, max_len: int) -> list[list[int]]:
    with torch.no_grad():
        state = model.decoder.init_state(model.encode(src, mask))
        tokens, out = torch.full((src.size(0),), BOS), []
        for _ in range(max_len):
            logits, state = model.decoder.step(tokens, state)
            tokens = logits.argmax(-1)
            out.append(tokens)
    rows = torch.stack(out, 1).tolist()
    return [row[: row.index(EOS) + 1] if EOS in row else row for row in rows]


def test_attention_model_memorises_reversal():
    config = RNNSeq2SeqConfig(embed_dim=16, hidden_size=32, num_layers=1, dropout=0.0)
    torch.manual_seed(0)
    model = build_rnn_seq2seq(config, 12, 12)
    src, mask, targets = reverse_pairs(16)
    width = max(map(len, targets))
    tgt_out = torch.tensor([t + [0] * (width - len(t)) for t in targets])  # (B, T), pad 0
    tgt_in = torch.cat([torch.full((16, 1), BOS), tgt_out[:, :-1]], dim=1).masked_fill(
        tgt_out == 0, 0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        logits = model(src, mask, tgt_in)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    assert greedy(model, src, mask, width + 2) == targets


def test_state_dict_keys_are_those_of_earlier_checkpoints():
    """Checkpoints saved before the layers became plain `nn.Linear` (issue 19) still load: a
    one-layer LSTM + attention model's keys, frozen from the code before that change."""
    rnn = [f"rnn.rnn.{w}_{g}_l0" for w in ("weight", "bias") for g in ("ih", "hh")]
    frozen = {
        "encoder.embedding.weight",
        *(f"encoder.{k}{d}" for k in rnn for d in ("", "_reverse")),
        *(f"encoder.bridge.{s}.0.{w}" for s in ("hidden", "cell") for w in ("weight", "bias")),
        "decoder.embedding.weight",
        "decoder.attention.W_q.weight",
        "decoder.attention.W_k.weight",
        "decoder.attention.w_v.weight",
        *(f"decoder.{k}" for k in rnn),
        "decoder.output.weight",
        "decoder.output.bias",
    }
    config = RNNSeq2SeqConfig(cell="lstm", embed_dim=4, hidden_size=4, num_layers=1)
    assert len(frozen) == 23
    assert set(build_rnn_seq2seq(config, 7, 7).state_dict()) == frozen
