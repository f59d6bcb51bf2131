"""The Transformer encoder-decoder (Vaswani et al. 2017): config, encoder, decoder, state, builder.

`build_transformer(config, src_vocab_size, tgt_vocab_size)` assembles a `TransformerSeq2Seq` from
the layers in `seqlab/layers`. The decoder satisfies the `Decoder` protocol of `interfaces.py`:
`init_state` projects the encoder memory into cross-attention keys/values once per source, and each
`step` appends one position to every layer's self-attention cache.

The state is plain: every tensor batch-first, one row per decoder row, so the generic
`select_rows` reorders it. `seqlab.inference.optimize.optimize_for_inference` swaps in a decoder
that shares the cross-attention keys/values among a source's beams, a speed trick kept out of here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.layers.embedding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from seqlab.layers.transformer import KV, TransformerDecoderStack, TransformerEncoderStack
from seqlab.models.interfaces import DecoderState, Encoded, at_rows
from seqlab.models.seq2seq import Seq2Seq

PAD_ID = 0  # seqlab vocabularies fix <pad> at id 0 (see seqlab/data/vocab.py)


@dataclass(frozen=True)
class TransformerConfig:
    """`[model] kind = "transformer"` in a recipe. Defaults: a small base model (d2l/fairseq style).

    Attributes:
        d_model: H, the model size; divisible by num_heads.
        num_heads: attention heads per layer.
        num_encoder_layers, num_decoder_layers: depth of each side.
        d_ff: feed-forward inner size.
        dropout: on embeddings+positions, residual branches and feed-forward activations.
        attention_dropout: on attention weights.
        norm_first: pre-LN (stable without long warm-up) or post-LN (the original paper).
        positional: "sinusoidal" (fixed) or "learned" absolute positions.
        max_len: longest source or target sequence (positions) the model accepts.
        share_embeddings: one embedding table for source and target (needs a joint vocabulary).
        tie_output: the output projection reuses the target embedding (Press & Wolf 2017).
        activation: feed-forward activation, "relu" or "gelu".
    """

    d_model: int = 256
    num_heads: int = 4
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm_first: bool = True
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_len: int = 512
    share_embeddings: bool = False
    tie_output: bool = True
    activation: Literal["relu", "gelu"] = "relu"

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads != 0:
            raise ValueError(
                f"d_model = {self.d_model} is not divisible by num_heads = {self.num_heads}"
            )
        for key in ("d_model", "num_heads", "d_ff", "max_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} = {getattr(self, key)} must be at least 1")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} = {getattr(self, key)} must be in [0, 1)")


@dataclass(frozen=True)
class TransformerState(DecoderState):
    """Decoder state between steps; the generic `select_rows` reorders and expands it.

    Attributes:
        memory_kv: per layer cross-attention (k, v), each (B, h, S, d), from init_state.
        self_kv: per layer self-attention cache (k, v), each (B, h, t, d); t = position.
        memory_mask: (B, S) bool source mask, True at real tokens.
        position: t, the position of the next input token (the same for every row).
    """

    memory_kv: tuple[KV, ...]
    self_kv: tuple[KV, ...]
    memory_mask: Tensor
    position: int = 0


class TransformerEncoder(nn.Module):
    """Embeds, adds positions and runs the encoder stack: (src, src_mask) -> Encoded."""

    def __init__(self, embedding: TokenEmbedding, positional: nn.Module, stack: nn.Module):
        super().__init__()
        self.embedding, self.positional, self.stack = embedding, positional, stack

    def forward(self, src: Tensor, src_mask: Tensor) -> Encoded:
        """src (B, S) ids, src_mask (B, S) bool -> Encoded(memory (B, S, H), src_mask, None)."""
        x = self.positional(self.embedding(src))  # (B, S, H)
        return Encoded(memory=self.stack(x, src_mask), mask=src_mask, final=None)


class TransformerDecoder(nn.Module):
    """Target embedding, positions, decoder stack and output projection; a `Decoder`.

    Args:
        embedding: target token embedding.
        positional: a positional module called as `positional(x, offset)`.
        stack: a `TransformerDecoderStack`.
        output: (H -> V) projection, possibly tied to `embedding.weight`.
    """

    def __init__(
        self,
        embedding: TokenEmbedding,
        positional: nn.Module,
        stack: TransformerDecoderStack,
        output: nn.Linear,
    ):
        super().__init__()
        self.embedding, self.positional = embedding, positional
        self.stack, self.output = stack, output

    def forward(self, tgt_in: Tensor, encoded: Encoded, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V), or (N, V) at `rows` only."""
        x = self.positional(self.embedding(tgt_in))  # (B, T, H)
        memory_kv = self.stack.project_memory(encoded.memory)
        return self.output(at_rows(self.stack(x, memory_kv, encoded.mask), rows))

    def attention_weights(
        self, tgt_in: Tensor, encoded: Encoded, layer: int = -1, head: int | None = None
    ) -> Tensor:
        """Cross-attention weights (B, T, S) of a teacher-forced pass (row t: where y_t looked).

        Read-only (for plots); `forward` is unchanged. Call in eval mode for dropout-free weights.

        Args:
            tgt_in: (B, T) ids starting with BOS.
            encoded: the encoder's output for the sources.
            layer: which decoder layer, 0-based; negative counts from the end (-1: the last).
            head: one head's weights, or None for the mean over heads.

        Raises:
            IndexError: `layer` or `head` out of range.
        """
        x = self.positional(self.embedding(tgt_in))  # (B, T, H)
        memory_kv = self.stack.project_memory(encoded.memory)
        weights = self.stack.cross_attention_weights(x, memory_kv, encoded.mask, layer)
        if head is None:
            return weights.mean(dim=1)  # (B, T, S)
        return weights[:, range(weights.size(1))[head]]  # (B, T, S)

    def init_state(self, encoded: Encoded) -> TransformerState:
        """Cross-attention K/V projected once per source; empty self-attention caches."""
        return TransformerState(
            memory_kv=self.stack.project_memory(encoded.memory),
            self_kv=self.stack.empty_cache(encoded.batch_size, encoded.memory),
            memory_mask=encoded.mask,
            position=0,
        )

    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """tokens (B,) previous outputs (BOS first) -> (logits (B, V), state one position on)."""
        x = self.embedding(tokens.unsqueeze(1))  # (B, 1, H)
        x = self.positional(x, state.position)  # (B, 1, H)
        y, self_kv = self.stack.step(x, state.self_kv, state.memory_kv, state.memory_mask)
        logits = self.output(y.squeeze(1))  # (B, V)
        return logits, dataclasses.replace(state, self_kv=self_kv, position=state.position + 1)


