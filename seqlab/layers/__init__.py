"""Reusable building blocks: attention, recurrent cells and layers, embeddings, Transformer layers.
Plain PyTorch: CPU inference speed-ups are applied to a built model by
`seqlab.inference.optimize.optimize_for_inference`, never switched on inside a layer.

Layers take plain numbers and sub-modules (never a recipe config), so they can be imported into
other projects on their own: `from seqlab.layers import MultiHeadAttention`.
"""

from seqlab.layers.attention import (
    AdditiveAttention,
    DotProductAttention,
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
    "LSTMCell",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
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
    "masked_softmax",
]
