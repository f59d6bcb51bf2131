"""Transformer layers (Vaswani et al. 2017, §3.1-3.3): feed-forward, encoder/decoder layers, stacks.

Each sub-layer is wrapped in a residual connection with LayerNorm, either after it ("post-LN",
the original paper: x = LN(x + Sublayer(x))) or before it ("pre-LN", Xiong et al. 2020:
x = x + Sublayer(LN(x)), with one more LayerNorm at the end of the stack), picked by `norm_first`.

Decoders run in two modes. `forward` is teacher forcing over a whole target prefix with a causal
mask. `step` takes one new position and a per-layer self-attention cache of keys and values
(B, h, t, d) that grows by one position per call; cross-attention keys and values are computed
once per source with `project_memory`. Caches are passed in and returned, never kept on modules.

Shapes: legend of `seqlab/models/interfaces.py`; h heads, d = H // h per head, t cached positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from seqlab.layers.attention import MultiHeadAttention

KV = tuple[Tensor, Tensor]  # per-head keys and values, each (B, h, S or t, d)

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 (Vaswani et al. 2017, eq. 2), dropout after act.

    Args:
        d_model: H.
        d_ff: inner size.
        dropout: dropout on the inner activations.
        activation: "relu" (the paper) or "gelu".
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, H) -> (B, T, H)."""
        inner = self.activation(self.linear1(x))  # (B, T, d_ff)
        return self.linear2(self.dropout(inner) if self.training else inner)  # (B, T, H)


class _Residual(nn.Module):
    """Shared residual plumbing: `_pre` before a sub-layer, `_post` after it."""

    norm_first: bool
    dropout: nn.Dropout

    def _pre(self, x: Tensor, norm: nn.LayerNorm) -> Tensor:
        return norm(x) if self.norm_first else x

    def _post(self, x: Tensor, y: Tensor, norm: nn.LayerNorm) -> Tensor:
        x = x + (self.dropout(y) if self.training else y)  # eval: skip the no-op call (decoding)
        return x if self.norm_first else norm(x)


