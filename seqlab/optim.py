"""Optimiser, learning-rate schedules and gradient clipping for the training loop.

`build_optimizer` makes AdamW with the usual two parameter groups, `build_scheduler` a `LambdaLR`
whose multiplier is a pure function of the step (so its state dict resumes exactly), and
`clip_grad_norm` returns the gradient norm the loop logs. The recipe's numbers come in as plain
arguments; nothing here reads a config object.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from seqlab.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "inverse_sqrt", "cosine", "linear")


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with decoupled weight decay on matrices only.

    The nanoGPT rule: parameters with dim >= 2 (linear and embedding weights) decay; parameters
    with dim < 2 (biases, LayerNorm/RMSNorm gains) do not, since shrinking them towards zero only
    fights the normalisation. Group 0 decays, group 1 does not (either may be empty). Frozen
    parameters (requires_grad=False) are left out; tied weights appear once. With `fused`, the
    fused kernel (one launch for all parameters) where every parameter's device has it, else the
    foreach one (see `adamw_kernel`); without, torch's default choice.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kernel = adamw_kernel(params) if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kernel)


def adamw_kernel(params: list[Tensor]) -> dict[str, bool]:
    """{"fused": True} when every parameter is a floating tensor on a device with torch's fused
    AdamW kernel (CUDA, CPU, MPS, ... as torch reports), else {"foreach": True} with a note on
    stderr saying why."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - an older or newer torch without the helper
        devices = {"cuda"}
    unsupported = sorted(
        {str(p.device) for p in params if p.device.type not in devices or not p.is_floating_point()}
    )
    if not unsupported:
        return {"fused": True}
    logger.info(
        "train.fused_adamw: no fused AdamW kernel for %s; using the foreach implementation",
        ", ".join(unsupported),
    )
    return {"foreach": True}


def lr_multiplier(
    kind: str, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """The schedule as a function of `LambdaLR`'s counter s (optimiser steps already taken).

    The update about to happen is u = s + 1. Every kind warms up linearly, u / warmup_steps, so the
    first update uses peak / warmup_steps (~0) and update `warmup_steps` the peak. Afterwards:

    - constant: 1.
    - inverse_sqrt: sqrt(warmup_steps / u), continuous at the peak (Vaswani et al. 2017, eq. 3,
      rescaled to peak 1, as fairseq's inverse_sqrt); with warmup_steps=0 it is 1 / sqrt(u).
    - cosine: min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2 with
      p = (u - warmup_steps) / (total_steps - warmup_steps) clamped to [0, 1] (Loshchilov & Hutter
      2017 without restarts), so it reaches min_lr_ratio at total_steps and stays there.
    - linear: min_lr_ratio + (1 - min_lr_ratio) * (1 - p), same p.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"train.schedule: unknown schedule {kind!r}; expected one of {SCHEDULES}")
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(
            f"train.warmup_steps must be >= 0 and train.min_lr_ratio in [0, 1]; "
            f"got {warmup_steps} and {min_lr_ratio}"
        )
    decay_steps = total_steps - warmup_steps

    def multiplier(s: int) -> float:
        u = s + 1
        if u < warmup_steps:
            return u / warmup_steps
        if kind == "constant":
            return 1.0
        if kind == "inverse_sqrt":
            return math.sqrt(max(warmup_steps, 1) / u)
        p = min(max((u - warmup_steps) / decay_steps, 0.0), 1.0) if decay_steps > 0 else 1.0
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if kind == "cosine" else 1.0 - p
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return multiplier


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A `LambdaLR` over every group of `optimizer`; see `lr_multiplier` for the curves.

    Call `scheduler.step()` once after each `optimizer.step()`. The multiplier is a closure, so the
    state dict holds only counters (weights_only-safe) and a rebuilt scheduler resumes exactly.
    """
    fn = lr_multiplier(
        kind, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )
    return LambdaLR(optimizer, fn)


def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_norm: float | None) -> float:
    """Total L2 norm of the gradients before clipping; clip to `max_norm` when it is set.

    With `max_norm` None or 0 the norm is only measured. Parameters without a gradient are skipped;
    with none at all the norm is 0.0. Returns a python float (may be inf/nan: the caller decides).
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm(grads))
