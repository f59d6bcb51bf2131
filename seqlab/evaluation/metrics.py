"""Small evaluation numbers: perplexity, token accuracy, and a streaming mean.

They are kept apart from the tasks so that every task reports them the same way (perplexity from
a summed negative log-likelihood, accuracy over real tokens only).
"""

from __future__ import annotations

import math

from torch import Tensor


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(nll_sum / n_tokens): the perplexity of `n_tokens` whose negative log-likelihoods
    (natural log) sum to `nll_sum`. Returns inf rather than overflowing.

    Raises:
        ValueError: when n_tokens is 0 (perplexity of nothing is undefined).
    """
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got n_tokens={n_tokens}")
    try:
        return math.exp(nll_sum / n_tokens)
    except OverflowError:
        return float("inf")


def accuracy(predictions: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of positions where `predictions` equals `targets`, over `mask` when given.

    Args:
        predictions: predicted ids, the shape of `targets` (e.g. (B, T)), or scores with one extra
            last dimension (e.g. (B, T, V)), in which case their argmax is the prediction.
        targets: gold ids, e.g. (B, T).
        mask: bool, the shape of `targets`, True where a position counts.

    Raises:
        ValueError: shapes disagree, or no position counts.
    """
    if predictions.dim() == targets.dim() + 1:
        predictions = predictions.argmax(dim=-1)  # (B, T, V) -> (B, T)
    if predictions.shape != targets.shape or (mask is not None and mask.shape != targets.shape):
        raise ValueError(
            f"accuracy: shapes differ: predictions {tuple(predictions.shape)}, targets "
            f"{tuple(targets.shape)}, mask {None if mask is None else tuple(mask.shape)}"
        )
    correct = predictions == targets
    if mask is not None:
        correct = correct[mask.bool()]  # (N,) real positions only
    if correct.numel() == 0:
        raise ValueError("accuracy: no positions to count")
    return correct.float().mean().item()


class MeanAccumulator:
    """A streaming mean: add (sum, count) pairs batch by batch, merge across workers.

    Example: `acc.add(loss_sum, n_tokens)` per batch, then `acc.mean` is the per-token loss.
    """

    def __init__(self, total: float = 0.0, count: int = 0):
        self.total, self.count = float(total), count

    def add(self, value_sum: float, count: int) -> MeanAccumulator:
        """Add `count` items whose values sum to `value_sum`; returns self."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.total += float(value_sum)
        self.count += count
        return self

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        """Fold `other` into this accumulator (e.g. another worker's); returns self."""
        return self.add(other.total, other.count)

    @property
    def mean(self) -> float:
        """total / count. Raises ValueError when nothing was added."""
        if self.count == 0:
            raise ValueError("MeanAccumulator.mean: no items added")
        return self.total / self.count

    def __repr__(self) -> str:
        return f"MeanAccumulator(total={self.total}, count={self.count})"
