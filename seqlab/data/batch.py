"""Padded seq2seq batches: `pad`, the `Batch` dataclass and `collate`.

This is the only module that pads id sequences and builds masks, so every model sees the same
conventions: padding on the right, masks are bool and True at real tokens, the source ends with EOS
(fairseq / d2l convention) and the target is shifted by one, `tgt_in = BOS + y`, `tgt_out = y + EOS`
(teacher forcing: position t of `tgt_in` predicts position t of `tgt_out`).

Shapes use the legend of `seqlab.models.interfaces`: B batch, S source length, T target length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# The project's fixed special ids (see seqlab.data.vocab); repeated here as keyword defaults so that
# this module does not depend on the vocabulary module.
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID, *, max_len: int | None = None
) -> tuple[Tensor, Tensor]:
    """Right-pad id sequences into one tensor and build its mask.

    Args:
        seqs: B sequences of token ids (lists, tuples, 1-D arrays or tensors); an empty sequence
            gives an all-padding row.
        pad_id: the id written at padded positions.
        max_len: pad every row to this length instead of the longest one's. It may not be shorter
            than the longest sequence: real tokens are never cut.

    Returns:
        ids: (B, L) long, the sequences followed by `pad_id`.
        mask: (B, L) bool, True at real tokens.

    Raises:
        ValueError: when a sequence is longer than `max_len`.
    """
    rows = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in seqs]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (B,)
    longest = int(lengths.max()) if rows else 0
    if max_len is None:
        max_len = longest
    elif longest > max_len:
        raise ValueError(f"pad: a sequence has {longest} tokens, more than max_len={max_len}")
    mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)  # (B, L)
    if rows:
        # Row-major order of the True positions equals the concatenation order of the rows.
        ids[mask] = torch.cat(rows)
    return ids, mask


class TensorBatch:
    """Device moves for the frozen batch dataclasses (translation, LM, MLM, classification):
    every Tensor field is mapped, other fields are kept."""

    def _map(self, fn):
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False):
        """The same batch on `device` (a copy only where the device differs)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        """The same batch in page-locked memory; called by `DataLoader(pin_memory=True)`."""
        return self._map(lambda t: t.pin_memory())


@dataclass(frozen=True)
class Batch(TensorBatch):
    """A padded batch of (source, target) pairs for teacher-forced seq2seq training.

    Attributes:
        src: (B, S) long source ids, ending with EOS when collated with `src_eos=True`.
        src_mask: (B, S) bool, True at real source tokens.
        tgt_in: (B, T) long decoder input, BOS followed by the target.
        tgt_out: (B, T) long prediction targets, the target followed by EOS.
        tgt_mask: (B, T) bool, True at real positions of `tgt_out` (and of `tgt_in`).
    """

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_mask: Tensor

    def __post_init__(self) -> None:
        if self.src.shape != self.src_mask.shape:
            raise ValueError(
                f"Batch: src {tuple(self.src.shape)} vs src_mask {tuple(self.src_mask.shape)}"
            )
        shapes = {tuple(t.shape) for t in (self.tgt_in, self.tgt_out, self.tgt_mask)}
        if len(shapes) != 1:
            raise ValueError(f"Batch: tgt_in, tgt_out and tgt_mask differ in shape: {shapes}")
        if self.src.size(0) != self.tgt_in.size(0):
            raise ValueError(f"Batch: {self.src.size(0)} sources but {self.tgt_in.size(0)} targets")
        if self.src_mask.dtype != torch.bool or self.tgt_mask.dtype != torch.bool:
            raise ValueError("Batch: masks must be bool tensors")

    @property
    def size(self) -> int:
        """B, the number of pairs."""
        return self.src.size(0)

    @property
    def num_tokens(self) -> int:
        """Real target tokens (EOS included): the count a per-token loss is divided by."""
        return int(self.tgt_mask.sum())

    @property
    def src_lengths(self) -> Tensor:
        """(B,) long, real source tokens per row (EOS included)."""
        return self.src_mask.sum(dim=1)


def collate(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    src_eos: bool = True,
) -> Batch:
    """Pad (source ids, target ids) pairs into a `Batch`.

    Source rows get `eos_id` appended when `src_eos`; targets become `tgt_in = [bos] + y` and
    `tgt_out = y + [eos]`, so an empty target is allowed (it trains the model to emit EOS). An empty
    source with `src_eos=False` gives an all-padding source row, which attention cannot handle:
    keep `src_eos=True` unless the caller guarantees non-empty sources.

    Args:
        pairs: B (source, target) id sequences, without special tokens.
        pad_id, bos_id, eos_id: the vocabulary's special ids.
        src_eos: append EOS to every source.

    Returns:
        The padded batch; see `Batch` for the shapes.

    Raises:
        ValueError: when `pairs` is empty.
    """
    if not pairs:
        raise ValueError("collate: no pairs to collate")
    srcs = [[*s, eos_id] if src_eos else list(s) for s, _ in pairs]
    src, src_mask = pad(srcs, pad_id)  # (B, S), (B, S)
    tgt_in, tgt_mask = pad([[bos_id, *t] for _, t in pairs], pad_id)  # (B, T), (B, T)
    tgt_out, _ = pad([[*t, eos_id] for _, t in pairs], pad_id)  # (B, T)
    return Batch(src=src, src_mask=src_mask, tgt_in=tgt_in, tgt_out=tgt_out, tgt_mask=tgt_mask)
