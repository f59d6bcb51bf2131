"""The two batch orders every sentence task uses, from a recipe's `[train]` budget.

Training: length-bucketed batches under `max_tokens` / `batch_size`, shuffled from the recipe's
seed and epoch, sharded by rank under torchrun. Validation: the same budget, sorted by length,
unshuffled and unsharded, so every rank and every run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqlab.config import Recipe, TrainConfig
from seqlab.data.sampler import BucketBatchSampler


def training_sampler(
    lengths: Sequence[int] | Sequence[tuple[int, int]],
    recipe: Recipe,
    *,
    rank: int = 0,
    world: int = 1,
) -> BucketBatchSampler:
    """The shuffled, rank-sharded training sampler for examples of `lengths`."""
    return BucketBatchSampler(
        lengths,
        max_tokens=recipe.train.max_tokens,
        batch_size=recipe.train.batch_size,
        shuffle=True,
        seed=recipe.seed,
        num_replicas=world,
        rank=rank,
    )


def validation_batches(
    lengths: Sequence[int] | Sequence[tuple[int, int]], train: TrainConfig
) -> list[list[int]]:
    """Index batches for validation: length-sorted, within the training budget, all ranks alike."""
    order = BucketBatchSampler(
        lengths, max_tokens=train.max_tokens, batch_size=train.batch_size, shuffle=False
    )
    return list(order)
