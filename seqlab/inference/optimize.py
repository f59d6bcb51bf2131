"""`optimize_for_inference(model)`: CPU decoding speed-ups, applied to a built model.

seqlab's layers and models are plain PyTorch (the model you train is the model you read). The
tricks that make CPU decoding faster live here, as a transform on a built model, each kept only
while `benchmarks/decode_throughput.py` shows it pays (`optimize_speedup` there):

- **Packed linear weights.** Decoding multiplies a few rows (batch x beams) by every weight of
  the decoder at every step. `nn.Linear` hands the row-major (out, in) weight to the BLAS GEMM,
  which for few rows spends most of its time re-reading it into its kernel's layout, on every
  call. oneDNN (bundled with PyTorch's CPU builds) packs a weight once into its blocked layout and
  reuses it: `PackedLinear`. Where the build lacks oneDNN's packed linear (a capability check,
  `onednn_packing_available`), a contiguous (in, out) transpose is used instead, the faster
  layout for few rows in BLAS.
- **Beams share their source** (fairseq's trick; `GroupedTransformerDecoder`). Beam search runs K
  decoder rows per source, all attending to the same source. The plain `TransformerState` holds
  the cross-attention keys/values once per row and copies every layer's at every beam reorder;
  the grouped state keeps them once per source, and the K rows of a source become K queries of
  one cross-attention. Its reorder is also lazy for the self-attention caches: the next step
  gathers the surviving rows while it appends the new position (one copy instead of two), and the
  source mask is prepared once for every layer and step (`KeyMask`).

- **One product for a step's queries, keys and values** (`StackedProjection`): with few rows a
  product costs mostly its fixed overhead, so a decoder step's self-attention multiplies by the
  three weights stacked. Without it beam 5 at batch 1 measured about 13% slower than before the
  move out of the layers (the encoder, run once per sentence, does not need it).

The result is a copy of the module tree that shares the model's parameters and buffers (no
weights are copied, the model itself is left as it was, training mode included), so a model that
keeps training (validation during training) is followed: a packed copy is rebuilt whenever its
weight changes. Outputs are those of the plain model: the same tokens from search, logits equal
up to float rounding (tests/inference/test_optimize.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.layers.transformer import KV, TransformerDecoderLayer
from seqlab.models.interfaces import DecoderState, Encoded, select_rows
from seqlab.models.transformer import TransformerDecoder

logger = logging.getLogger(__name__)

# Weights smaller than this (64 KiB of float32) stay in the L1 cache and gain nothing from a
# packed copy, and a oneDNN call costs about 10 us more than a BLAS one: a (256 -> 1) product over
# 100 rows takes 16 us packed against 3.5 us (Bahdanau attention's scoring vector).
MIN_PACKED_SIZE = 16384


@functools.cache
def onednn_packing_available() -> bool:
    """Whether this PyTorch build can pack a linear weight for oneDNN (checked once, by trial)."""
    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(3, 2))  # (out 3, in 2)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), weight, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(out, torch.full((1, 3), 2.0)))


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


def _key(weight: Tensor) -> tuple[int, int, int]:
    """Changes whenever the weight does: another tensor, other storage (a dtype or device move
    replaces it), an in-place update (optimizer step, `load_state_dict`: the version counter)."""
    return id(weight), weight.data_ptr(), weight._version


class PackedLinear(nn.Linear):
    """An `nn.Linear` (the same parameters, shared with the layer it replaces) that multiplies by
    a packed copy of its weight in CPU float32 inference.

    The packed copy is used in eval mode, on CPU, with gradients disabled, for float32 weights of
    at least `min_size` entries, outside autocast; everywhere else the layer is `nn.Linear`. The
    copy is rebuilt whenever the weight changes, never saved, and dropped by `train()` and by
    every move or cast (`.to(...)`).

    Args:
        linear: the layer whose weight and bias this one uses (not copied).
        min_size: smallest weight (entries) worth packing.
        use_onednn: oneDNN's packed product (None: where `onednn_packing_available`), else the
            transposed-weight BLAS fallback.
    """

    _packed: tuple[tuple, Tensor] | None = None  # (key of the weight, packed copy)

    def __init__(self, linear: nn.Linear, min_size: int, use_onednn: bool | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.min_size = min_size
        self.use_onednn = onednn_packing_available() if use_onednn is None else use_onednn
        self.train(linear.training)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        if not self._packs(x):
            return F.linear(x, self.weight, self.bias)
        key, cached = _key(self.weight), self._packed
        if cached is None or cached[0] != key:
            cached = self._packed = key, self._pack(self.weight.detach())
        flat = x.reshape(-1, x.size(-1))  # (N, in)
        out = self._multiply(flat, cached[1], self.bias)  # (N, out)
        return out.view(*x.shape[:-1], out.size(-1))  # (..., out)

    def _packs(self, x: Tensor) -> bool:
        """Whether this call may use the packed copy; cheapest tests first (every call)."""
        if torch.is_grad_enabled() or self.training or x.device.type != "cpu":
            return False
        weight = self.weight
        if x.dtype != torch.float32 or weight.dtype != torch.float32 or _autocast_on():
            return False
        return weight.numel() >= self.min_size

    def _pack(self, weight: Tensor) -> Tensor:
        """weight (out, in) -> oneDNN's blocked layout, else its (in, out) transpose."""
        if self.use_onednn:
            return torch.ops.mkldnn._reorder_linear_weight.default(weight)
        return weight.t().contiguous()  # (in, out)

    def _multiply(self, flat: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
        """flat (N, in) times a `_pack`ed weight, plus bias -> (N, out)."""
        if self.use_onednn:
            return torch.ops.mkldnn._linear_pointwise.default(flat, packed, bias, "none", [], "")
        if bias is None:
            return torch.mm(flat, packed)
        return torch.addmm(bias, flat, packed)

    def train(self, mode: bool = True) -> PackedLinear:
        """As `nn.Module.train`; entering training drops the packed copy."""
        if mode:
            self._packed = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        """Every move or cast (`.to`, `.cuda`, `.half`, ...) drops the packed copy: keyed to the
        old weight, it would never be used again, only kept in memory."""
        self._packed = None
        return super()._apply(fn, recurse)


class StackedProjection:
    """A decoder step's self-attention queries, keys and values in one product of their stacked
    packed weights: h (N, 1, H) -> (q, k, v), each (N, 1, H).

    With few rows (batch x beams) a product's cost is mostly its fixed overhead and reading its
    weight, so one (3H, H) product beats three (H, H) ones (beam 5 at batch 1: 41 against 48 ms
    a sentence in `benchmarks/decode_throughput.py`'s setting). Where the layer's projections
    would not use packed weights (training, gradients, GPU, other dtypes), it calls them as
    they are. The stacked copy is rebuilt whenever one of the three weights changes.
    """

    def __init__(self, attention: nn.Module):
        self.linears = (attention.q_proj, attention.k_proj, attention.v_proj)
        self._packed: tuple[tuple, Tensor, Tensor | None] | None = None

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        first = self.linears[0]
        if not (isinstance(first, PackedLinear) and first._packs(h)):
            return tuple(linear(h) for linear in self.linears)  # type: ignore[return-value]
        key = tuple(_key(linear.weight) for linear in self.linears)
        if self._packed is None or self._packed[0] != key:
            weight = torch.cat([linear.weight.detach() for linear in self.linears])  # (3H, H)
            biases = [linear.bias for linear in self.linears]
            bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
            self._packed = key, first._pack(weight), bias
        _, packed, bias = self._packed
        flat = h.reshape(-1, h.size(-1))  # (N, H)
        out = first._multiply(flat, packed, bias)  # (N, 3H)
        return tuple(out.view(*h.shape[:-1], -1).chunk(3, dim=-1))  # type: ignore[return-value]


@dataclass(frozen=True)
class KeyMask:
    """A source mask prepared once for every layer's cross-attention at every step.

    Attributes:
        mask: (Bs, S) bool, True at real keys.
        allowed: (Bs, 1, 1, S) bool, all True in rows without a real key; None without padding.
        empty: (Bs, 1, 1, 1) bool, True at rows without a real key (their context is zero, not
            NaN); None when there are none.
    """

    mask: Tensor
    allowed: Tensor | None
    empty: Tensor | None

    @classmethod
    def prepare(cls, key_mask: Tensor) -> KeyMask:
        """key_mask (Bs, S) bool, True at real keys."""
        if bool(key_mask.all()):
            return cls(key_mask, None, None)
        allowed = key_mask[:, None, None, :]  # (Bs, 1, 1, S)
        nonempty = allowed.any(dim=-1, keepdim=True)  # (Bs, 1, 1, 1)
        if bool(nonempty.all()):
            return cls(key_mask, allowed, None)
        return cls(key_mask, allowed | ~nonempty, ~nonempty)

    def rows(self, index: Tensor) -> KeyMask:
        """Rows `index` (Bs',)."""
        return KeyMask(*(None if t is None else t.index_select(0, index) for t in self.fields()))

    def fields(self) -> tuple[Tensor | None, ...]:
        return self.mask, self.allowed, self.empty


@dataclass(frozen=True)
class GroupedTransformerState(DecoderState):
    """`TransformerState` for beams that share their source.

    N decoder rows share Bs = N / group source rows: rows [i*group, (i+1)*group) are the beams of
    source i (`group` is 1 until `expand`). `self_rows` records which cached row each decoder row
    continues; the next `step` gathers those rows while it appends the new position.

    Attributes:
        memory_kv: per layer cross-attention (k, v), each (Bs, h, S, d).
        self_kv: per layer self-attention cache (k, v), each (N0, h, t, d).
        memory_mask: the (Bs, S) source mask, prepared.
        position: t, the position of the next input token.
        group: decoder rows per source row.
        self_rows: (N,) long, the cache row of each decoder row; None: row i is cache row i.
    """

    memory_kv: tuple[KV, ...]
    self_kv: tuple[KV, ...]
    memory_mask: KeyMask
    position: int = 0
    group: int = 1
    self_rows: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """N, the number of decoder rows."""
        if self.self_rows is not None:
            return self.self_rows.numel()
        return self.memory_mask.mask.size(0) * self.group

    def _rows(self, index: Tensor) -> Tensor:
        """Cache rows (N',) of the decoder rows `index` (N',)."""
        return index if self.self_rows is None else self.self_rows.index_select(0, index)

    def expand(self, repeats: int) -> GroupedTransformerState:
        """Each row becomes `repeats` rows; nothing is copied until the next step."""
        index = torch.arange(self.batch_size, device=self.memory_mask.mask.device)
        rows = self._rows(index.repeat_interleave(repeats))  # (N * repeats,)
        return dataclasses.replace(self, group=self.group * repeats, self_rows=rows)

    def reorder(self, index: Tensor) -> GroupedTransformerState:
        """Rows `index` (N',). When each group of `group` new rows comes from one source (beam
        search reordering beams, or dropping whole sources), the source keys/values are kept or
        indexed per source; any other index gives one source row per row."""
        lazy = dataclasses.replace(self, self_rows=self._rows(index))
        sources = index // self.group  # (N',) source row of each new row
        if self.group > 1 and index.numel() % self.group == 0:
            grouped = sources.view(-1, self.group)  # (Bs', group)
            kept = grouped[:, 0]  # (Bs',)
            if index.numel() == self.batch_size:  # the common beam step: same sources, in order
                same = torch.arange(kept.numel(), device=index.device).unsqueeze(1)  # (Bs, 1)
                if bool((grouped == same).all()):
                    return lazy
            if bool((grouped == kept.unsqueeze(1)).all()):
                memory_kv = select_rows(self.memory_kv, kept)
                return dataclasses.replace(
                    lazy, memory_kv=memory_kv, memory_mask=self.memory_mask.rows(kept)
                )
        memory_kv = select_rows(self.memory_kv, sources)
        mask = self.memory_mask.rows(sources)
        return dataclasses.replace(lazy, memory_kv=memory_kv, memory_mask=mask, group=1)


def _append_position(cache: Tensor, new: Tensor, rows: Tensor | None) -> Tensor:
    """cache (N0, h, t, d) at rows (N,) (None: as it is), then new (N, h, 1, d) -> (N, h, t+1, d),
    in one new tensor (earlier states stay valid)."""
    batch, heads, _, dim = new.shape
    t = cache.size(2)
    out = new.new_empty(batch, heads, t + 1, dim)
    if rows is None:
        out[:, :, :t] = cache
    else:
        torch.index_select(cache, 0, rows, out=out[:, :, :t])
    out[:, :, t:] = new
    return out


def _attend(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, mask: KeyMask | None) -> Tensor:
    """Heads q (B, h, Q, d) over k, v (B, h, S, d) -> output projection (B, Q, E)."""
    allowed = None if mask is None else mask.allowed
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, h, Q, d)
    if mask is not None and mask.empty is not None:
        context = context.masked_fill(mask.empty, 0.0)
    batch, _, queries, _ = q.shape
    return attn.out_proj(context.transpose(1, 2).reshape(batch, queries, -1))  # (B, Q, E)


