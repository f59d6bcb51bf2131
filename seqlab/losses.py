"""Token-level losses over padded batches.

`masked_cross_entropy` is the one loss every task uses (translation, language modelling, masked LM):
cross-entropy summed or averaged over the real tokens named by a bool mask, with optional label
smoothing. It lives apart from the tasks so that all of them share the same padding rule (padding
never changes the loss or its gradients) and the same float32 arithmetic under mixed precision.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["sum", "mean", "none"]


def real_positions(mask: Tensor) -> Tensor:
    """(N,) long: the flat indices (row-major over B*T) of the True entries of mask (B, T), the
    positions `x[mask]` selects. Decoders take them to compute logits at real tokens only."""
    return mask.flatten().nonzero().squeeze(1)


def token_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Per-token cross-entropy, float32: logits (N, V) of N real tokens, targets (N,) -> (N,).

    Label smoothing as in `masked_cross_entropy`. For logits a decoder computed at real positions
    only (`real_positions`), with targets picked at the same positions.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    nll = -log_probs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)  # (N,)
    if label_smoothing > 0.0:
        uniform = -log_probs.mean(dim=-1)  # (N,)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return nll


def masked_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: Reduction = "sum",
) -> Tensor:
    """Cross-entropy of `targets` under `logits` at the positions where `mask` is True.

    Label smoothing follows Szegedy et al. 2016 ("Rethinking the Inception Architecture", sec. 7)
    as torch's `F.cross_entropy(label_smoothing=eps)` does: the target distribution is
    `(1 - eps) * onehot(y) + eps / V` (the smoothing mass is spread over all V classes, the gold
    one included), so per token

        loss = (1 - eps) * -log p(y) + eps * mean_c(-log p(c)).

    Only real positions are gathered before the softmax, so whatever sits at padding (any target id,
    even -100 or out of range; any logit, even NaN) changes neither the loss nor the gradients.
    The arithmetic is float32 even for float16/bfloat16 logits.

    Args:
        logits: (B, T, V) unnormalised scores.
        targets: (B, T) gold ids; values at padding are ignored.
        mask: (B, T) bool, True at real tokens.
        label_smoothing: eps in [0, 1).
        reduction: "sum" over real tokens, "mean" per real token (NaN when there are none, as
            torch), or "none" for a (B, T) float32 tensor with zeros at padding.

    Returns:
        A float32 scalar, or (B, T) for reduction="none".
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            f"expected logits (B, T, V), targets and mask (B, T); got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    mask = mask.bool()
    nll = token_cross_entropy(logits[mask], targets[mask], label_smoothing)  # (N,)
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.sum() / nll.numel() if nll.numel() else nll.sum() * float("nan")
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)  # (B, T)
    return out.masked_scatter(mask, nll)