class TransformerSeq2Seq(Seq2Seq):
    """A `Seq2Seq` whose positional tables cap input and output length at `max_len` positions.

    `max_source_len` / `max_target_len` let inference truncate over-long inputs with a warning and
    stop search before it runs out of positions, instead of failing inside the embedding.
    """

    def __init__(self, encoder: TransformerEncoder, decoder: TransformerDecoder, max_len: int):
        super().__init__(encoder, decoder)
        self.max_source_len = self.max_target_len = max_len


def _positional(config: TransformerConfig) -> nn.Module:
    if config.positional == "learned":
        return LearnedPositionalEmbedding(config.max_len, config.d_model, config.dropout)
    return SinusoidalPositionalEncoding(config.d_model, config.max_len, config.dropout)


def _stack_args(config: TransformerConfig) -> tuple:
    return (
        config.d_model,
        config.num_heads,
        config.d_ff,
        config.dropout,
        config.norm_first,
        config.activation,
        config.attention_dropout,
    )


def build_transformer(
    config: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int
) -> TransformerSeq2Seq:
    """Build a Transformer encoder-decoder for the given vocabulary sizes.

    Raises:
        ConfigError: share_embeddings with vocabularies of different sizes. Only sizes are
            checked: the caller must give one joint vocabulary to both sides.
    """
    if config.share_embeddings and src_vocab_size != tgt_vocab_size:
        raise ConfigError(
            f"model.share_embeddings = true needs one joint source/target vocabulary, but the "
            f"source vocabulary has {src_vocab_size} entries and the target {tgt_vocab_size}: "
            "use a joint vocabulary (e.g. one SentencePiece model) or set share_embeddings = false"
        )
    d_model = config.d_model
    src_embedding = TokenEmbedding(src_vocab_size, d_model, padding_idx=PAD_ID)
    tgt_embedding = (
        src_embedding
        if config.share_embeddings
        else TokenEmbedding(tgt_vocab_size, d_model, padding_idx=PAD_ID)
    )
    output = nn.Linear(d_model, tgt_vocab_size, bias=False)
    if config.tie_output:
        output.weight = tgt_embedding.weight
    else:
        nn.init.normal_(output.weight, mean=0.0, std=d_model**-0.5)
    encoder = TransformerEncoder(
        src_embedding,
        _positional(config),
        TransformerEncoderStack(config.num_encoder_layers, *_stack_args(config)),
    )
    decoder = TransformerDecoder(
        tgt_embedding,
        _positional(config),
        TransformerDecoderStack(config.num_decoder_layers, *_stack_args(config)),
        output,
    )
    return TransformerSeq2Seq(encoder, decoder, config.max_len)
