"""Tests for seqlab/decoding/search.py: greedy search, beam search and sampling.

Scripted fake decoders (a probability table per prefix) give exact expected outputs; brute-force
enumeration checks beam search under each length penalty; real RNN and Transformer models check
beam 1 = greedy, batch (padding) invariance and sampling limits.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from seqlab.decoding.beam import length_penalty
from seqlab.decoding.search import Hypothesis, beam_search, greedy_search, sample
from seqlab.errors import ConfigError
from seqlab.models.interfaces import Decoder, DecoderState, Encoded, lengths_to_mask
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer

PAD, BOS, EOS, A, B = 0, 2, 3, 4, 5


# --- a scripted decoder ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableState(DecoderState):
    source: Tensor  # (B,) source id
    history: Tensor  # (B, t) tokens fed so far, BOS first


class TableDecoder:
    """A `Decoder` whose next-token log-probs are `table(source id, prefix)` -> (V,).

    The source id is read from `encoded.memory[:, 0, 0]`; the prefix excludes BOS. `steps` counts
    calls to `step`, `rows` lists the rows of each call.
    """

    def __init__(self, table: Callable[[int, tuple[int, ...]], Tensor]):
        self.table, self.steps, self.rows = table, 0, []

    def init_state(self, encoded: Encoded) -> TableState:
        rows = encoded.batch_size
        return TableState(encoded.memory[:, 0, 0].long(), torch.zeros(rows, 0, dtype=torch.long))

    def step(self, tokens: Tensor, state: TableState) -> tuple[Tensor, TableState]:
        self.steps += 1
        self.rows.append(tokens.numel())
        history = torch.cat([state.history, tokens.unsqueeze(1)], dim=1)  # (B, t+1)
        assert bool((history[:, 0] == BOS).all()), "search must feed BOS first"
        rows = [
            self.table(s, tuple(h[1:])) for s, h in zip(state.source.tolist(), history.tolist())
        ]
        return torch.stack(rows), TableState(state.source, history)

    def forward(self, tgt_in: Tensor, encoded: Encoded) -> Tensor:
        raise NotImplementedError


def fake_encoded(src_lengths: list[int], sources: list[int] | None = None) -> Encoded:
    """Sources of the given lengths whose memory carries a source id."""
    mask = lengths_to_mask(torch.tensor(src_lengths))  # (B, S)
    ids = torch.tensor(sources or [0] * len(src_lengths), dtype=torch.float32)
    memory = ids.view(-1, 1, 1).expand(-1, mask.size(1), 1).clone()  # (B, S, 1)
    return Encoded(memory=memory, mask=mask)


# Vocabulary: 0 pad, 1 unk, 2 bos, 3 eos, 4 A, 5 B. Probabilities of the next token by prefix;
# tokens not listed have probability 0. Greedy takes A (.5) then A (.4): A A eos = .5*.4*.7 = .14;
# beam 2 also keeps B (.4), whose eos (.9) gives .36: greedy is suboptimal.
SCRIPT = {
    (): {A: 0.5, B: 0.4, EOS: 0.1},
    (A,): {A: 0.4, B: 0.25, EOS: 0.35},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
}
DEFAULT = {EOS: 0.7, A: 0.2, B: 0.1}


def script(source: int, prefix: tuple[int, ...]) -> Tensor:
    probs = torch.zeros(6, dtype=torch.float64)
    for token, p in SCRIPT.get(prefix, DEFAULT).items():
        probs[token] = p
    return probs.log().float()  # (V,)


def log(*ps: float) -> float:
    return sum(math.log(p) for p in ps)


def expect(hyps: list[Hypothesis], want: list[tuple[tuple[int, ...], float, bool]]) -> None:
    """hyps are exactly `want`: (tokens, probability of the sequence, finished) each."""
    assert [(h.tokens, h.finished) for h in hyps] == [(t, f) for t, _, f in want]
    assert [h.log_prob for h in hyps] == pytest.approx([math.log(p) for _, p, _ in want], abs=1e-5)


def test_greedy_follows_the_script_and_stops_when_all_rows_end():
    decoder = TableDecoder(script)
    [[hyp]] = greedy_search(decoder, fake_encoded([2]), bos_id=BOS, eos_id=EOS)
    assert hyp.tokens == (A, A) and hyp.finished
    assert hyp.log_prob == pytest.approx(log(0.5, 0.4, 0.7)) and hyp.score == hyp.log_prob
    assert decoder.steps == 3  # A, A, eos: no step after every row has ended


@pytest.mark.parametrize("kind", ["none", "gnmt", "average"])
def test_beam_finds_the_sequence_greedy_misses(kind):
    [hyps] = beam_search(
        TableDecoder(script),
        fake_encoded([2]),
        beam_size=2,
        bos_id=BOS,
        eos_id=EOS,
        nbest=2,
        length_penalty=1.0,
        length_penalty_kind=kind,
    )
    expect(hyps, [((B,), 0.4 * 0.9, True), ((A, A), 0.5 * 0.4 * 0.7, True)])
    lp = length_penalty(torch.tensor([2, 3]), 1.0, kind).tolist()  # lengths count eos
    assert [h.score for h in hyps] == pytest.approx([log(0.36) / lp[0], log(0.14) / lp[1]])


def test_first_beam_step_runs_one_row_per_source():
    """Before the first step a source's K beams are one beam: it is stepped once, not K times."""
    decoder = TableDecoder(script)
    hyps = beam_search(
        decoder, fake_encoded([2, 1, 3], [0, 1, 2]), beam_size=3, bos_id=BOS, eos_id=EOS
    )
    assert decoder.rows[:2] == [3, 9]
    assert [h[0].tokens for h in hyps] == [(B,)] * 3  # the script's best, for every source
    # a source with no room at all leaves before the first step; the other is stepped alone
    decoder = TableDecoder(script)
    short, long = beam_search(
        decoder,
        fake_encoded([1, 3]),
        beam_size=2,
        bos_id=BOS,
        eos_id=EOS,
        max_len_a=1.0,
        max_len_b=-1,
    )
    assert decoder.rows[:2] == [1, 2]
    assert [(h.tokens, h.finished) for h in short] == [((), False)]
    assert long[0].tokens == (B,)


