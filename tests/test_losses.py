"""masked_cross_entropy: parity with torch's cross_entropy, padding invariance, float32 maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.losses import masked_cross_entropy, real_positions, token_cross_entropy


def random_batch(seed: int, b: int = 3, t: int = 5, v: int = 7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g)  # (B, T, V)
    targets = torch.randint(0, v, (b, t), generator=g)  # (B, T)
    lengths = torch.randint(1, t + 1, (b,), generator=g)  # (B,)
    mask = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
    return logits, targets, mask


def reference(logits, targets, mask, eps, reduction):
    """torch's F.cross_entropy with ignore_index at padding."""
    ignored = targets.masked_fill(~mask, -100)
    return F.cross_entropy(
        logits.flatten(0, 1),
        ignored.flatten(),
        ignore_index=-100,
        label_smoothing=eps,
        reduction=reduction,
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    eps=st.sampled_from([0.0, 0.1, 0.3]),
    reduction=st.sampled_from(["sum", "mean"]),
)
def test_matches_torch_cross_entropy_with_ignore_index(seed, eps, reduction):
    logits, targets, mask = random_batch(seed)
    ours = masked_cross_entropy(logits, targets, mask, label_smoothing=eps, reduction=reduction)
    torch.testing.assert_close(ours, reference(logits, targets, mask, eps, reduction))


def test_reduction_none_matches_torch_and_is_zero_at_padding():
    logits, targets, mask = random_batch(1)
    ours = masked_cross_entropy(logits, targets, mask, label_smoothing=0.1, reduction="none")
    theirs = reference(logits, targets, mask, 0.1, "none").view(mask.shape)
    assert ours.shape == mask.shape
    torch.testing.assert_close(ours, theirs)
    assert (ours[~mask] == 0).all()


def test_gradients_match_torch():
    logits, targets, mask = random_batch(2)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    masked_cross_entropy(a, targets, mask, label_smoothing=0.2).backward()
    reference(b, targets, mask, 0.2, "sum").backward()
    torch.testing.assert_close(a.grad, b.grad)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), extra=st.integers(1, 4), junk_id=st.sampled_from([-100, 10**6]))
def test_padding_values_and_amount_change_nothing(seed, extra, junk_id):
    logits, targets, mask = random_batch(seed)
    b, _, v = logits.shape
    # More padding columns; every padding position holds junk: NaN logits, invalid target ids.
    padded_mask = torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1)  # (B, T + extra)
    padded_logits = torch.cat([logits, torch.zeros(b, extra, v)], 1)  # (B, T + extra, V)
    padded_logits[~padded_mask] = float("nan")
    padded_targets = torch.cat([targets, torch.zeros(b, extra, dtype=torch.long)], 1)
    padded_targets = padded_targets.masked_fill(~padded_mask, junk_id)  # (B, T + extra)
    padded_logits.requires_grad_()
    for reduction in ("sum", "mean"):
        clean = masked_cross_entropy(
            logits, targets, mask, label_smoothing=0.1, reduction=reduction
        )
        padded = masked_cross_entropy(
            padded_logits, padded_targets, padded_mask, label_smoothing=0.1, reduction=reduction
        )
        torch.testing.assert_close(padded, clean)
    padded.backward()
    assert torch.isfinite(padded_logits.grad).all()
    assert (padded_logits.grad[~padded_mask] == 0).all()


def test_half_inputs_are_computed_in_float32():
    logits, targets, mask = random_batch(3, v=50)
    half = logits.to(torch.bfloat16)
    ours = masked_cross_entropy(half, targets, mask, label_smoothing=0.1)
    assert ours.dtype == torch.float32
    expected = reference(half.float(), targets, mask, 0.1, "sum")
    torch.testing.assert_close(ours, expected)


def test_label_smoothing_definition_on_a_hand_example():
    # V = 2, uniform logits except the gold class: p = softmax([2, 0]).
    logits = torch.tensor([[[2.0, 0.0]]])
    log_p = torch.log_softmax(logits[0, 0], -1)
    eps = 0.2
    expected = -(1 - eps) * log_p[0] - eps * log_p.mean()
    got = masked_cross_entropy(
        logits, torch.tensor([[0]]), torch.tensor([[True]]), label_smoothing=eps
    )
    torch.testing.assert_close(got, expected)


def test_mean_of_no_tokens_is_nan_like_torch_and_bad_arguments_raise():
    logits, targets, mask = random_batch(4)
    empty = torch.zeros_like(mask)
    assert torch.isnan(masked_cross_entropy(logits, targets, empty, reduction="mean"))
    assert masked_cross_entropy(logits, targets, empty).item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        masked_cross_entropy(logits, targets, mask, reduction="max")
    with pytest.raises(ValueError, match="label_smoothing"):
        masked_cross_entropy(logits, targets, mask, label_smoothing=1.0)
    with pytest.raises(ValueError, match="expected logits"):
        masked_cross_entropy(logits, targets[:, :-1], mask)


def test_token_cross_entropy_at_real_positions_is_the_masked_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    rows = real_positions(mask)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10]
    picked = token_cross_entropy(
        logits.flatten(0, 1)[rows], targets.flatten()[rows], label_smoothing=0.1
    )
    want = masked_cross_entropy(logits, targets, mask, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(picked, want[mask])
