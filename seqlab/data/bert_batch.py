"""Batches of `<cls> A <sep> B <sep>` inputs for BERT-style models, and their collate functions.

`MLMBatch` (pretraining: corrupted tokens, MLM targets, NSP labels) and `ClassificationBatch`
(fine-tuning: tokens and a label per sentence). Padding is `seqlab.data.batch.pad`'s: on the right,
with masks True at real tokens; segment ids are padded with 0. Corruption happens here, at collate
time, with one generator per example (`seqlab.data.masking.example_rng`), so every epoch sees new
masks while a given (seed, epoch, example) always gets the same ones.

Shapes: B batch, T padded length (legend of `seqlab.models.interfaces`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqlab.data.batch import TensorBatch, pad
from seqlab.data.masking import Masker, example_rng


@dataclass(frozen=True)
class MLMBatch(TensorBatch):
    """One pretraining batch.

    Attributes:
        tokens: (B, T) corrupted ids the model reads.
        segments: (B, T) 0 for `<cls> A <sep>`, 1 for `B <sep>`, 0 at padding.
        mask: (B, T) bool, True at real tokens.
        mlm_targets: (B, T) original ids (the MLM targets where `mlm_mask`).
        mlm_mask: (B, T) bool, True at the positions chosen for prediction.
        nsp_labels: (B,) 1 when B is the true next sentence of A, else 0.
    """

    tokens: Tensor
    segments: Tensor
    mask: Tensor
    mlm_targets: Tensor
    mlm_mask: Tensor
    nsp_labels: Tensor

    @property
    def size(self) -> int:
        """B, the number of sentence pairs."""
        return self.tokens.size(0)

    @property
    def num_tokens(self) -> int:
        """The number of MLM predictions: the trainer normalises the loss by it."""
        return int(self.mlm_mask.sum())


@dataclass(frozen=True)
class ClassificationBatch(TensorBatch):
    """One classification batch: `<cls> sentence <sep>` ids (B, T), segments (B, T) of zeros,
    mask (B, T) bool, labels (B,)."""

    tokens: Tensor
    segments: Tensor
    mask: Tensor
    labels: Tensor

    @property
    def size(self) -> int:
        return self.tokens.size(0)

    @property
    def num_tokens(self) -> int:
        """B: the classification loss is normalised per sentence."""
        return self.size


def collate_mlm(
    rows: Sequence[tuple[int, Sequence[int], Sequence[int], int]],
    *,
    masker: Masker,
    seed: int,
    stream: int,
    epoch: int,
) -> MLMBatch:
    """Corrupt and pad rows of (row index, packed ids, segment ids, is_next).

    Each row's masks come from `example_rng(seed, stream, epoch, row index)`.
    """
    inputs, targets, chosen = [], [], []
    for index, ids, _, _ in rows:
        original = np.asarray(ids, dtype=np.int64)  # (L,)
        corrupted, picked = masker(original, example_rng(seed, stream, epoch, index))
        inputs.append(corrupted)
        targets.append(original)
        chosen.append(picked)
    tokens, mask = pad(inputs)  # (B, T)
    mlm_targets, _ = pad(targets)  # (B, T)
    mlm_mask, _ = pad([p.astype(np.int64) for p in chosen])  # (B, T)
    segments, _ = pad([s for _, _, s, _ in rows])  # (B, T)
    nsp = torch.tensor([int(n) for _, _, _, n in rows], dtype=torch.long)  # (B,)
    return MLMBatch(tokens, segments, mask, mlm_targets, mlm_mask.bool(), nsp)


def collate_classification(rows: Sequence[tuple[Sequence[int], int]]) -> ClassificationBatch:
    """Pad rows of (`<cls> sentence <sep>` ids, label)."""
    tokens, mask = pad([ids for ids, _ in rows])  # (B, T)
    segments = torch.zeros_like(tokens)  # (B, T): one segment
    labels = torch.tensor([int(label) for _, label in rows], dtype=torch.long)  # (B,)
    return ClassificationBatch(tokens, segments, mask, labels)