def _layer_step(
    layer: TransformerDecoderLayer,
    x: Tensor,
    cache: KV,
    memory_kv: KV,
    state: GroupedTransformerState,
    qkv: StackedProjection,
) -> tuple[Tensor, KV]:
    """`TransformerDecoderLayer.step` on a grouped state: x (N, 1, H) -> (y (N, 1, H), cache)."""
    attn, cross = layer.self_attn, layer.cross_attn
    h = layer._pre(x, layer.norm1)  # (N, 1, H)
    q, k_new, v_new = (attn._split_heads(p) for p in qkv(h))  # (N, h, 1, d) each
    k = _append_position(cache[0], k_new, state.self_rows)  # (N, h, t+1, d)
    v = _append_position(cache[1], v_new, state.self_rows)  # (N, h, t+1, d)
    x = layer._post(x, _attend(attn, q, k, v, None), layer.norm1)
    h = layer._pre(x, layer.norm2)  # (N, 1, H)
    queries = h.reshape(-1, state.group, h.size(2))  # (Bs, group, H): a source's beams
    q = cross._split_heads(cross.q_proj(queries))  # (Bs, h, group, d)
    y = _attend(cross, q, *memory_kv, state.memory_mask).view_as(h)  # (N, 1, H)
    x = layer._post(x, y, layer.norm2)
    return layer._post(x, layer.ffn(layer._pre(x, layer.norm3)), layer.norm3), (k, v)


