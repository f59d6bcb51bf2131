"""BERT (Devlin et al. 2019): config, embeddings, encoder, pretraining heads, classifier, builders.

`BertModel.encode(tokens, segments, mask) -> (B, T, H)` is the public encoder other projects
import. The embeddings are the sum of token, segment and learned position embeddings, then
LayerNorm and dropout (§3, figure 2); the encoder is `seqlab.layers.transformer`'s stack. The
masked-LM head transforms a hidden vector (dense, activation, LayerNorm) and scores it against the
token embedding table itself plus a bias (weights tied, as BERT's `cls/predictions`); it is only
evaluated at the positions chosen for prediction. The next-sentence head is a tanh "pooler" on the
`<cls>` vector followed by a 2-way linear layer (label 1: B follows A). `BertClassifier` reuses
the encoder and pooler with a fresh output layer for sentence classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqlab.layers.embedding import LearnedPositionalEmbedding, TokenEmbedding
from seqlab.layers.transformer import ACTIVATIONS, TransformerEncoderStack

PAD_ID = 0  # seqlab vocabularies fix <pad> at id 0 (see seqlab/data/vocab.py)
ARCHITECTURE_KEYS = (
    "d_model",
    "num_heads",
    "num_layers",
    "d_ff",
    "norm_first",
    "max_len",
    "num_segments",
    "activation",
)


@dataclass(frozen=True)
class BertConfig:
    """`[model] kind = "bert"` in a recipe. Defaults: d2l's small BERT (§15.10).

    Attributes:
        d_model: H; divisible by num_heads.
        num_heads: attention heads per layer.
        num_layers: encoder layers.
        d_ff: feed-forward inner size.
        dropout: on embeddings, residual branches and feed-forward activations.
        attention_dropout: on attention weights.
        norm_first: pre-LN (stable) or post-LN (BERT, d2l).
        max_len: positions with a learned embedding (the longest input).
        num_segments: segment ids (2: sentence A and B).
        activation: feed-forward and MLM-transform activation, "gelu" (BERT) or "relu".
    """

    d_model: int = 128
    num_heads: int = 2
    num_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm_first: bool = True
    max_len: int = 512
    num_segments: int = 2
    activation: Literal["gelu", "relu"] = "gelu"

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads != 0:
            raise ValueError(
                f"d_model = {self.d_model} is not divisible by num_heads = {self.num_heads}"
            )
        for key in ("d_model", "num_heads", "num_layers", "d_ff", "max_len", "num_segments"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} = {getattr(self, key)} must be at least 1")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} = {getattr(self, key)} must be in [0, 1)")


class BertEmbeddings(nn.Module):
    """Token + segment + learned position embeddings, then LayerNorm and dropout.

    Args:
        vocab_size: V. d_model: H. max_len: positions. num_segments: segment ids.
        dropout: after the LayerNorm.
    """

    def __init__(
        self, vocab_size: int, d_model: int, max_len: int, num_segments: int, dropout: float
    ):
        super().__init__()
        self.token = TokenEmbedding(vocab_size, d_model, padding_idx=PAD_ID, scale=False)
        self.segment = nn.Embedding(num_segments, d_model)
        nn.init.normal_(self.segment.weight, mean=0.0, std=d_model**-0.5)
        self.position = LearnedPositionalEmbedding(max_len, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, segments: Tensor) -> Tensor:
        """tokens, segments (B, T) -> (B, T, H)."""
        x = self.token(tokens) + self.segment(segments)  # (B, T, H)
        x = self.position(x)  # (B, T, H), positions 0..T-1
        return self.dropout(self.norm(x))


class MaskedLMHead(nn.Module):
    """transform = LayerNorm(act(W h + b)); logits = transform E^T + bias, E the token table.

    Args:
        embedding: the (V, H) token table, shared (tied), not copied.
        activation: "gelu" or "relu".
    """

    def __init__(self, embedding: nn.Parameter, activation: str):
        super().__init__()
        vocab_size, d_model = embedding.shape
        self.dense = nn.Linear(d_model, d_model)
        self.activation = ACTIVATIONS[activation]()
        self.norm = nn.LayerNorm(d_model)
        self.weight = embedding  # tied: the same Parameter as the token embedding
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (N, H) at the predicted positions -> logits (N, V)."""
        h = self.norm(self.activation(self.dense(hidden)))  # (N, H)
        return h @ self.weight.t() + self.bias  # (N, V)