class TransformerEncoderLayer(_Residual):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    Args:
        d_model: H.
        num_heads: h.
        d_ff: feed-forward inner size.
        dropout: residual and feed-forward dropout.
        norm_first: pre-LN (True) or post-LN (False).
        activation: feed-forward activation, "relu" or "gelu".
        attention_dropout: dropout on attention weights.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "relu",
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, S, H), mask (B, S) bool True at real tokens -> (B, S, H)."""
        h = self._pre(x, self.norm1)
        x = self._post(x, self.self_attn(h, h, h, key_mask=mask), self.norm1)
        return self._post(x, self.ffn(self._pre(x, self.norm2)), self.norm2)


class TransformerDecoderLayer(_Residual):
    """Causal self-attention, cross-attention over the source, feed-forward.

    Arguments as `TransformerEncoderLayer`; `memory_size` is the encoder output size if it is
    not d_model.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "relu",
        attention_dropout: float = 0.0,
        memory_size: int | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(
            d_model, num_heads, attention_dropout, kdim=memory_size, vdim=memory_size
        )
        self.ffn = PositionwiseFeedForward(d_model, d_ff, dropout, activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def project_memory(self, memory: Tensor) -> KV:
        """memory (B, S, H) -> cross-attention (k, v), each (B, h, S, d). Once per source."""
        return self.cross_attn.project_kv(memory, memory)

    def forward(self, x: Tensor, memory_kv: KV, memory_mask: Tensor) -> Tensor:
        """Teacher forcing. x (B, T, H), memory_kv from `project_memory`, memory_mask (B, S).

        Target padding needs no mask: with right padding and the causal mask, real positions
        never see a padded one.
        """
        h = self._pre(x, self.norm1)
        x = self._post(x, self.self_attn(h, h, h, causal=True), self.norm1)
        return self._cross_and_ffn(x, memory_kv, memory_mask)  # (B, T, H)

    def cross_attention_weights(self, x: Tensor, memory_kv: KV, memory_mask: Tensor) -> Tensor:
        """The cross-attention weights `forward` computes for input x (B, T, H): (B, h, T, S).

        Read-only, for inspection and plots: it repeats `forward` up to the cross-attention on
        the explicit softmax path (weights before dropout); `forward` itself stays on fused SDPA.
        """
        h = self._pre(x, self.norm1)
        x = self._post(x, self.self_attn(h, h, h, causal=True), self.norm1)
        h = self._pre(x, self.norm2)  # (B, T, H)
        _, weights = self.cross_attn.attend(h, *memory_kv, key_mask=memory_mask, need_weights=True)
        return weights  # (B, h, T, S)

    def step(
        self, x: Tensor, self_kv_cache: KV, memory_kv: KV, memory_mask: Tensor
    ) -> tuple[Tensor, KV]:
        """One new position. x (B, 1, H), self_kv_cache (B, h, t, d) each -> (y (B, 1, H), cache
        (B, h, t+1, d) each). The single query is the last position: no causal mask is needed.
        """
        h = self._pre(x, self.norm1)
        k_new, v_new = self.self_attn.project_kv(h, h)  # (B, h, 1, d) each
        k = torch.cat([self_kv_cache[0], k_new], dim=2)  # (B, h, t+1, d)
        v = torch.cat([self_kv_cache[1], v_new], dim=2)  # (B, h, t+1, d)
        x = self._post(x, self.self_attn.attend(h, k, v), self.norm1)
        return self._cross_and_ffn(x, memory_kv, memory_mask), (k, v)

    def _cross_and_ffn(self, x: Tensor, memory_kv: KV, memory_mask: Tensor) -> Tensor:
        h = self._pre(x, self.norm2)  # (B, T, H)
        x = self._post(x, self.cross_attn.attend(h, *memory_kv, key_mask=memory_mask), self.norm2)
        return self._post(x, self.ffn(self._pre(x, self.norm3)), self.norm3)


class TransformerEncoderStack(nn.Module):
    """`num_layers` encoder layers, plus a final LayerNorm when `norm_first` (pre-LN).

    Args:
        num_layers: number of layers; the other arguments are `TransformerEncoderLayer`'s.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "relu",
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        args = (d_model, num_heads, d_ff, dropout, norm_first, activation, attention_dropout)
        self.layers = nn.ModuleList(TransformerEncoderLayer(*args) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, S, H), mask (B, S) -> (B, S, H)."""
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


class TransformerDecoderStack(nn.Module):
    """`num_layers` decoder layers, plus a final LayerNorm when `norm_first`; caches per layer.

    Args:
        num_layers: number of layers; the other arguments are `TransformerDecoderLayer`'s.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        norm_first: bool = True,
        activation: str = "relu",
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        args = (d_model, num_heads, d_ff, dropout, norm_first, activation, attention_dropout)
        self.layers = nn.ModuleList(TransformerDecoderLayer(*args) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def project_memory(self, memory: Tensor) -> tuple[KV, ...]:
        """memory (B, S, H) -> per layer cross-attention (k, v), each (B, h, S, d)."""
        return tuple(layer.project_memory(memory) for layer in self.layers)

    def empty_cache(self, batch_size: int, like: Tensor) -> tuple[KV, ...]:
        """Per layer empty self-attention (k, v), each (B, h, 0, d), on `like`'s device/dtype."""
        attn = self.layers[0].self_attn
        empty = like.new_zeros(batch_size, attn.num_heads, 0, attn.head_dim)  # (B, h, 0, d)
        return tuple((empty, empty) for _ in self.layers)

    def forward(self, x: Tensor, memory_kv: tuple[KV, ...], memory_mask: Tensor) -> Tensor:
        """Teacher forcing: x (B, T, H) -> (B, T, H)."""
        for layer, kv in zip(self.layers, memory_kv, strict=True):
            x = layer(x, kv, memory_mask)
        return self.final_norm(x)

    def cross_attention_weights(
        self, x: Tensor, memory_kv: tuple[KV, ...], memory_mask: Tensor, layer: int = -1
    ) -> Tensor:
        """Teacher forcing up to `layer` (negative counts from the end): its cross-attention
        weights (B, h, T, S) for input x (B, T, H). Raises IndexError for a layer out of range.
        """
        index = range(len(self.layers))[layer]
        for i in range(index):
            x = self.layers[i](x, memory_kv[i], memory_mask)  # (B, T, H)
        return self.layers[index].cross_attention_weights(x, memory_kv[index], memory_mask)

    def step(
        self,
        x: Tensor,
        caches: tuple[KV, ...],
        memory_kv: tuple[KV, ...],
        memory_mask: Tensor,
    ) -> tuple[Tensor, tuple[KV, ...]]:
        """One position: x (B, 1, H) -> (y (B, 1, H), caches one position longer)."""
        new_caches = []
        for layer, cache, kv in zip(self.layers, caches, memory_kv, strict=True):
            x, cache = layer.step(x, cache, kv, memory_mask)
            new_caches.append(cache)
        return self.final_norm(x), tuple(new_caches)
