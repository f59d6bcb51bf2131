"""Reusable checks of the `Decoder` contract (seqlab/models/interfaces.py) for any model family.

Import them from a model's tests:
`from tests.models.contract import check_step_equals_forward`.
Each puts the module in eval mode, runs without gradients and fails with an AssertionError.

- `check_step_equals_forward`: feeding tgt_in one token at a time through `init_state`/`step`
  gives the logits of teacher-forced `forward`, and `forward` at some positions only (`rows`)
  gives those positions' logits.
- `check_reorder_commutes`: reordering/expanding a state mid-sequence (what beam search does) and
  stepping on equals stepping the reordered rows from the start.
- `check_source_padding_invariance`: extra pad columns on the source change no real output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.losses import real_positions
from seqlab.models.interfaces import Encoded

BOS_ID = 2  # seqlab vocabularies fix <bos> at id 2


def step_logits(decoder: nn.Module, encoded: Encoded, tokens: Tensor):
    """Feed tokens (B, T) one at a time from `init_state` -> (logits (B, T, V), final state)."""
    state, logits = decoder.init_state(encoded), []
    for t in range(tokens.size(1)):
        out, state = decoder.step(tokens[:, t], state)  # (B, V)
        logits.append(out)
    return torch.stack(logits, dim=1), state


@torch.no_grad()
def check_step_equals_forward(
    decoder: nn.Module, encoded: Encoded, tgt_in: Tensor, atol: float = 1e-5
) -> None:
    """Stepping through tgt_in (B, T) equals `decoder(tgt_in, encoded)` position by position."""
    decoder.eval()
    expected = decoder(tgt_in, encoded)  # (B, T, V)
    stepped, _ = step_logits(decoder, encoded, tgt_in)  # (B, T, V)
    assert expected.shape[:2] == tgt_in.shape, f"forward gave {tuple(expected.shape)}"
    torch.testing.assert_close(stepped, expected, atol=atol, rtol=0)
    # logits at some positions only (what training asks for: real target tokens)
    keep = torch.rand(tgt_in.shape, generator=torch.Generator().manual_seed(0)) < 0.6  # (B, T)
    selected = decoder(tgt_in, encoded, real_positions(keep))  # (N, V)
    torch.testing.assert_close(selected, expected[keep], atol=atol, rtol=0)


@torch.no_grad()
def check_reorder_commutes(
    decoder: nn.Module, encoded: Encoded, tokens: Tensor, seed: int = 0, atol: float = 1e-5
) -> None:
    """state.reorder(index) then step == step on rows `index` of everything from the start.

    tokens (B, T), T >= 2: the first T-1 are stepped with the original rows, then the state is
    reordered with an index that permutes, repeats and drops rows (as beam search does), then
    the last token of the chosen rows is stepped. The reference encodes rows `index` afresh
    (`encoded.reorder(index)`, i.e. beam expansion) and steps all T tokens.
    """
    decoder.eval()
    batch, length = tokens.shape
    assert length >= 2, "need at least two tokens to reorder in the middle"
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, batch, (batch + 1,), generator=gen)  # (B+1,) with repeats
    index = index.to(tokens.device)
    _, state = step_logits(decoder, encoded, tokens[:, :-1])
    reordered = state.reorder(index)
    got, got_state = decoder.step(tokens[index, -1], reordered)  # (B+1, V)
    expected, want_state = step_logits(decoder, encoded.reorder(index), tokens[index])
    torch.testing.assert_close(got, expected[:, -1], atol=atol, rtol=0)
    # the states agree too: one more step from each gives the same logits
    again = tokens[index, 0]
    torch.testing.assert_close(
        decoder.step(again, got_state)[0], decoder.step(again, want_state)[0], atol=atol, rtol=0
    )


@torch.no_grad()
def check_source_padding_invariance(
    model: nn.Module,
    src: Tensor,
    src_mask: Tensor,
    tgt_in: Tensor | None = None,
    extra: int = 3,
    atol: float = 1e-5,
) -> None:
    """Appending `extra` pad columns to the source changes neither memory nor logits.

    Args:
        model: a Seq2Seq-style module (`encode(src, src_mask)`, `forward(src, src_mask, tgt_in)`).
        src: (B, S) ids, src_mask (B, S) bool.
        tgt_in: (B, T) target prefix; default: BOS then BOS-repeats (valid for any vocabulary).
        extra: number of pad columns (id 0, mask False) to append.
    """
    model.eval()
    if tgt_in is None:
        tgt_in = torch.full((src.size(0), 4), BOS_ID, dtype=torch.long, device=src.device)
    pad_ids = src.new_zeros(src.size(0), extra)  # (B, extra)
    pad_mask = src_mask.new_zeros(src.size(0), extra)  # (B, extra)
    padded, padded_mask = torch.cat([src, pad_ids], 1), torch.cat([src_mask, pad_mask], 1)
    plain, wide = model.encode(src, src_mask), model.encode(padded, padded_mask)
    real = src_mask.unsqueeze(-1)  # (B, S, 1)
    torch.testing.assert_close(
        wide.memory[:, : src.size(1)] * real, plain.memory * real, atol=atol, rtol=0
    )
    torch.testing.assert_close(
        model(padded, padded_mask, tgt_in), model(src, src_mask, tgt_in), atol=atol, rtol=0
    )
