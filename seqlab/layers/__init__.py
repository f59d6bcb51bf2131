"""Reusable building blocks: attention, recurrent cells and layers, embeddings, Transformer layers,
and the packed linear layer they are built from.

Layers take plain numbers and sub-modules (never a recipe config), so they can be imported into
other projects on their own: `from seqlab.layers import MultiHeadAttention`.
"""

from seqlab.layers.attention import (
    AdditiveAttention,
    DotProductAttention,
    KeyMask,
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
)
from seqlab.layers.cells import GRUCell, LSTMCell, RNNCell
from seqlab.layers.embedding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from seqlab.layers.linear import PackedLinear, fused_linears, packing
from seqlab.layers.recurrent import DirectionBridge, Recurrent
from seqlab.layers.transformer import (
    PositionwiseFeedForward,
    TransformerDecoderLayer,
    TransformerDecoderStack,
    TransformerEncoderLayer,
    TransformerEncoderStack,
)

__all__ = [
    "AdditiveAttention",
    "DirectionBridge",
    "DotProductAttention",
    "GRUCell",
    "KeyMask",
    "LSTMCell",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "PackedLinear",
    "PositionwiseFeedForward",
    "RNNCell",
    "Recurrent",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerDecoderLayer",
    "TransformerDecoderStack",
    "TransformerEncoderLayer",
    "TransformerEncoderStack",
    "causal_mask",
    "fused_linears",
    "masked_softmax",
    "packing",
]