def test_min_len_blocks_eos():
    common = {"bos_id": BOS, "eos_id": EOS, "min_len": 3}
    [[hyp]] = greedy_search(TableDecoder(script), fake_encoded([1]), **common)
    expect([hyp], [((A, A, A), 0.5 * 0.4 * 0.2 * 0.7, True)])
    [hyps] = beam_search(
        TableDecoder(script), fake_encoded([1]), beam_size=2, nbest=2, **{**common, "min_len": 2}
    )
    expect(hyps, [((A, A), 0.5 * 0.4 * 0.7, True), ((A, B), 0.5 * 0.25 * 0.7, True)])


def test_max_len_per_row_from_source_length():
    encoded = fake_encoded([1, 3])  # max lengths int(1.0 * [1, 3] + 0) = [1, 3]
    common = {"bos_id": BOS, "eos_id": EOS, "max_len_a": 1.0, "max_len_b": 0}
    greedy = greedy_search(TableDecoder(script), encoded, **common)
    expect(greedy[0], [((A,), 0.5, False)])  # cut at its max length: unfinished
    expect(greedy[1], [((A, A), 0.14, True)])
    beams = beam_search(TableDecoder(script), encoded, beam_size=2, nbest=2, **common)
    expect(beams[0], [((A,), 0.5, False), ((B,), 0.4, False)])
    expect(beams[1][:1], [((B,), 0.36, True)])
    [[empty]] = greedy_search(
        TableDecoder(script), fake_encoded([1]), bos_id=BOS, eos_id=EOS, max_len_b=0
    )
    assert empty == Hypothesis((), 0.0, 0.0, False)


