"""Reference models of the same size as seqlab's, for side-by-side timing.

- `TorchTransformerSeq2Seq`: `torch.nn.Transformer` with seqlab's surroundings (shared, tied,
  sqrt(H)-scaled embeddings, sinusoidal positions, pre-LN): the same parameters, torch's layers.
- `D2LBahdanauSeq2Seq`: the Bahdanau GRU seq2seq as d2l writes it (§11.4 `Seq2SeqAttentionDecoder`
  with §11.3 `AdditiveAttention`): the attention keys are projected at every decoder step, the
  encoder runs on the padded batch without packing, and `nn.GRU` is called once per step from a
  Python loop. Its modules mirror seqlab's `build_rnn_seq2seq` (bidirectional encoder, bridge,
  deep output), so the two have the same parameters and differ only in how they compute.
- `marian` / `hf_bert`: Hugging Face models built from a config (never downloaded).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.models.bert import BertConfig
from seqlab.models.rnn import RNNSeq2SeqConfig
from seqlab.models.transformer import TransformerConfig


def sinusoids(max_len: int, d_model: int) -> Tensor:
    """(max_len, H) table of Vaswani et al. 2017, §3.5."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2).float() / d_model)  # (H/2,)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class TorchTransformerSeq2Seq(nn.Module):
    """`nn.Transformer` (batch-first, pre-LN) between seqlab-style embeddings and output layer."""

    def __init__(self, c: TransformerConfig, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, c.d_model, padding_idx=0)
        self.scale = math.sqrt(c.d_model)
        self.register_buffer("table", sinusoids(c.max_len, c.d_model), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        self.transformer = nn.Transformer(
            c.d_model,
            c.num_heads,
            c.num_encoder_layers,
            c.num_decoder_layers,
            c.d_ff,
            c.dropout,
            activation=c.activation,
            batch_first=True,
            norm_first=c.norm_first,
        )
        self.output = nn.Linear(c.d_model, vocab, bias=False)
        self.output.weight = self.embed.weight

    def _embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.embed(ids) * self.scale + self.table[: ids.size(1)])  # (B, T, H)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), src_mask (B, S) True at real tokens, tgt_in (B, T) -> logits (B, T, V)."""
        length = tgt_in.size(1)
        future = torch.ones(length, length, dtype=torch.bool, device=src.device).triu(1)  # (T, T)
        hidden = self.transformer(
            self._embed(src),
            self._embed(tgt_in),
            tgt_mask=future,
            src_key_padding_mask=~src_mask,
            memory_key_padding_mask=~src_mask,
            tgt_is_causal=True,
        )  # (B, T, H)
        return self.output(hidden)  # (B, T, V)


def d2l_masked_softmax(scores: Tensor, valid_lens: Tensor) -> Tensor:
    """d2l §11.3 `masked_softmax`: scores (B, Q, S), valid_lens (B,) -> weights (B, Q, S)."""
    positions = torch.arange(scores.size(-1), device=scores.device)  # (S,)
    allowed = positions[None, None, :] < valid_lens[:, None, None]  # (B, 1, S)
    return torch.softmax(scores.masked_fill(~allowed, -1e6), dim=-1)


class D2LBahdanauSeq2Seq(nn.Module):
    """GRU encoder-decoder with additive attention in d2l's formulation (see the module doc)."""

    def __init__(self, c: RNNSeq2SeqConfig, src_vocab: int, tgt_vocab: int):
        super().__init__()
        if c.cell != "gru" or not (c.attention and c.bidirectional):
            raise ValueError("the d2l baseline mirrors a bidirectional GRU with attention")
        E, H, L, A = c.embed_dim, c.hidden_size, c.num_layers, c.attention_size or c.hidden_size
        drop = c.dropout if L > 1 else 0.0
        self.src_embed = nn.Embedding(src_vocab, E, padding_idx=0)
        self.encoder = nn.GRU(E, H, L, batch_first=True, bidirectional=True, dropout=drop)
        self.bridge = nn.ModuleList(nn.Linear(2 * H, H) for _ in range(L))
        self.tgt_embed = nn.Embedding(tgt_vocab, E, padding_idx=0)
        self.W_q = nn.Linear(H, A, bias=False)
        self.W_k = nn.Linear(2 * H, A, bias=False)
        self.w_v = nn.Linear(A, 1, bias=False)
        self.decoder = nn.GRU(E + 2 * H, H, L, batch_first=True, dropout=drop)
        self.output = nn.Linear(H + 2 * H + E, tgt_vocab)
        self.dropout = nn.Dropout(c.dropout)

    def _encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) -> memory (B, S, 2H), initial decoder state (L, B, H); padding included."""
        memory, final = self.encoder(self.dropout(self.src_embed(src)))  # (B, S, 2H), (2L, B, H)
        per_layer = final.view(len(self.bridge), 2, *final.shape[1:])  # (L, 2, B, H)
        merged = [lin(torch.cat([p[0], p[1]], -1)) for lin, p in zip(self.bridge, per_layer)]
        return memory, torch.tanh(torch.stack(merged))  # (L, B, H)

    def _attend(self, query: Tensor, memory: Tensor, valid_lens: Tensor) -> Tensor:
        """query (B, 1, H) -> context (B, 1, 2H); W_k applied to the keys on every call (d2l)."""
        features = torch.tanh(self.W_q(query).unsqueeze(2) + self.W_k(memory).unsqueeze(1))
        scores = self.w_v(features).squeeze(-1)  # (B, 1, S)
        return torch.bmm(d2l_masked_softmax(scores, valid_lens), memory)  # (B, 1, 2H)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), src_mask (B, S), tgt_in (B, T) -> logits (B, T, V)."""
        memory, hidden = self._encode(src)
        valid_lens = src_mask.sum(dim=1)  # (B,)
        emb = self.dropout(self.tgt_embed(tgt_in))  # (B, T, E)
        features = []
        for t in range(tgt_in.size(1)):
            x = emb[:, t : t + 1]  # (B, 1, E)
            context = self._attend(hidden[-1].unsqueeze(1), memory, valid_lens)  # (B, 1, 2H)
            out, hidden = self.decoder(torch.cat([x, context], dim=-1), hidden)  # (B, 1, H)
            features.append(torch.cat([out, context, x], dim=-1))  # (B, 1, F)
        return self.output(self.dropout(torch.cat(features, dim=1)))  # (B, T, V)


def marian(transformers, c: TransformerConfig, vocab: int):
    """`MarianMTModel` of the same size as seqlab's Transformer `c` (random weights, post-LN)."""
    config = transformers.MarianConfig(
        vocab_size=vocab,
        d_model=c.d_model,
        encoder_layers=c.num_encoder_layers,
        decoder_layers=c.num_decoder_layers,
        encoder_attention_heads=c.num_heads,
        decoder_attention_heads=c.num_heads,
        encoder_ffn_dim=c.d_ff,
        decoder_ffn_dim=c.d_ff,
        activation_function=c.activation,
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.dropout,
        max_position_embeddings=c.max_len,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
    return transformers.MarianMTModel(config)


def hf_bert(transformers, c: BertConfig, vocab: int):
    """`BertForPreTraining` of the same size as seqlab's BERT `c` (random weights, post-LN)."""
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=c.d_model,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        intermediate_size=c.d_ff,
        hidden_act=c.activation,
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.attention_dropout,
        max_position_embeddings=c.max_len,
        type_vocab_size=c.num_segments,
        pad_token_id=0,
    )
    return transformers.BertForPreTraining(config)
