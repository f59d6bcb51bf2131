"""Recurrent encoder-decoders: d2l's RNN seq2seq (ch. 10) and Bahdanau attention (2015).

- `RNNEncoder`: embedding -> (bi)directional `Recurrent`; a bidirectional encoder's final states
  are merged per layer by a `DirectionBridge` (tanh(W [h_fwd; h_bwd] + b)), so a decoder always
  gets (B, L, H) (an (h, c) pair for LSTM).
- `RNNDecoder` (Cho et al. 2014; d2l `Seq2SeqDecoder`): the context c = the encoder's final
  top-layer hidden state is concatenated to the input embedding at every step; the initial hidden
  state is the encoder's final state; the output layer reads the RNN output alone.
- `AttentionRNNDecoder` (Bahdanau et al. 2015, §3.1 and appendix A): at step t the query is the
  previous decoder hidden state s_{t-1} (top layer), keys = values = the encoder memory; the keys
  are projected once in `init_state` and kept in the state. The RNN input is [embedding; context];
  the output layer reads [RNN output; context; embedding] (the "deep output" of §A.2.2, with a
  linear layer in place of the maxout).

Both decoders satisfy `Decoder` (interfaces.py) and compute `forward` with the same per-step
function `step` uses, so stepping equals teacher forcing. States are frozen, batch-first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.layers.attention import AdditiveAttention
from seqlab.layers.recurrent import DirectionBridge, Recurrent
from seqlab.models.interfaces import DecoderState, Encoded, at_rows
from seqlab.models.seq2seq import Seq2Seq

PAD_ID = 0  # seqlab vocabularies fix <pad> at id 0 (see seqlab/data/vocab.py)


@dataclass(frozen=True)
class RNNSeq2SeqConfig:
    """`[model] kind = "rnn_seq2seq"` in a recipe.

    Attributes:
        cell: "rnn" (Elman, tanh), "gru" or "lstm"; the same for encoder and decoder.
        embed_dim: E, source and target embedding size.
        hidden_size: H, per direction, for encoder and decoder.
        num_layers: L, for encoder and decoder.
        bidirectional: a bidirectional encoder (memory 2H wide, final states bridged to H).
        dropout: on embeddings, between recurrent layers and before the output layer.
        attention: Bahdanau attention decoder; False = d2l's context-at-every-step decoder.
        attention_size: A, the additive attention's tanh layer; None = hidden_size.
        tie_output: share the target embedding with the output layer (Press & Wolf 2017),
            through a Linear(features -> E) when the decoder's features are not E wide.
        own_cells: run seqlab's cells step by step instead of torch's fused kernels (slow).
    """

    cell: Literal["rnn", "gru", "lstm"] = "gru"
    embed_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.2
    attention: bool = True
    attention_size: int | None = None
    tie_output: bool = False
    own_cells: bool = False


class RNNEncoder(nn.Module):
    """Embedding -> dropout -> `Recurrent`, with the final states bridged for a decoder.

    Args:
        embedding: source token embedding (V_src, E).
        rnn: the recurrent stack (input E).
        dropout: on the embeddings.
        bridge: merges the two directions' final states; required when `rnn` is bidirectional.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        rnn: Recurrent,
        dropout: float = 0.0,
        bridge: DirectionBridge | None = None,
    ):
        super().__init__()
        if rnn.num_directions == 2 and bridge is None:
            raise ValueError("a bidirectional RNNEncoder needs a DirectionBridge")
        self.embedding, self.rnn, self.bridge = embedding, rnn, bridge
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_mask: Tensor) -> Encoded:
        """src (B, S) ids, src_mask (B, S) bool, padding on the right.

        Returns:
            Encoded(memory (B, S, D*H) zero at padding, mask, final (B, L, H) or an (h, c) pair).
        """
        x = self.dropout(self.embedding(src))  # (B, S, E)
        memory, final = self.rnn(x, src_mask)  # (B, S, D*H); (B, L*D, H)
        if self.bridge is not None:
            final = self.bridge(final)  # (B, L, H)
        return Encoded(memory, src_mask, final)