def test_bad_arguments_are_config_errors():
    encoded, common = fake_encoded([1]), {"bos_id": BOS, "eos_id": EOS}
    with pytest.raises(ConfigError, match="beam_size"):
        beam_search(TableDecoder(script), encoded, beam_size=0, **common)
    with pytest.raises(ConfigError, match="nbest"):
        beam_search(TableDecoder(script), encoded, beam_size=2, nbest=3, **common)
    with pytest.raises(ConfigError, match="length_penalty_kind"):
        beam_search(TableDecoder(script), encoded, beam_size=2, length_penalty_kind="x", **common)
    with pytest.raises(ConfigError, match="temperature"):
        sample(TableDecoder(script), encoded, temperature=0.0, **common)
    with pytest.raises(ConfigError, match="top_p"):
        sample(TableDecoder(script), encoded, top_p=0.0, **common)


# --- exhaustive check against brute-force enumeration ------------------------------------------

TINY_V = 4  # ids 0, 1, 2 (= BOS, also a generable token) and 3 = EOS


@functools.cache
def random_table(source: int, prefix: tuple[int, ...]) -> Tensor:
    gen = torch.Generator().manual_seed(hash((source, *prefix)) % 2**31)
    return (2.0 * torch.randn(TINY_V, generator=gen, dtype=torch.float64)).log_softmax(0).float()


def brute_force(source: int, limit: int, alpha: float, kind: str) -> list[tuple]:
    """Every hypothesis within `limit` steps, best first: (score, tokens, finished)."""
    found = []
    for n in range(limit + 1):
        for tokens in itertools.product(range(TINY_V - 1), repeat=n):
            steps = [random_table(source, tokens[:i])[tokens[i]].item() for i in range(n)]
            finished = n < limit
            if finished:
                steps.append(random_table(source, tokens)[EOS].item())
            lp = length_penalty(torch.tensor([len(steps)]), alpha, kind).item()
            found.append((sum(steps) / lp, tokens, finished))
    return sorted(found, reverse=True)


@pytest.mark.parametrize(
    ("kind", "alpha"),
    [("none", 1.0), ("gnmt", 1.0), ("average", 1.0), ("gnmt", 2.5), ("average", 0.5)],
)
def test_wide_beam_equals_brute_force(kind, alpha):
    encoded = fake_encoded([2, 4], sources=[7, 8])  # max lengths 3 and 4
    for early in (True, False):
        result = beam_search(
            TableDecoder(random_table),
            encoded,
            beam_size=128,
            nbest=6,
            bos_id=BOS,
            eos_id=EOS,
            max_len_a=0.5,
            max_len_b=2,
            length_penalty=alpha,
            length_penalty_kind=kind,
            early_stopping=early,
        )
        for hyps, source, limit in zip(result, (7, 8), (3, 4)):
            want = brute_force(source, limit, alpha, kind)[:6]
            assert [(h.tokens, h.finished) for h in hyps] == [(t, f) for _, t, f in want]
            assert [h.score for h in hyps] == pytest.approx([s for s, _, _ in want], abs=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.sampled_from(["gnmt", "average", "none"]))
def test_exact_stopping_is_never_worse_than_early_stopping(source, K, kind):
    def best(early: bool) -> Hypothesis:
        [[hyp]] = beam_search(
            TableDecoder(random_table),
            fake_encoded([1], [source]),
            beam_size=K,
            bos_id=BOS,
            eos_id=EOS,
            max_len_b=6,
            length_penalty_kind=kind,
            early_stopping=early,
        )
        return hyp

    assert best(False).score >= best(True).score - 1e-6


# --- real models -------------------------------------------------------------------------------

SRC_V, TGT_V = 11, 13


def rnn_model():
    torch.manual_seed(0)
    config = RNNSeq2SeqConfig(embed_dim=8, hidden_size=16, num_layers=2, dropout=0.1)
    return build_rnn_seq2seq(config, SRC_V, TGT_V).eval()


def transformer_model():
    torch.manual_seed(0)
    config = TransformerConfig(
        d_model=32,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        d_ff=64,
        max_len=40,
        tie_output=False,  # untied, an untrained model does not just echo its input
    )
    return build_transformer(config, SRC_V, TGT_V).eval()


MODELS = {"rnn": rnn_model, "transformer": transformer_model}
EOS_RATE = {"rnn": 0.03, "transformer": 0.4}  # untrained models rarely end: nudge them


@dataclass(frozen=True)
class NudgedState(DecoderState):
    inner: DecoderState
    position: int = 0


