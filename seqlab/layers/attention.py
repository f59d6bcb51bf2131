"""Attention: masked softmax, additive (Bahdanau), scaled dot-product and multi-head attention.

Everything here is stateless between calls: modules hold parameters only. Where a caller attends
to the same keys many times (a decoder stepping over one source), the key side is projected once
by the caller (`AdditiveAttention.project_keys`, `MultiHeadAttention.project_kv`) and handed back
on every call; see the decoder states in `seqlab/models`.

Masks follow the package convention: bool, True at real tokens (keys that may be attended to).
`masked_softmax` also accepts d2l-style valid lengths. Masked keys get weight exactly 0, and a
query with no real key at all gets all-zero weights (a zero context), never NaN.

Shapes use the legend of `seqlab/models/interfaces.py`, plus Q (queries), D (query/key size),
A (additive attention size), E (model size of multi-head attention), h (heads), d (E // h).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _allowed_keys(valid: Tensor, scores: Tensor) -> Tensor:
    """Turn lengths or a bool mask into a bool mask broadcastable to `scores` (B, Q, K)."""
    num_keys = scores.size(-1)
    if valid.dtype == torch.bool:
        if valid.dim() == 2:  # (B, K) key mask
            return valid.unsqueeze(1)  # (B, 1, K)
        return valid  # (B, Q, K)
    positions = torch.arange(num_keys, device=scores.device)  # (K,)
    if valid.dim() == 1:  # (B,) one length per row
        return positions < valid.view(-1, 1, 1)  # (B, 1, K)
    return positions < valid.unsqueeze(-1)  # (B, Q, K)


def softmax_where(scores: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over the last dim of `scores` restricted to `allowed` (bool, broadcastable).

    Disallowed entries get weight exactly 0; a row with nothing allowed gets all zeros (not NaN).
    A large finite negative fill (not -inf) keeps such rows finite before they are zeroed.
    """
    fill = torch.finfo(scores.dtype).min
    weights = torch.softmax(scores.masked_fill(~allowed, fill), dim=-1)
    return weights.masked_fill(~allowed, 0.0)


def masked_softmax(scores: Tensor, valid: Tensor | None = None) -> Tensor:
    """Softmax over keys that ignores padding (d2l `masked_softmax`, with bool masks too).

    Args:
        scores: (B, Q, K) attention scores.
        valid: which keys are real, one of
            - None: plain softmax;
            - integer (B,) or (B, Q): valid lengths, keys at positions >= length are masked;
            - bool (B, K) or (B, Q, K): True at real keys (the package's mask convention).

    Returns:
        (B, Q, K) weights; masked keys get exactly 0, rows without any real key are all 0.
    """
    if valid is None:
        return torch.softmax(scores, dim=-1)
    return softmax_where(scores, _allowed_keys(valid, scores))


class AdditiveAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015, eq. 6 and appendix A.1.2).

    e_ij = v^T tanh(W_q q_i + W_k k_j), alpha = masked softmax_j(e), context_i = sum_j alpha_ij v_j.
    The key projection W_k k_j does not depend on the query, so a decoder calls `project_keys` once
    per source (in `init_state`) and passes the result to every `forward`.

    Args:
        query_size: size of the query vectors (the decoder hidden state).
        key_size: size of the keys (the encoder outputs).
        num_hiddens: A, the size of the tanh layer.
        dropout: dropout on the attention weights.
    """

    def __init__(self, query_size: int, key_size: int, num_hiddens: int, dropout: float = 0.0):
        super().__init__()
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys (B, S, Hk) -> W_k keys (B, S, A). Call once per source."""
        return self.W_k(keys)

    def forward(
        self,
        query: Tensor,
        projected_keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from `query` over the source.

        Args:
            query: (B, Q, Hq) decoder states (Q = 1 when stepping).
            projected_keys: (B, S, A) from `project_keys`.
            values: (B, S, Hv) usually the encoder outputs themselves.
            mask: (B, S) bool, True at real source tokens (or valid lengths, see masked_softmax).
            need_weights: also return the attention weights.

        Returns:
            context (B, Q, Hv), or (context, weights (B, Q, S)) when `need_weights`.
        """
        queries = self.W_q(query)  # (B, Q, A)
        features = torch.tanh(queries.unsqueeze(2) + projected_keys.unsqueeze(1))  # (B, Q, S, A)
        scores = self.w_v(features).squeeze(-1)  # (B, Q, S)
        weights = masked_softmax(scores, mask)  # (B, Q, S)
        context = torch.bmm(self.dropout(weights), values)  # (B, Q, Hv)
        return (context, weights) if need_weights else context


class DotProductAttention(nn.Module):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1), the explicit reference version.

    softmax(Q K^T / sqrt(D)) V, with masked keys at weight 0. `MultiHeadAttention` uses the fused
    `scaled_dot_product_attention`; this one exposes every step and is what tests compare with.
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """queries (B, Q, D), keys (B, S, D), values (B, S, Hv); mask as in `masked_softmax`.

        Returns:
            context (B, Q, Hv), or (context, weights (B, Q, S)) when `need_weights`.
        """
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(queries.size(-1))  # (B, Q, S)
        weights = masked_softmax(scores, mask)  # (B, Q, S)
        context = torch.bmm(self.dropout(weights), values)  # (B, Q, Hv)
        return (context, weights) if need_weights else context


def _sdpa_masked(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, p: float) -> Tensor:
    """SDPA with a bool mask; queries with no allowed key get a zero context instead of NaN."""
    if allowed is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    nonempty = allowed.any(dim=-1, keepdim=True)  # (B, 1, Q or 1, 1)
    safe = allowed | ~nonempty  # such rows attend anywhere, then are zeroed
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=p)
    return context.masked_fill(~nonempty, 0.0)  # (B, h, Q, d)


def _explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, p: float
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d)) v, step by step -> (context (B, h, Q, d), weights (B, h, Q, S)).

    The weights are returned before dropout (what one plots); dropout applies when p > 0.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, Q, S)
    weights = torch.softmax(scores, -1) if allowed is None else softmax_where(scores, allowed)
    return F.dropout(weights, p) @ v, weights


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> Tensor:
    """(Q, S) bool, True where query i may see key j: j <= i + (S - Q).

    Aligned bottom-right: the queries are the last Q positions of the S keys, which is the usual
    self-attention (Q == S) and also a chunk of new positions appended to a cache.
    """
    ones = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=num_keys - num_queries)  # (Q, S)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, §3.2.2) on `F.scaled_dot_product_attention`.

    MultiHead(Q, K, V) = Concat(head_1..head_h) W_o, head_i = Attention(Q W_q^i, K W_k^i, V W_v^i).
    The projections are separate so that the key/value side can be projected once and reused:
    `project_kv` gives per-head K/V, `attend` projects the queries and attends. A decoder caches
    cross-attention K/V once per source and grows its self-attention K/V by one position per step.
    When stepping with such a cache the single query is the last position, so it may see every
    cached key and `causal` is not needed.

    Args:
        d_model: E, the size of queries and of the output.
        num_heads: h; E must be divisible by h.
        dropout: dropout on the attention weights (training only).
        bias: whether the four projections have biases.
        kdim, vdim: sizes of keys and values when they differ from E (cross-attention).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases, as `torch.nn.MultiheadAttention`."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, S, d)

    def project_kv(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """keys (B, S, kdim), values (B, S, vdim) -> per-head (k, v), each (B, h, S, d)."""
        return self._split_heads(self.k_proj(keys)), self._split_heads(self.v_proj(values))

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Project keys and values, then `attend`. query (B, Q, E), key/value (B, S, kdim/vdim)."""
        k, v = self.project_kv(key, value)  # (B, h, S, d) each
        return self.attend(query, k, v, key_mask, causal, need_weights)

    def attend(
        self,
        query: Tensor,
        k: Tensor,
        v: Tensor,
        key_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from `query` over already projected keys and values.

        Args:
            query: (B, Q, E).
            k, v: (B, h, S, d) from `project_kv` (or a cache of them).
            key_mask: (B, S) bool, True at real keys; masked keys get weight 0 and a query with
                no real key gets a zero context (before the output projection), never NaN.
            causal: query i sees keys j <= i + (S - Q) only (see `causal_mask`).
            need_weights: use the explicit softmax path and also return the weights.

        Returns:
            output (B, Q, E), or (output, weights (B, h, Q, S)) when `need_weights`.
        """
        batch, num_queries, _ = query.shape
        q = self._split_heads(self.q_proj(query))  # (B, h, Q, d)
        p = self.dropout if self.training else 0.0
        weights = None
        if causal and key_mask is None and num_queries == k.size(2) and not need_weights:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            allowed = self._allowed(key_mask, causal, num_queries, k.size(2), q.device)
            if need_weights:
                context, weights = _explicit_attention(q, k, v, allowed, p)  # (B, h, Q, d)
            else:
                context = _sdpa_masked(q, k, v, allowed, p)  # (B, h, Q, d)
        context = context.transpose(1, 2).reshape(batch, num_queries, -1)  # (B, Q, E)
        output = self.out_proj(context)  # (B, Q, E)
        return (output, weights) if need_weights else output

    @staticmethod
    def _allowed(
        key_mask: Tensor | None, causal: bool, num_queries: int, num_keys: int, device: torch.device
    ) -> Tensor | None:
        """Combined bool mask broadcastable to (B, h, Q, S), or None when everything is allowed."""
        allowed = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        if causal and num_queries > 1:
            tri = causal_mask(num_queries, num_keys, device)  # (Q, S)
            allowed = tri if allowed is None else allowed & tri  # (B, 1, Q, S)
        return allowed
