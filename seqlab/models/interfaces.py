"""The contracts between encoders, decoders and search. Read this file first.

Dimension legend (used in every shape comment of the package):
    B  batch (times beam size inside beam search)
    S  source length
    T  target length
    H  hidden / model size
    V  vocabulary size
    K  beam size
    L  layers (times directions where stated)

Masks are bool tensors, True at real tokens, False at padding.

Why these contracts exist: `greedy_search`, `beam_search` and `sample` are written once, against
`Decoder` alone. An RNN decoder with Bahdanau attention, a Transformer decoder and a language model
all satisfy it, so search never asks which model it decodes. Decoder state is passed in and
returned (never kept on the module), and every tensor in a state is batch-first, so a single generic
`select_rows` implements beam reordering and beam expansion for every decoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

S_ = TypeVar("S_")


def select_rows(value: S_, index: Tensor) -> S_:
    """Pick rows `index` (shape (B',)) along dim 0 of every tensor inside `value`.

    Works on tensors, tuples/lists of them, frozen dataclasses (recursively) and None. Non-tensor
    fields (ints, strings) are kept as they are. This is how beam search reorders hypotheses
    (`index` = surviving parents) and expands one state per source into K beams
    (`index` = arange(B).repeat_interleave(K)).
    """
    if value is None:
        return value
    if isinstance(value, Tensor):
        return value.index_select(0, index)
    if isinstance(value, tuple | list):
        return type(value)(select_rows(v, index) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        changes = {f.name: select_rows(getattr(value, f.name), index) for f in fields}
        return dataclasses.replace(value, **changes)
    return value


@dataclass(frozen=True)
class DecoderState:
    """Base for decoder states: frozen, all tensors batch-first (dim 0 is B)."""

    def reorder(self, index: Tensor):
        """Return the state of rows `index` (B',): beam reordering and expansion."""
        return select_rows(self, index)


@dataclass(frozen=True)
class Encoded:
    """What an encoder hands to a decoder.

    Attributes:
        memory: (B, S, H) one vector per source position (H may be 2*hidden when bidirectional).
        mask: (B, S) bool, True at real source tokens.
        final: the encoder's summary for initialising a decoder, batch-first: an RNN's final hidden
            state (B, L, H), an LSTM's (h, c) pair of those, or None for encoders without one.
    """

    memory: Tensor
    mask: Tensor
    final: Any = None

    @property
    def batch_size(self) -> int:
        return self.memory.size(0)

    @property
    def lengths(self) -> Tensor:
        """(B,) number of real source tokens per row."""
        return self.mask.sum(dim=1)

    def reorder(self, index: Tensor) -> Encoded:
        return select_rows(self, index)


@runtime_checkable
class Encoder(Protocol):
    """Maps a padded source batch to `Encoded`."""

    def __call__(self, src: Tensor, src_mask: Tensor) -> Encoded:
        """src: (B, S) token ids; src_mask: (B, S) bool."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """A target-side model usable both for teacher-forced training and step-wise search.

    `forward` is called during training on a whole target prefix; `init_state` once per batch of
    sources before search (this is where per-source work, like projecting attention keys, belongs);
    `step` once per generated position. In eval mode, stepping through `tgt_in` token by token gives
    the same logits as `forward` (a contract test checks this for every decoder).
    """

    def forward(self, tgt_in: Tensor, encoded: Encoded) -> Tensor:
        """tgt_in: (B, T) ids starting with BOS -> logits (B, T, V)."""
        ...

    def init_state(self, encoded: Encoded) -> DecoderState:
        """The state before the first step, for sources `encoded` (B rows)."""
        ...

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """tokens: (B,) the previous output (BOS first) -> (logits (B, V), next state)."""
        ...


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at positions < length."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)  # (S,)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