class EosNudge:
    """A real decoder whose eos logit rises by `rate` per step, so that an untrained model ends
    its outputs, at lengths that vary by source. Its state nests the real one."""

    def __init__(self, decoder: Decoder, rate: float):
        self.decoder, self.rate = decoder, rate

    def init_state(self, encoded: Encoded) -> NudgedState:
        return NudgedState(self.decoder.init_state(encoded))

    def step(self, tokens: Tensor, state: NudgedState) -> tuple[Tensor, NudgedState]:
        logits, inner = self.decoder.step(tokens, state.inner)  # (B, V)
        logits[:, EOS] += self.rate * state.position
        return logits, NudgedState(inner, state.position + 1)

    def forward(self, tgt_in: Tensor, encoded: Encoded) -> Tensor:
        raise NotImplementedError


LENGTHS = [5, 2, 7, 1, 4]
LIMITS = {"bos_id": BOS, "eos_id": EOS, "max_len_a": 1.0, "max_len_b": 4}


@functools.cache
def real(kind: str) -> tuple[Decoder, Encoded, list[Encoded]]:
    """(decoder, batched sources of LENGTHS, each source alone without padding)."""
    model = MODELS[kind]()
    gen = torch.Generator().manual_seed(3)
    mask = lengths_to_mask(torch.tensor(LENGTHS))  # (B, S)
    src = torch.randint(4, SRC_V, mask.shape, generator=gen).masked_fill(~mask, PAD)
    with torch.no_grad():
        batched = model.encode(src, mask)
        alone = [
            model.encode(src[i : i + 1, :n], mask[i : i + 1, :n]) for i, n in enumerate(LENGTHS)
        ]
    return EosNudge(model.decoder, EOS_RATE[kind]), batched, alone


def assert_same(got: list[Hypothesis], want: list[Hypothesis], atol: float = 1e-5) -> None:
    assert [(h.tokens, h.finished) for h in got] == [(h.tokens, h.finished) for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=atol)
    assert [h.log_prob for h in got] == pytest.approx([h.log_prob for h in want], abs=atol)


@pytest.mark.parametrize("kind", MODELS)
def test_beam_one_equals_greedy(kind):
    decoder, encoded, _ = real(kind)
    greedy = greedy_search(decoder, encoded, **LIMITS)
    plain = beam_search(decoder, encoded, beam_size=1, length_penalty_kind="none", **LIMITS)
    for got, want in zip(plain, greedy):
        assert_same(got, want)
    for got, want in zip(beam_search(decoder, encoded, beam_size=1, **LIMITS), greedy):
        assert got[0].tokens == want[0].tokens
        assert got[0].log_prob == pytest.approx(want[0].log_prob, abs=1e-5)
    assert any(h.finished for [h] in greedy) and not all(h.finished for [h] in greedy)
    assert all(len(h.tokens) <= n + 4 for [h], n in zip(greedy, LENGTHS))


@pytest.mark.parametrize("kind", MODELS)
def test_batching_and_padding_change_nothing(kind):
    decoder, batched, alone = real(kind)
    search = functools.partial(beam_search, decoder, beam_size=4, nbest=3, **LIMITS)
    for one, hyps in zip(alone, search(batched)):
        assert_same(hyps, search(one)[0])
    for one, hyps in zip(alone, greedy_search(decoder, batched, **LIMITS)):
        assert_same(hyps, greedy_search(decoder, one, **LIMITS)[0])


@dataclass(frozen=True)
class PerRowState(DecoderState):
    """Beams made the plain way: `expand` reorders the inner state with a row index, so every
    beam row gets its own copy of everything (no per-source sharing in `TransformerState`)."""

    inner: DecoderState
    rows: int

    def expand(self, repeats: int) -> PerRowState:
        index = torch.arange(self.rows).repeat_interleave(repeats)
        return PerRowState(self.inner.reorder(index), self.rows * repeats)

    def reorder(self, index: Tensor) -> PerRowState:
        return PerRowState(self.inner.reorder(index), index.numel())


