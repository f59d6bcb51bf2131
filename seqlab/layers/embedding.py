"""Token embeddings and positional encodings for Transformers.

`TokenEmbedding` scales by sqrt(d_model) (Vaswani et al. 2017, §3.4). The two positional modules
share one call signature, `forward(x, offset=0)`, so a model can swap them: `offset` is the
position of x's first column, an int (all rows alike) or a (B,) tensor, which is how incremental
decoding adds the encoding of position t to the single new token. A position beyond `max_len`
raises a `SeqlabError` saying which limit to raise, instead of an index error deep in torch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.errors import SeqlabError


class TokenEmbedding(nn.Module):
    """Embedding lookup scaled by sqrt(d_model).

    Initialised N(0, d_model^-0.5) (fairseq) so that scaled embeddings have unit variance; the
    padding row is zero and receives no gradient. `weight` is the (V, H) table, which an output
    projection may share (weight tying, Press & Wolf 2017).

    Args:
        vocab_size: V.
        d_model: H.
        padding_idx: id of `<pad>` (0 in seqlab vocabularies), or None.
        scale: multiply by sqrt(d_model).
    """

    def __init__(
        self, vocab_size: int, d_model: int, padding_idx: int | None = 0, scale: bool = True
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale else 1.0
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)
        if padding_idx is not None:
            nn.init.zeros_(self.embed.weight[padding_idx])

    @property
    def weight(self) -> nn.Parameter:
        """The (V, H) embedding table."""
        return self.embed.weight

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> (B, T, H)."""
        return self.embed(ids) * self.scale


def _positions(x: Tensor, offset: int | Tensor, max_len: int) -> Tensor | slice:
    """Positions of x's columns: a slice for an int offset, a (B, T) tensor otherwise."""
    length = x.size(1)
    if isinstance(offset, int):
        last = offset + length - 1
        positions: Tensor | slice = slice(offset, offset + length)
    else:
        positions = offset.view(-1, 1) + torch.arange(length, device=x.device)  # (B, T)
        last = int(positions.max()) if positions.numel() else 0
    if last >= max_len:
        raise SeqlabError(
            f"position {last} is beyond the positional encoding's max_len={max_len}: "
            "raise the model's max_len or filter out longer sequences"
        )
    return positions


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al. 2017, §3.5), added to x, then dropout (as d2l).

    PE(pos, 2i) = sin(pos / 10000^(2i/H)), PE(pos, 2i+1) = cos(pos / 10000^(2i/H)).
    The table is a non-persistent buffer: it is not saved in checkpoints.

    Args:
        d_model: H.
        max_len: number of positions in the table.
        dropout: dropout applied after the addition.
    """

    def __init__(self, d_model: int, max_len: int = 1024, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2).float() / d_model)  # (H/2,)
        angles = position * inv_freq  # (max_len, H/2)
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """x (B, T, H) whose first column sits at position `offset` (int or (B,)) -> (B, T, H)."""
        pe = self.table[_positions(x, offset, self.max_len)]  # (T, H) or (B, T, H)
        return self.dropout(x + pe.to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """Learned absolute positions (Gehring et al. 2017; BERT), added to x, then dropout.

    Args:
        max_len: number of positions that have an embedding.
        d_model: H.
        dropout: dropout applied after the addition.
    """

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)

    def forward(self, x: Tensor, offset: int | Tensor = 0) -> Tensor:
        """x (B, T, H) whose first column sits at position `offset` (int or (B,)) -> (B, T, H)."""
        pe = self.embed.weight[_positions(x, offset, self.max_len)]  # (T, H) or (B, T, H)
        return self.dropout(x + pe)