class GroupedTransformerDecoder(TransformerDecoder):
    """A `TransformerDecoder` (the same modules, shared) whose search state keeps the source
    keys/values once per source: see the module docstring. `forward` is the plain one."""

    def __init__(self, decoder: TransformerDecoder):
        super().__init__(decoder.embedding, decoder.positional, decoder.stack, decoder.output)
        self.train(decoder.training)
        # a plain list: the projections' weights stay the layers' own (no new state-dict keys)
        self._qkv = [StackedProjection(layer.self_attn) for layer in decoder.stack.layers]

    def train(self, mode: bool = True) -> GroupedTransformerDecoder:
        """As `nn.Module.train`; entering training drops the stacked copies."""
        if mode:
            for qkv in getattr(self, "_qkv", ()):
                qkv._packed = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        """Every move or cast drops the stacked copies (as `PackedLinear._apply`)."""
        for qkv in getattr(self, "_qkv", ()):
            qkv._packed = None
        return super()._apply(fn, recurse)

    def init_state(self, encoded: Encoded) -> GroupedTransformerState:
        """Cross-attention K/V projected once per source; empty self-attention caches."""
        return GroupedTransformerState(
            memory_kv=self.stack.project_memory(encoded.memory),
            self_kv=self.stack.empty_cache(encoded.batch_size, encoded.memory),
            memory_mask=KeyMask.prepare(encoded.mask),
        )

    def step(
        self, tokens: Tensor, state: GroupedTransformerState
    ) -> tuple[Tensor, GroupedTransformerState]:
        """tokens (N,) -> (logits (N, V), state one position on)."""
        x = self.positional(self.embedding(tokens.unsqueeze(1)), state.position)  # (N, 1, H)
        caches = []
        layers = zip(self.stack.layers, state.self_kv, state.memory_kv, self._qkv, strict=True)
        for layer, cache, kv, qkv in layers:
            x, cache = _layer_step(layer, x, cache, kv, state, qkv)
            caches.append(cache)
        logits = self.output(self.stack.final_norm(x).squeeze(1))  # (N, V)
        after = dataclasses.replace(
            state, self_kv=tuple(caches), position=state.position + 1, self_rows=None
        )
        return logits, after


