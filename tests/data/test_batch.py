"""Tests for seqlab.data.batch: padding, masks, target shifting and the Batch dataclass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.batch import Batch, collate, pad

PAD, BOS, EOS = 0, 2, 3

# Token ids include the special ids on purpose: masks must come from lengths, never from values.
ids = st.lists(st.integers(0, 40), max_size=9)
pair_lists = st.lists(st.tuples(ids, ids), min_size=1, max_size=6)


def unpad(tensor: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m].tolist() for row, m in zip(tensor, mask)]


def assert_right_padded(mask: torch.Tensor) -> None:
    """Every row is True then False: no hole, padding on the right only."""
    assert not (~mask[:, :-1] & mask[:, 1:]).any()


@settings(max_examples=60, deadline=None)
@given(seqs=st.lists(ids, max_size=6), pad_id=st.integers(0, 99), extra=st.integers(0, 3))
def test_pad_recovers_inputs_and_fills_with_pad_id(seqs, pad_id, extra):
    longest = max(map(len, seqs), default=0)
    tokens, mask = pad(seqs, pad_id, max_len=longest + extra)
    assert tokens.shape == mask.shape == (len(seqs), longest + extra)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert unpad(tokens, mask) == seqs
    assert mask.sum(dim=1).tolist() == [len(s) for s in seqs]
    assert (tokens[~mask] == pad_id).all()
    assert_right_padded(mask)


def test_pad_accepts_arrays_tensors_and_empty_rows():
    tokens, mask = pad([np.array([4, 5]), torch.tensor([6]), []], pad_id=9)
    assert tokens.tolist() == [[4, 5], [6, 9], [9, 9]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    tokens, mask = pad([])
    assert tokens.shape == mask.shape == (0, 0)


def test_pad_refuses_to_cut_real_tokens():
    with pytest.raises(ValueError, match="max_len=2"):
        pad([[1, 2, 3]], max_len=2)


@settings(max_examples=60, deadline=None)
@given(pairs=pair_lists, src_eos=st.booleans())
def test_collate_keeps_every_token_and_shifts_the_target(pairs, src_eos):
    batch = collate(pairs, pad_id=PAD, bos_id=BOS, eos_id=EOS, src_eos=src_eos)
    srcs = [list(s) + [EOS] * src_eos for s, _ in pairs]
    assert unpad(batch.src, batch.src_mask) == srcs
    assert unpad(batch.tgt_in, batch.tgt_mask) == [[BOS, *t] for _, t in pairs]
    assert unpad(batch.tgt_out, batch.tgt_mask) == [[*t, EOS] for _, t in pairs]
    assert batch.src_lengths.tolist() == [len(s) for s in srcs]
    assert batch.tgt_mask.sum(dim=1).tolist() == [len(t) + 1 for _, t in pairs]
    # Teacher forcing: input t+1 is output t at every real position.
    real = batch.tgt_mask[:, 1:]
    assert torch.equal(batch.tgt_in[:, 1:][real], batch.tgt_out[:, :-1][real])
    assert (batch.tgt_in[:, 0] == BOS).all()
    last = batch.tgt_mask.sum(dim=1) - 1  # (B,) position of EOS in tgt_out
    assert (batch.tgt_out.gather(1, last.unsqueeze(1)) == EOS).all()
    assert batch.num_tokens == sum(len(t) + 1 for _, t in pairs)
    assert batch.size == len(pairs)
    for mask in (batch.src_mask, batch.tgt_mask):
        assert_right_padded(mask)
    assert batch.src.shape[1] == max(map(len, srcs))
    assert batch.tgt_in.shape[1] == max(len(t) + 1 for _, t in pairs)


def test_collate_hand_example_with_custom_ids_and_empty_target():
    batch = collate([([10, 11], [20, 21, 22]), ([12], [])], pad_id=7, bos_id=8, eos_id=9)
    assert batch.src.tolist() == [[10, 11, 9], [12, 9, 7]]
    assert batch.tgt_in.tolist() == [[8, 20, 21, 22], [8, 7, 7, 7]]
    assert batch.tgt_out.tolist() == [[20, 21, 22, 9], [9, 7, 7, 7]]
    assert batch.tgt_mask.tolist() == [[True] * 4, [True, False, False, False]]
    assert batch.num_tokens == 5


def test_collate_refuses_an_empty_list():
    with pytest.raises(ValueError, match="no pairs"):
        collate([])


def test_batch_is_frozen_and_checks_shapes():
    batch = collate([([5], [6])])
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.src = batch.tgt_in  # type: ignore[misc]
    with pytest.raises(ValueError, match="src_mask"):
        dataclasses.replace(batch, src_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        dataclasses.replace(batch, tgt_mask=batch.tgt_mask.long())
    with pytest.raises(ValueError, match="sources"):
        two = collate([([5], [6]), ([5], [6])])
        dataclasses.replace(batch, tgt_in=two.tgt_in, tgt_out=two.tgt_out, tgt_mask=two.tgt_mask)


def test_to_moves_every_tensor_and_keeps_values():
    batch = collate([([5, 6], [7]), ([8], [9, 10])])
    moved = batch.to("meta", non_blocking=True)
    assert isinstance(moved, Batch)
    assert all(getattr(moved, f.name).device.type == "meta" for f in dataclasses.fields(moved))
    back = batch.to(torch.device("cpu"))
    assert all(
        torch.equal(getattr(back, f.name), getattr(batch, f.name))
        for f in dataclasses.fields(batch)
    )


def test_pin_memory_pins_every_field(monkeypatch):
    # Pinning needs an accelerator; on CPU a fake records which tensors were asked to pin.
    pinned = []

    def fake_pin(tensor: torch.Tensor) -> torch.Tensor:
        pinned.append(tensor)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = collate([([5, 6], [7]), ([8], [9, 10])])
    result = batch.pin_memory()
    assert isinstance(result, Batch) and len(pinned) == len(dataclasses.fields(Batch))
    assert all(
        torch.equal(getattr(result, f.name), getattr(batch, f.name))
        for f in dataclasses.fields(batch)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_dataloader_pins_batches():
    pairs = [([5, 6], [7]), ([8], [9, 10])]
    loader = torch.utils.data.DataLoader(pairs, batch_size=2, collate_fn=collate, pin_memory=True)
    (batch,) = list(loader)
    assert isinstance(batch, Batch)
    assert all(getattr(batch, f.name).is_pinned() for f in dataclasses.fields(batch))
    assert batch.to("cuda", non_blocking=True).src.is_cuda
