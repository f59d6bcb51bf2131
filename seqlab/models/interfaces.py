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
`select_rows` implements beam reordering and beam expansion for every decoder. Every model's own
state is reordered so; a state may override `reorder` and `expand` to do less work, which only
the inference transform does (`seqlab.inference.optimize`: beams that share their source).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

S_ = TypeVar("S_")


def _map_rows(
    value: S_,
    on_state: Callable[[DecoderState], DecoderState],
    on_tensor: Callable[[Tensor], Tensor],
) -> S_:
    """Rebuild `value` with `on_tensor` applied to its tensors and `on_state` to nested states.

    Works on tensors, tuples/lists, frozen dataclasses (recursively) and None; other values (ints,
    strings) are kept. A nested `DecoderState` is handed to `on_state`, so a state that reorders
    itself in its own way (`GroupedTransformerState`) still does so inside a wrapping state.
    """
    if value is None:
        return value
    if isinstance(value, DecoderState):
        return on_state(value)
    if isinstance(value, Tensor):
        return on_tensor(value)
    if isinstance(value, tuple | list):
        return type(value)(_map_rows(v, on_state, on_tensor) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _map_fields(value, lambda v: _map_rows(v, on_state, on_tensor))
    return value


def _map_fields(value: S_, fn: Callable[[Any], Any]) -> S_:
    """A copy of the dataclass `value` with every field f replaced by fn(f)."""
    changes = {f.name: fn(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return dataclasses.replace(value, **changes)


def select_rows(value: S_, index: Tensor) -> S_:
    """Pick rows `index` (B',) along dim 0 of every tensor inside `value` (see `_map_rows`).

    This is how beam search reorders hypotheses (`index` = surviving parents).
    """
    return _map_rows(value, lambda s: s.reorder(index), lambda t: t.index_select(0, index))


def repeat_rows(value: S_, repeats: int) -> S_:
    """Repeat every row of every tensor inside `value` `repeats` times in place (row i becomes
    rows i*repeats .. i*repeats + repeats - 1): how beam search makes K beams per source.
    """
    return _map_rows(
        value, lambda s: s.expand(repeats), lambda t: t.repeat_interleave(repeats, dim=0)
    )


@dataclass(frozen=True)
class DecoderState:
    """Base for decoder states: frozen, all tensors batch-first (dim 0 is B)."""

    def reorder(self, index: Tensor):
        """Return the state of rows `index` (B',): beam reordering and dropping finished rows."""
        return _map_fields(self, lambda v: select_rows(v, index))

    def expand(self, repeats: int):
        """Return the state with every row repeated `repeats` times in place (B*repeats rows:
        row i becomes rows i*repeats .. i*repeats + repeats - 1): one state per beam.
        """
        return _map_fields(self, lambda v: repeat_rows(v, repeats))


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

    def forward(self, tgt_in: Tensor, encoded: Encoded, rows: Tensor | None = None) -> Tensor:
        """tgt_in: (B, T) ids starting with BOS -> logits (B, T, V); with `rows` (N,), flat
        indices into the B*T positions (`real_positions(tgt_mask)`), only those positions'
        logits, (N, V): training then projects nothing at padding (`at_rows`)."""
        ...

    def init_state(self, encoded: Encoded) -> DecoderState:
        """The state before the first step, for sources `encoded` (B rows)."""
        ...

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """tokens: (B,) the previous output (BOS first) -> (logits (B, V), next state)."""
        ...


def at_rows(features: Tensor, rows: Tensor | None) -> Tensor:
    """features (B, T, F) at the flat positions `rows` (N,) -> (N, F); all of them when None."""
    if rows is None:
        return features
    return features.flatten(0, 1).index_select(0, rows)


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True at positions < length."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)  # (S,)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
