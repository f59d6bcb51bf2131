"""The output projection to the vocabulary, an `nn.Linear` that decodes faster on CPU.

Decoding multiplies a few rows (batch x beams) by a large (V, H) weight. `nn.Linear` computes
x W^T straight from the row-major (V, H) weight, and CPU BLAS kernels are much slower in that
layout for few rows than with a contiguous (H, V) copy: 5 rows x 256 -> 8,000 take 0.61 ms
against 0.37 ms, 10 rows 1.2 ms against 0.5 ms, and at 1 or 320 rows the two are equal
(`benchmarks/decode_throughput.py` measures the effect on whole searches). `OutputProjection`
keeps such a copy for decoding and uses it only when nothing can need a gradient through it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OutputProjection(nn.Linear):
    """H -> V logits. An `nn.Linear` (same parameters, initialisation and state-dict keys).

    In eval mode on CPU with gradients disabled (search runs under `torch.no_grad`), it
    multiplies by a cached contiguous transpose of the weight. The cache is rebuilt whenever the
    weight changes: a new tensor, an in-place update (optimizer step, `load_state_dict`, both bump
    the tensor's version counter), another dtype or device. It is a plain attribute, never saved
    in a checkpoint, and costs one more (H, V) copy of the weight while the model decodes.
    Everywhere else (training, GPU, gradients enabled) it is `nn.Linear.forward`.

    The weight may be tied to an embedding table (`layer.weight = embedding.weight`).
    """

    _transposed: Tensor | None = None
    _transposed_key: tuple | None = None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., H) -> logits (..., V)."""
        if self.training or torch.is_grad_enabled() or x.device.type != "cpu":
            return super().forward(x)
        flat = x.reshape(-1, x.size(-1))  # (N, H)
        weight_t = self._weight_t()  # (H, V)
        if self.bias is None:
            out = torch.mm(flat, weight_t)  # (N, V)
        else:
            out = torch.addmm(self.bias, flat, weight_t)  # (N, V)
        return out.view(*x.shape[:-1], out.size(-1))

    def _weight_t(self) -> Tensor:
        """The contiguous (H, V) transpose of the current weight, rebuilt when it changed."""
        weight = self.weight
        key = (id(weight), weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._transposed is None or key != self._transposed_key:
            self._transposed = weight.detach().t().contiguous()
            self._transposed_key = key
        return self._transposed

    def train(self, mode: bool = True) -> OutputProjection:
        """As `nn.Module.train`; entering training drops the decoding copy of the weight."""
        if mode:
            self._transposed = self._transposed_key = None
        return super().train(mode)