class BertModel(nn.Module):
    """Embeddings, encoder stack, pooler, MLM and NSP heads. Build with `build_bert`.

    Args:
        config: the architecture. vocab_size: V.
    """

    def __init__(self, config: BertConfig, vocab_size: int):
        super().__init__()
        c = config
        self.config, self.vocab_size = config, vocab_size
        self.embeddings = BertEmbeddings(
            vocab_size, c.d_model, c.max_len, c.num_segments, c.dropout
        )
        self.encoder = TransformerEncoderStack(
            c.num_layers,
            c.d_model,
            c.num_heads,
            c.d_ff,
            c.dropout,
            c.norm_first,
            c.activation,
            c.attention_dropout,
        )
        self.pooler = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.Tanh())
        self.mlm_head = MaskedLMHead(self.embeddings.token.weight, c.activation)
        self.nsp_head = nn.Linear(c.d_model, 2)

    def encode(self, tokens: Tensor, segments: Tensor, mask: Tensor) -> Tensor:
        """Contextual vectors. tokens, segments (B, T) ids; mask (B, T) bool, True at real
        tokens -> (B, T, H). Padding never changes the vectors of real tokens."""
        x = self.embeddings(tokens, segments)  # (B, T, H)
        return self.encoder(x, mask)  # (B, T, H)

    def pool(self, hidden: Tensor) -> Tensor:
        """hidden (B, T, H) -> tanh(W h_<cls> + b) (B, H), the sentence(-pair) vector."""
        return self.pooler(hidden[:, 0])  # (B, H)

    def forward(
        self, tokens: Tensor, segments: Tensor, mask: Tensor, mlm_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Pretraining logits.

        Args:
            tokens, segments: (B, T); mask: (B, T) bool; mlm_mask: (B, T) bool, True at the N
                positions to predict.

        Returns:
            mlm_logits (N, V) in row-major order of `mlm_mask`, nsp_logits (B, 2).
        """
        hidden = self.encode(tokens, segments, mask)  # (B, T, H)
        mlm_logits = self.mlm_head(hidden[mlm_mask])  # (N, V)
        nsp_logits = self.nsp_head(self.pool(hidden))  # (B, 2)
        return mlm_logits, nsp_logits


class BertClassifier(nn.Module):
    """Sentence classification on the pooled `<cls>` vector: dropout, then a linear layer.

    Args:
        bert: the encoder (pretrained or fresh); its MLM/NSP heads are kept but unused.
        num_classes: C. dropout: before the output layer.
    """

    def __init__(self, bert: BertModel, num_classes: int, dropout: float):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.d_model, num_classes)

    def forward(self, tokens: Tensor, segments: Tensor, mask: Tensor) -> Tensor:
        """tokens, segments (B, T), mask (B, T) -> logits (B, C)."""
        pooled = self.bert.pool(self.bert.encode(tokens, segments, mask))  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, C)


def build_bert(config: BertConfig, vocab_size: int, tgt_vocab_size: int | None = None) -> BertModel:
    """A `BertModel` over a V-token vocabulary.

    `tgt_vocab_size` exists for `seqlab.models.build_model`'s uniform (src, tgt) signature; BERT
    has one vocabulary, so it must be None or equal `vocab_size`.
    """
    if tgt_vocab_size is not None and tgt_vocab_size != vocab_size:
        raise ValueError(f"BERT has one vocabulary: got sizes {vocab_size} and {tgt_vocab_size}")
    return BertModel(config, vocab_size)


def build_bert_classifier(config: BertConfig, vocab_size: int, num_classes: int) -> BertClassifier:
    """A fresh `BertClassifier`; load pretrained weights into `.bert` to fine-tune."""
    return BertClassifier(BertModel(config, vocab_size), num_classes, config.dropout)
