"""`PackedLinear`: an `nn.Linear` whose CPU inference multiplies by a weight packed once.

Decoding multiplies a few rows (batch x beams) by every weight of the decoder at every step. On
CPU, `nn.Linear` hands the row-major (out, in) weight to the BLAS GEMM, which for few rows spends
most of its time reading the weight into its kernel's panel layout, again on every call. oneDNN
(bundled with PyTorch's CPU builds; inductor's CPU linears use it) can pack a weight once into
its blocked layout and reuse it, and it picks its kernels by instruction set, not CPU vendor.
`benchmarks/decode_throughput.py` times whole searches with the packing on and off
(`packing_speedup`): on this project's 2-core AMD EPYC it makes beam 5 at batch 1 about 1.56x
faster, mostly in the (V, H) output projection.

The packed copy is used in eval mode, on CPU, with gradients disabled (search and validation run
under `torch.no_grad` / `inference_mode`), for float32 weights of at least `MIN_PACKED_SIZE`
entries, outside autocast; everywhere else (training, GPU, autocast, other dtypes, small weights)
the layer is exactly `nn.Linear`. Where a PyTorch build lacks oneDNN's packed linear, a
contiguous (in, out) transpose of the weight is used instead, the faster layout for few rows in
BLAS GEMMs. Either copy is rebuilt whenever the weight changes, is never saved, and costs one
more copy of the weight while the model is in eval mode; `train()` and every move or cast
(`.to(...)`) drop it. `packing(False)` switches it off (to compare, or to save that memory).

`fused_linears` runs several layers over one input in one product (self-attention's queries,
keys and values).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor, nn

_ENABLED = True
# Weights smaller than this (64 KiB of float32) stay in the L1 cache and gain nothing from a
# packed copy, and a oneDNN call costs about 10 us more than a BLAS one: a (256 -> 1) product over
# 100 rows takes 16 us packed against 3.5 us (Bahdanau attention's scoring vector).
MIN_PACKED_SIZE = 16384


@contextlib.contextmanager
def packing(enabled: bool) -> Iterator[None]:
    """Within the block, `PackedLinear` packs (True) or is plain `nn.Linear` (False)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = before


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


def _pack(weight: Tensor) -> Tensor:
    """weight (out, in) -> its packed copy: oneDNN's blocked layout, else (in, out) transposed."""
    weight = weight.detach()
    if onednn_packing_available():
        return torch.ops.mkldnn._reorder_linear_weight.default(weight)
    return weight.t().contiguous()  # (in, out)


def _multiply(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., in) times a `_pack`ed weight, plus bias -> (..., out)."""
    flat = x.reshape(-1, x.size(-1))  # (N, in)
    if onednn_packing_available():
        out = torch.ops.mkldnn._linear_pointwise.default(flat, packed, bias, "none", [], "")
    elif bias is None:
        out = torch.mm(flat, packed)
    else:
        out = torch.addmm(bias, flat, packed)
    return out.view(*x.shape[:-1], out.size(-1))  # (..., out)


def _key(weight: Tensor) -> tuple[int, int, int]:
    """Changes whenever the weight does: another tensor, other storage (a dtype or device move
    replaces it), an in-place update (optimizer step, `load_state_dict`: the version counter)."""
    return id(weight), weight.data_ptr(), weight._version


class PackedLinear(nn.Linear):
    """y = x W^T + b, an `nn.Linear` (same parameters, initialisation and state-dict keys) that
    multiplies by a packed copy of W in CPU inference (see the module docstring).

    The weight may be tied to an embedding table (`layer.weight = embedding.weight`); the copy
    follows in-place updates, a new tensor, and dtype or device changes (see `_key`).
    """

    _packed: tuple[tuple, Tensor] | None = None  # (key of the weight, packed copy)
    _stacked: tuple[tuple, Tensor, Tensor | None] | None = None  # see `fused_linears`

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        weight = self._packable_weight(x)
        if weight is None:
            return super().forward(x)
        key, cached = _key(weight), self._packed
        if cached is None or cached[0] != key:
            cached = self._packed = key, _pack(weight)
        return _multiply(x, cached[1], self.bias)

    def _packable_weight(self, x: Tensor) -> Tensor | None:
        """The weight, when this call may use a packed copy (CPU float32 inference outside
        autocast); None when it must run as `nn.Linear`. Cheapest tests first: it runs on
        every call."""
        if not _ENABLED or torch.is_grad_enabled() or self.training or x.device.type != "cpu":
            return None
        weight = self.weight
        if x.dtype != torch.float32 or weight.dtype != torch.float32 or _autocast_on():
            return None
        return weight if weight.numel() >= MIN_PACKED_SIZE else None

    def train(self, mode: bool = True) -> PackedLinear:
        """As `nn.Module.train`; entering training drops the packed copies."""
        if mode:
            self._packed = self._stacked = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        """Every move or cast (`.to`, `.cuda`, `.half`, ...) drops the packed copies: they are
        keyed to the old weight and would never be used again, only kept in memory (a model
        moved to a GPU after CPU inference would keep a CPU copy of every weight)."""
        self._packed = self._stacked = None
        return super()._apply(fn, recurse)


def _bias_or_zeros(layer: PackedLinear) -> Tensor:
    weight = layer.weight
    return weight.new_zeros(layer.out_features) if layer.bias is None else layer.bias.detach()


def fused_linears(layers: tuple[PackedLinear, ...], x: Tensor) -> tuple[Tensor, ...]:
    """Every layer's output for the same input x (..., in): (..., out_i) each.

    Where the layers pack (see `PackedLinear`), their weights are stacked and packed once, and
    the outputs come from one product (views of its columns): self-attention computes its
    queries, keys and values this way, in one product instead of three (for a decoder step's one
    position, three products of 5 rows cost much more than one of three times the width).
    Elsewhere each layer runs on its own, in order, exactly as `nn.Linear`. The stacked copy
    lives on the first layer and is rebuilt when any of the weights changes.
    """
    weights = [layer._packable_weight(x) for layer in layers]
    if any(weight is None for weight in weights):
        return tuple(layer(x) for layer in layers)
    first, key = layers[0], tuple(_key(weight) for weight in weights)
    if first._stacked is None or first._stacked[0] != key:
        bias = None
        if any(layer.bias is not None for layer in layers):
            bias = torch.cat([_bias_or_zeros(layer) for layer in layers])  # (sum out,)
        first._stacked = key, _pack(torch.cat(weights)), bias  # weights: (sum out, in)
    _, packed, bias = first._stacked
    out = _multiply(x, packed, bias)  # (..., sum out)
    return out.split([layer.out_features for layer in layers], dim=-1)