@dataclass(frozen=True)
class RNNDecoderState(DecoderState):
    """State of `RNNDecoder`.

    Attributes:
        hidden: (B, L, H) decoder hidden state.
        cell: (B, L, H) LSTM cell state, None for RNN/GRU.
        context: (B, H) the encoder summary fed at every step.
    """

    hidden: Tensor
    cell: Tensor | None
    context: Tensor


@dataclass(frozen=True)
class AttentionDecoderState(DecoderState):
    """State of `AttentionRNNDecoder`.

    Attributes:
        hidden: (B, L, H) decoder hidden state s_{t-1}; its top layer is the next query.
        cell: (B, L, H) LSTM cell state, None for RNN/GRU.
        projected_keys: (B, S, A) W_k memory, computed once in `init_state`.
        memory: (B, S, Hm) encoder outputs (the attention values).
        mask: (B, S) bool, True at real source tokens.
    """

    hidden: Tensor
    cell: Tensor | None
    projected_keys: Tensor
    memory: Tensor
    mask: Tensor


class _RecurrentDecoder(nn.Module):
    """Embedding, recurrent stack, output layer and the state plumbing both decoders share."""

    def __init__(self, embedding: nn.Embedding, rnn: Recurrent, output: nn.Module, dropout: float):
        super().__init__()
        if rnn.num_directions != 1:
            raise ValueError("a decoder's Recurrent must be unidirectional")
        self.embedding, self.rnn, self.output = embedding, rnn, output
        self.dropout = nn.Dropout(dropout)

    def _embed(self, tokens: Tensor) -> Tensor:
        """(B, T) or (B,) ids -> dropout(embedding), (B, T, E) or (B, E)."""
        return self.dropout(self.embedding(tokens))

    def _logits(self, features: Tensor, rows: Tensor | None = None) -> Tensor:
        """(..., F) decoder features -> (..., V); (B, T, F) at flat positions `rows` -> (N, V)."""
        return self.output(at_rows(self.dropout(features), rows))

    def _initial(self, encoded: Encoded) -> tuple[Tensor, Tensor | None]:
        """(hidden, cell), each (B, L, H): the encoder's final state, or zeros without one."""
        final = encoded.final
        if final is None:
            shape = (encoded.batch_size, self.rnn.num_layers, self.rnn.hidden_size)
            zeros = encoded.memory.new_zeros(shape)  # (B, L, H)
            return zeros, (zeros if self.rnn.mode == "lstm" else None)
        return final if isinstance(final, tuple) else (final, None)

    def _run(self, x: Tensor, hidden: Tensor, cell: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, In) from state (hidden, cell) -> (outputs (B, T, H), hidden, cell)."""
        outputs, final = self.rnn(x, None, hidden if cell is None else (hidden, cell))
        hidden, cell = final if isinstance(final, tuple) else (final, None)  # (B, L, H) each
        return outputs, hidden, cell


class RNNDecoder(_RecurrentDecoder):
    """Decoder without attention (Cho et al. 2014; d2l `Seq2SeqDecoder`).

    Input at step t: [embedding(y_{t-1}); c] with c the encoder's final top-layer hidden state;
    initial state = the encoder's final state; logits = W_o s_t (the RNN output alone). The
    recurrence needs no per-step query, so `forward` runs the stack over all T positions at once
    through the same `_advance` that `step` runs over one.

    Args:
        embedding: target embedding (V, E).
        rnn: unidirectional `Recurrent` with input E + H, hidden H, L layers like the encoder's.
        output: maps (..., H) features to (..., V) logits.
        dropout: on embeddings and on the features before `output`.
    """

    def init_state(self, encoded: Encoded) -> RNNDecoderState:
        """Initial hidden state and context c from the encoder's final state."""
        hidden, cell = self._initial(encoded)  # (B, L, H)
        return RNNDecoderState(hidden=hidden, cell=cell, context=hidden[:, -1])

    def _advance(self, emb: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        """emb (B, T, E) -> (features (B, T, H), state after the T positions)."""
        context = state.context.unsqueeze(1).expand(-1, emb.size(1), -1)  # (B, T, H)
        x = torch.cat([emb, context], dim=-1)  # (B, T, E+H)
        outputs, hidden, cell = self._run(x, state.hidden, state.cell)  # (B, T, H)
        return outputs, dataclasses.replace(state, hidden=hidden, cell=cell)

    def forward(self, tgt_in: Tensor, encoded: Encoded, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V), or (N, V) at `rows` only."""
        features, _ = self._advance(self._embed(tgt_in), self.init_state(encoded))  # (B, T, H)
        return self._logits(features, rows)

    def step(self, tokens: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        """tokens (B,) -> (logits (B, V), next state)."""
        features, state = self._advance(self._embed(tokens.unsqueeze(1)), state)  # (B, 1, H)
        return self._logits(features.squeeze(1)), state  # (B, V)


class AttentionRNNDecoder(_RecurrentDecoder):
    """Decoder with additive attention (Bahdanau et al. 2015).

    Step t (eqs. 4-6 and §A.2.2): c_t = Σ_j α_tj h_j with α_t = attention(s_{t-1}, h);
    s_t = RNN([embedding(y_{t-1}); c_t], s_{t-1}); logits = W_o [s_t; c_t; embedding(y_{t-1})].
    Each query depends on the previous step, so `forward` loops over T with the per-step function
    `step` also uses; the keys are projected once (in `init_state`) and the output layer runs once
    over all T features.

    Args:
        embedding: target embedding (V, E).
        attention: `AdditiveAttention(query_size=H, key_size=Hm, num_hiddens=A)`.
        rnn: unidirectional `Recurrent` with input E + Hm, hidden H.
        output: maps (..., H + Hm + E) features to (..., V) logits.
        dropout: on embeddings and on the features before `output`.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        attention: AdditiveAttention,
        rnn: Recurrent,
        output: nn.Module,
        dropout: float = 0.0,
    ):
        super().__init__(embedding, rnn, output, dropout)
        self.attention = attention

    def init_state(self, encoded: Encoded) -> AttentionDecoderState:
        """Initial hidden state from the encoder; the attention keys, projected once."""
        hidden, cell = self._initial(encoded)  # (B, L, H)
        return AttentionDecoderState(
            hidden=hidden,
            cell=cell,
            projected_keys=self.attention.project_keys(encoded.memory),  # (B, S, A)
            memory=encoded.memory,
            mask=encoded.mask,
        )

    def _advance(
        self, emb: Tensor, state: AttentionDecoderState
    ) -> tuple[Tensor, AttentionDecoderState, Tensor]:
        """One step: emb (B, E) -> (features (B, H+Hm+E), next state, weights (B, S))."""
        query = state.hidden[:, -1:]  # (B, 1, H) top layer of s_{t-1}
        context, weights = self.attention(
            query, state.projected_keys, state.memory, state.mask, need_weights=True
        )  # (B, 1, Hm), (B, 1, S)
        x = torch.cat([emb.unsqueeze(1), context], dim=-1)  # (B, 1, E+Hm)
        outputs, hidden, cell = self._run(x, state.hidden, state.cell)  # (B, 1, H)
        features = torch.cat([outputs, context, emb.unsqueeze(1)], dim=-1).squeeze(1)  # (B, F)
        return features, dataclasses.replace(state, hidden=hidden, cell=cell), weights.squeeze(1)

    def _unroll(self, tgt_in: Tensor, encoded: Encoded) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass -> (features (B, T, F), attention weights (B, T, S))."""
        state, emb = self.init_state(encoded), self._embed(tgt_in)  # emb (B, T, E)
        features, weights = [], []
        for t in range(tgt_in.size(1)):
            f, state, w = self._advance(emb[:, t], state)
            features.append(f)
            weights.append(w)
        return torch.stack(features, dim=1), torch.stack(weights, dim=1)  # (B, T, F), (B, T, S)

    def forward(self, tgt_in: Tensor, encoded: Encoded, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V), or (N, V) at `rows` only."""
        features, _ = self._unroll(tgt_in, encoded)  # (B, T, F)
        return self._logits(features, rows)

    def attention_weights(self, tgt_in: Tensor, encoded: Encoded) -> Tensor:
        """Attention weights (B, T, S) of a teacher-forced pass (row t: where y_t looked)."""
        return self._unroll(tgt_in, encoded)[1]

    def step(
        self, tokens: Tensor, state: AttentionDecoderState
    ) -> tuple[Tensor, AttentionDecoderState]:
        """tokens (B,) -> (logits (B, V), next state)."""
        features, state, _ = self._advance(self._embed(tokens), state)  # (B, F)
        return self._logits(features), state  # (B, V)