class PerRow:
    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def init_state(self, encoded: Encoded) -> PerRowState:
        return PerRowState(self.decoder.init_state(encoded), encoded.batch_size)

    def step(self, tokens: Tensor, state: PerRowState) -> tuple[Tensor, PerRowState]:
        logits, inner = self.decoder.step(tokens, state.inner)
        return logits, PerRowState(inner, state.rows)


@pytest.mark.parametrize("kind", MODELS)
def test_shared_source_states_search_as_per_row_states(kind):
    """The Transformer's beams share one copy of their source's keys/values (and reorder their
    caches lazily); beam search over it equals beam search over one copy per beam."""
    decoder, encoded, _ = real(kind)
    search = functools.partial(beam_search, beam_size=4, nbest=4, **LIMITS)
    for got, want in zip(search(decoder, encoded), search(PerRow(decoder), encoded)):
        assert_same(got, want)


@pytest.mark.parametrize("kind", MODELS)
def test_nbest_sorted_distinct_and_within_max_len(kind):
    decoder, encoded, _ = real(kind)
    result = beam_search(decoder, encoded, beam_size=5, nbest=5, **LIMITS)
    for hyps, n in zip(result, LENGTHS):
        scores = [h.score for h in hyps]
        assert len(hyps) == 5 and scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in hyps}) == 5
        assert all(len(h.tokens) <= n + 4 and EOS not in h.tokens for h in hyps)
        assert all(len(h.tokens) < n + 4 for h in hyps if h.finished)


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODELS)
def test_sampling_limits_equal_greedy(kind):
    decoder, encoded, _ = real(kind)
    greedy = greedy_search(decoder, encoded, **LIMITS)
    gen = torch.Generator().manual_seed(0)
    for settings_ in ({"top_k": 1}, {"temperature": 1e-4}, {"top_p": 1e-6}):
        drawn = sample(decoder, encoded, num_samples=2, generator=gen, **settings_, **LIMITS)
        for hyps, [want] in zip(drawn, greedy):
            assert_same(hyps, [want, want])


@pytest.mark.parametrize("kind", MODELS)
def test_sampling_is_reproducible_with_a_generator(kind):
    decoder, encoded, _ = real(kind)

    def draw(seed: int) -> list[list[Hypothesis]]:
        gen = torch.Generator().manual_seed(seed)
        return sample(decoder, encoded, num_samples=3, generator=gen, **LIMITS)

    first = draw(1)
    assert [len(hyps) for hyps in first] == [3] * len(LENGTHS)
    assert first == draw(1)
    assert first != draw(2)


def test_sampling_follows_the_distribution_and_filters():
    encoded = fake_encoded([1] * 4000)
    gen = torch.Generator().manual_seed(0)

    def first_tokens(**kwargs) -> Counter:
        hyps = sample(
            TableDecoder(script),
            encoded,
            bos_id=BOS,
            eos_id=EOS,
            max_len_b=1,
            generator=gen,
            **kwargs,
        )
        return Counter(h.tokens[0] if h.tokens else EOS for [h] in hyps)

    counts = first_tokens()
    for token, p in SCRIPT[()].items():
        assert counts[token] / 4000 == pytest.approx(p, abs=0.03)
    assert set(first_tokens(top_p=0.85)) == {A, B}  # nucleus {A .5, B .4} holds .9 >= .85
    assert set(first_tokens(top_k=1)) == {A}
    hot = first_tokens(temperature=2.0)  # flatter: p ∝ sqrt(p)
    assert hot[EOS] / 4000 == pytest.approx(
        0.1**0.5 / sum(p**0.5 for p in (0.5, 0.4, 0.1)), abs=0.03
    )


def test_sample_log_prob_is_the_model_log_prob():
    gen = torch.Generator().manual_seed(5)
    [hyps] = sample(
        TableDecoder(script),
        fake_encoded([1]),
        bos_id=BOS,
        eos_id=EOS,
        num_samples=20,
        temperature=1.5,
        generator=gen,
    )
    for h in hyps:
        steps = [script(0, h.tokens[:i])[t].item() for i, t in enumerate(h.tokens)]
        steps += [script(0, h.tokens)[EOS].item()] if h.finished else []
        assert h.log_prob == pytest.approx(sum(steps), abs=1e-5) and h.score == h.log_prob