def _share_tensors_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters and buffers are the model's own tensors."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return copy.deepcopy(model, memo={id(t): t for t in tensors})


def _replace(model: nn.Module, kind: type, make) -> int:
    """Replace every module of exactly type `kind` inside `model` by make(module); how many."""
    replaced: dict[int, nn.Module] = {}
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is kind:
                if id(child) not in replaced:
                    replaced[id(child)] = make(child)
                setattr(module, name, replaced[id(child)])
    return len(replaced)


def optimize_for_inference(
    model: nn.Module, *, min_packed_size: int = MIN_PACKED_SIZE, use_onednn: bool | None = None
) -> nn.Module:
    """A copy of `model` for fast CPU inference, sharing its parameters and buffers.

    The model is left untouched (modules, parameters, training mode); the copy has the same
    state-dict keys and gives the same outputs. Its speed-ups apply in eval mode under
    `torch.no_grad` / `inference_mode` on CPU; elsewhere it computes as the model does.

    Args:
        model: a built model (any `nn.Module`; the Transformer and RNN seq2seq models gain most).
        min_packed_size: smallest linear weight (entries) that gets a packed copy.
        use_onednn: oneDNN's packed products (None: where this PyTorch build has them), else a
            transposed weight for BLAS.
    """
    fast = _share_tensors_copy(model)
    packed = _replace(fast, nn.Linear, lambda x: PackedLinear(x, min_packed_size, use_onednn))
    grouped = _replace(fast, TransformerDecoder, GroupedTransformerDecoder)
    logger.debug("optimize_for_inference: %d linears packed, %d decoders grouped", packed, grouped)
    return fast