def _output_layer(in_features: int, vocab_size: int, tied: nn.Embedding | None) -> nn.Module:
    """Linear(F -> V); when tied, Linear(F -> E) then the embedding table as the (V, E) weight."""
    if tied is None:
        return nn.Linear(in_features, vocab_size)
    out = nn.Linear(tied.embedding_dim, vocab_size)
    out.weight = tied.weight
    if in_features == tied.embedding_dim:
        return out
    return nn.Sequential(nn.Linear(in_features, tied.embedding_dim), out)


def _validate(config: RNNSeq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
    sizes = {
        "model.embed_dim": config.embed_dim,
        "model.hidden_size": config.hidden_size,
        "model.num_layers": config.num_layers,
        "model.attention_size": config.attention_size or 1,
        "source vocabulary size": src_vocab_size,
        "target vocabulary size": tgt_vocab_size,
    }
    for key, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {config.dropout}")


def build_rnn_seq2seq(
    config: RNNSeq2SeqConfig, src_vocab_size: int, tgt_vocab_size: int
) -> Seq2Seq:
    """Build an RNN encoder-decoder (with or without attention) for the given vocabularies.

    Raises:
        ConfigError: a non-positive size or a dropout outside [0, 1), naming the key.
    """
    _validate(config, src_vocab_size, tgt_vocab_size)
    c, E, H, L = config, config.embed_dim, config.hidden_size, config.num_layers
    encoder_rnn = Recurrent(c.cell, E, H, L, c.bidirectional, c.dropout, c.own_cells)
    bridge = DirectionBridge(L, H, lstm=c.cell == "lstm") if c.bidirectional else None
    src_embedding = nn.Embedding(src_vocab_size, E, padding_idx=PAD_ID)
    encoder = RNNEncoder(src_embedding, encoder_rnn, c.dropout, bridge)
    memory_size = encoder_rnn.output_size  # Hm = D*H
    embedding = nn.Embedding(tgt_vocab_size, E, padding_idx=PAD_ID)
    tied = embedding if c.tie_output else None
    if not c.attention:
        rnn = Recurrent(c.cell, E + H, H, L, False, c.dropout, c.own_cells)
        output = _output_layer(H, tgt_vocab_size, tied)
        return Seq2Seq(encoder, RNNDecoder(embedding, rnn, output, c.dropout))
    attention = AdditiveAttention(H, memory_size, c.attention_size or H)
    rnn = Recurrent(c.cell, E + memory_size, H, L, False, c.dropout, c.own_cells)
    output = _output_layer(H + memory_size + E, tgt_vocab_size, tied)
    decoder = AttentionRNNDecoder(embedding, attention, rnn, output, c.dropout)
    return Seq2Seq(encoder, decoder)
