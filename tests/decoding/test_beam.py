"""Tests for seqlab/decoding/beam.py: the pure selection step, length penalties, the stopping
bound and the sampling filters, each against a direct (loop or sort) reference, without a model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.decoding.beam import (
    length_penalty,
    penalized,
    score_bound,
    select_step,
    select_top,
    top_k,
    top_k_filter,
    top_p_filter,
)
from seqlab.errors import ConfigError

EOS = 3


def test_length_penalty_formulas():
    lengths = torch.tensor([1, 2, 7])
    gnmt = length_penalty(lengths, 0.6, "gnmt")
    torch.testing.assert_close(gnmt, torch.tensor([((5 + n) / 6) ** 0.6 for n in (1, 2, 7)]))
    average = length_penalty(lengths, 1.0, "average")
    torch.testing.assert_close(average, torch.tensor([1.0, 2.0, 7.0]))
    torch.testing.assert_close(length_penalty(lengths, 2.0, "none"), torch.ones(3))
    # an empty unfinished hypothesis does not divide by zero
    assert length_penalty(torch.tensor([0]), 1.0, "average").item() == 1.0
    # alpha = 0 is no penalty, and the score divides the log-prob by lp
    for kind in ("gnmt", "average"):
        torch.testing.assert_close(length_penalty(lengths, 0.0, kind), torch.ones(3))
    score = penalized(torch.tensor([-2.0]), torch.tensor([3]), 1.0, "average")
    assert score.item() == pytest.approx(-2.0 / 3)


def test_unknown_penalty_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="length_penalty_kind"):
        length_penalty(torch.tensor([1]), 1.0, "wu")


@given(st.sampled_from(["gnmt", "average"]), st.floats(0.05, 2.0))
def test_length_penalty_increases_with_length_for_positive_alpha(kind, alpha):
    lp = length_penalty(torch.arange(1, 30), alpha, kind)
    assert bool((lp[1:] > lp[:-1]).all())


def test_select_top_matches_a_full_sort():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 4, 7, generator=gen)  # (B, K, V)
    values, beams, tokens = select_top(scores, 5)
    for b in range(3):
        ranked = sorted(
            ((scores[b, k, v].item(), k, v) for k in range(4) for v in range(7)), reverse=True
        )[:5]
        assert [(k, v) for _, k, v in ranked] == list(zip(beams[b].tolist(), tokens[b].tolist()))
        torch.testing.assert_close(values[b], torch.tensor([s for s, _, _ in ranked]))
    assert select_top(scores, 100)[0].shape == (3, 28)  # clipped to K*V


def reference_step(beam_scores, log_probs, eos):
    """One beam step by loops: (ended [(score, beam)], alive [(score, beam, token)])."""
    K, V = log_probs.shape
    ranked = sorted(
        ((beam_scores[k] + log_probs[k, v], k, v) for k in range(K) for v in range(V)),
        key=lambda c: -c[0],
    )[: 2 * K]
    final = [(s, k) for r, (s, k, v) in enumerate(ranked) if v == eos and r < K and s > -math.inf]
    alive = [c for c in ranked if c[2] != eos][:K]
    return final, alive


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**31 - 1), st.booleans())
def test_select_step_matches_loop_reference(K, V, seed, first_step):
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(2, K, V, generator=gen).log_softmax(-1).double()  # (B, K, V)
    eos = V - 1
    beam_scores = -torch.rand(2, K, generator=gen).double() * 3  # (B, K)
    if first_step:  # only beam 0 alive, as at the start of a search
        beam_scores[:, 1:] = -math.inf
    sel = select_step(beam_scores, log_probs, eos)
    for b in range(2):
        final, alive = reference_step(beam_scores[b].tolist(), log_probs[b], eos)
        got_final = [
            (sel.values[b, j].item(), sel.parents[b, j].item())
            for j in sel.finalize[b].nonzero().squeeze(1).tolist()
        ]
        assert got_final == [(float(s), k) for s, k in final]
        got_alive = list(
            zip(sel.scores[b].tolist(), sel.beam_parents[b].tolist(), sel.tokens[b].tolist())
        )
        want = [(float(s), k, v) for s, k, v in alive]
        for (gs, gk, gv), (ws, wk, wv) in zip(got_alive, want):
            assert gs == ws
            if ws > -math.inf:  # which empty beam extends which is irrelevant
                assert (gk, gv) == (wk, wv)
        assert all(t != eos or s == -math.inf for s, _, t in got_alive)


def test_select_step_first_step_does_not_copy_beams():
    log_probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(1, 3, 4).clone()  # (1, 3, 4)
    start = torch.tensor([[0.0, -math.inf, -math.inf]])
    sel = select_step(start, log_probs, eos_id=3)
    assert sel.tokens.tolist() == [[0, 1, 2]]
    assert sel.beam_parents.tolist() == [[0, 0, 0]]
    assert not bool(sel.finalize.any())  # eos ranks 4th of the finite candidates: not among K


def test_select_step_ends_eos_within_first_k_only():
    # beam 0: eos best; beam 1: eos poor
    log_probs = torch.tensor([[[0.1, 0.2, 0.1, 0.6], [0.5, 0.4, 0.09, 0.01]]]).log()
    sel = select_step(torch.tensor([[math.log(0.5), math.log(0.5)]]), log_probs, eos_id=3)
    ended = sel.finalize[0].nonzero().squeeze(1).tolist()
    assert [sel.parents[0, j].item() for j in ended] == [0]
    assert sel.values[0, ended[0]].item() == pytest.approx(math.log(0.3))
    assert set(zip(sel.beam_parents[0].tolist(), sel.tokens[0].tolist())) == {(1, 0), (1, 1)}


@pytest.mark.parametrize("kind", ["gnmt", "average", "none"])
def test_score_bound_bounds_every_continuation(kind):
    gen = torch.Generator().manual_seed(1)
    scores = -torch.rand(2, 3, generator=gen) * 4  # (B, K) alive log-probs at length 2
    limits = torch.tensor([4, 9])
    bound = score_bound(scores, 3, limits, 0.8, kind)
    for b in range(2):
        best = scores[b].max().item()
        for n in range(3, int(limits[b]) + 1):  # a continuation's log-prob is <= best
            lp = length_penalty(torch.tensor([n]), 0.8, kind).item()
            assert best / lp <= bound[b].item() + 1e-6
    assert score_bound(torch.full((1, 2), -math.inf), 1, torch.tensor([5]), 1.0, kind).item() == (
        -math.inf
    )


def test_top_k_filter_keeps_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 10), logits)


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.5, [True, False, False, False]),
        (0.51, [True, True, False, False]),
        (0.75, [True, True, False, False]),
        (0.85, [True, True, True, False]),
        (0.9, [True, True, True, False]),
        (0.97, [True] * 4),
        (1.0, [True] * 4),
    ],
)
def test_top_p_filter_keeps_smallest_nucleus(p, kept):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    shuffle = torch.tensor([2, 0, 3, 1])  # the filter must not depend on the order of ids
    filtered = top_p_filter(probs.log()[:, shuffle], p)
    assert torch.isfinite(filtered).tolist() == [[kept[i] for i in shuffle.tolist()]]
    # the kept mass reaches p
    assert probs[0, torch.tensor(kept)].sum().item() >= p - 1e-6


@pytest.mark.parametrize("n", [40000, 29870, 10000, 5127, 1000, 999])
def test_blocked_top_k_equals_top_k(n):
    g = torch.Generator().manual_seed(n)
    rows = torch.randn(6, n, generator=g)
    rows[1] = float("-inf")  # a dead source: nothing finite
    rows[2, : n // 2] = float("-inf")  # beams with nothing to extend
    rows[3, 7] = 50.0  # one block holds the best and the second best
    rows[3, 8] = 49.0
    rows[4, -1] = 60.0  # the best sits in the leftover tail
    values, index = top_k(rows, 10)
    want_values, want_index = rows.topk(10, dim=1)
    assert torch.equal(values, want_values)
    assert torch.equal(rows.gather(1, index), values)  # every index points at its value
    finite = torch.isfinite(want_values).all(dim=1)
    assert torch.equal(index[finite], want_index[finite])  # no ties among random floats
    assert ((index >= 0) & (index < n)).all()
