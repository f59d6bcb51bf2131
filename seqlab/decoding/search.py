"""Search over any `Decoder`: greedy search, beam search and ancestral sampling.

Everything here is written against the `Decoder` protocol of `seqlab/models/interfaces.py`
(`init_state`, `step`, `DecoderState.reorder` and `expand`) and never asks which model it decodes.
The loops only call the decoder and keep books; the decisions (beam selection, length penalty,
stopping bound, sampling filters) are the pure tensor functions of `beam.py`.

Conventions shared by all three:
- Maximum output length per source row: `int(max_len_a * src_len + max_len_b)` generated tokens
  (fairseq's semantics; src_len = `encoded.lengths`). Each step generates one token, eos included,
  so a row runs at most that many steps: a finished hypothesis has at most max_len - 1 tokens
  before its eos, and one that reaches max_len tokens is returned unfinished (`finished=False`).
- `max_len`: an optional hard cap on that length for every row (the model's position limit).
- `min_len`: eos is blocked (log-prob -inf) while fewer than `min_len` tokens were generated.
- Log-probabilities are the model's `log_softmax` in float32, unmodified by temperature or
  filtering, summed over the chosen tokens including eos.
- No token id is blocked besides eos under `min_len`: pad and bos can be generated if the model
  ranks them first (fairseq blocks pad; a trained model puts no mass there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.decoding.beam import (
    check_penalty_kind,
    penalized,
    score_bound,
    select_step,
    top_k_filter,
    top_p_filter,
)
from seqlab.errors import ConfigError
from seqlab.models.interfaces import Decoder, DecoderState, Encoded


@dataclass(frozen=True)
class Hypothesis:
    """One search result.

    Attributes:
        tokens: generated ids, without bos and without eos.
        score: the ranking score, `log_prob` after the length penalty (greedy and sampling: no
            penalty, score = log_prob).
        log_prob: raw sum of token log-probs, including the eos step when finished.
        finished: True when the hypothesis ended with eos, False when it hit the maximum length.
    """

    tokens: tuple[int, ...]
    score: float
    log_prob: float
    finished: bool


def max_lengths(
    encoded: Encoded, max_len_a: float, max_len_b: int, max_len: int | None = None
) -> Tensor:
    """(B,) long: `int(max_len_a * src_len + max_len_b)` per source row, at least 0.

    `max_len`, when given, caps every row: a model with a fixed number of positions (a
    Transformer's positional table) cannot be stepped further.
    """
    lengths = encoded.lengths.tolist()
    limits = [max(0, int(max_len_a * n + max_len_b)) for n in lengths]
    if max_len is not None:
        limits = [min(limit, max_len) for limit in limits]
    return torch.tensor(limits, dtype=torch.long, device=encoded.memory.device)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} = {value} must be at least 1")


def _next_log_probs(decoder: Decoder, last: Tensor, state: DecoderState, block_eos: int | None):
    """One decoder step: last (N,) -> (float32 log-probs (N, V), next state); eos blocked if set."""
    logits, state = decoder.step(last, state)  # (N, V)
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    if block_eos is not None:
        log_probs[:, block_eos] = float("-inf")
    return log_probs, state


# --- greedy search and sampling: one token per row and step -----------------------------------


def _decode_rows(
    decoder: Decoder,
    encoded: Encoded,
    choose: Callable[[Tensor], Tensor],
    *,
    bos_id: int,
    eos_id: int,
    limits: Tensor,
    min_len: int,
) -> list[Hypothesis]:
    """Extend every row by `choose(log_probs (N, V)) -> tokens (N,)` until eos or its limit.

    Finished rows are fed eos and their outputs ignored; the loop stops once every row is done.
    """
    rows, device = encoded.batch_size, encoded.memory.device
    state = decoder.init_state(encoded)
    last = torch.full((rows,), bos_id, dtype=torch.long, device=device)  # (N,)
    steps: list[Tensor] = []
    log_prob = torch.zeros(rows, device=device)  # (N,)
    length = torch.zeros(rows, dtype=torch.long, device=device)  # (N,) tokens without eos
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # (N,)
    done = limits <= 0  # (N,)
    t = 0
    while not bool(done.all()):
        log_probs, state = _next_log_probs(decoder, last, state, eos_id if t < min_len else None)
        token = choose(log_probs).masked_fill(done, eos_id)  # (N,)
        chosen = log_probs.gather(1, token.unsqueeze(1)).squeeze(1)  # (N,)
        log_prob += chosen.masked_fill(done, 0.0)
        ends = (token == eos_id) & ~done  # (N,)
        length += (~done & ~ends).long()
        finished |= ends
        t += 1
        done = done | ends | (limits <= t)
        steps.append(token)
        last = token
    out = torch.stack(steps, dim=1) if steps else last.new_zeros(rows, 0)  # (N, T)
    results = zip(out.tolist(), length.tolist(), log_prob.tolist(), finished.tolist())
    return [Hypothesis(tuple(ids[:n]), lp, lp, f) for ids, n, lp, f in results]


@torch.no_grad()
def greedy_search(
    decoder: Decoder,
    encoded: Encoded,
    *,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    max_len: int | None = None,
    min_len: int = 0,
) -> list[list[Hypothesis]]:
    """Pick the most likely token at every step, for a batch of B sources at once.

    Args:
        decoder: any `Decoder`; encoded: its sources (B rows, padded).
        bos_id, eos_id: first input token and end-of-sequence id.
        max_len_a, max_len_b, max_len, min_len: see the module docstring.

    Returns:
        B lists, each holding one `Hypothesis` (score = log_prob, no length penalty).
    """
    limits = max_lengths(encoded, max_len_a, max_len_b, max_len)  # (B,)
    hyps = _decode_rows(
        decoder,
        encoded,
        lambda lp: lp.argmax(dim=-1),
        bos_id=bos_id,
        eos_id=eos_id,
        limits=limits,
        min_len=min_len,
    )
    return [[h] for h in hyps]


@torch.no_grad()
def sample(
    decoder: Decoder,
    encoded: Encoded,
    *,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    max_len: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    min_len: int = 0,
) -> list[list[Hypothesis]]:
    """Ancestral sampling with temperature, top-k and nucleus (top-p) filtering.

    At each step the next token is drawn from softmax(log_probs / temperature), restricted to the
    `top_k` most likely tokens (0: all) and then to the nucleus of mass `top_p` (Holtzman et al.
    2020). Reproducible given `generator` (on the decoder's device). `log_prob` and `score` are
    the model's own log-probability of the drawn sequence (before temperature and filtering).

    Returns:
        B lists of `num_samples` hypotheses each, in the order drawn.
    """
    _positive("num_samples", num_samples)
    if temperature <= 0.0:
        raise ConfigError(f"temperature = {temperature} must be > 0 (use greedy_search for 0)")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_k = {top_k} must be >= 0 and top_p = {top_p} in (0, 1]")

    def draw(log_probs: Tensor) -> Tensor:
        logits = top_p_filter(top_k_filter(log_probs / temperature, top_k), top_p)  # (N, V)
        probs = torch.softmax(logits, dim=-1)  # (N, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)

    batch = encoded.batch_size
    expand = torch.arange(batch, device=encoded.memory.device).repeat_interleave(num_samples)
    limits = max_lengths(encoded, max_len_a, max_len_b, max_len)[expand]  # (B*n,)
    hyps = _decode_rows(
        decoder,
        encoded.reorder(expand),
        draw,
        bos_id=bos_id,
        eos_id=eos_id,
        limits=limits,
        min_len=min_len,
    )
    return [hyps[i * num_samples : (i + 1) * num_samples] for i in range(batch)]


# --- beam search ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Beams:
    """The alive beams of the sources still searching (loop state of `beam_search`).

    Attributes:
        sources: original index of each active source (Ba ints, on the host: the loop's
            stopping bookkeeping is per source and Python-side).
        scores: (Ba, K) cumulative log-probs, -inf for empty beams.
        tokens: (Ba*K, t) ids generated so far.
        last: (Ba*K,) the token to feed next; (Ba,) before the first step, when each source's
            K beams are still one beam (see `_first_step`).
        state: decoder state of the rows of `last`.
    """

    sources: list[int]
    scores: Tensor
    tokens: Tensor
    last: Tensor
    state: DecoderState

    def keep(self, active: list[bool]) -> _Beams:
        """Only the sources where `active` (Ba bools) is True."""
        device = self.scores.device
        kept = [i for i, a in enumerate(active) if a]
        rows = torch.tensor(kept, dtype=torch.long, device=device)  # (Ba',)

        def flat(width: int) -> Tensor:  # (Ba' * width,) rows of the kept sources
            return (rows.unsqueeze(1) * width + torch.arange(width, device=device)).view(-1)

        stepped = flat(self.last.numel() // len(self.sources))  # rows of `last` and `state`
        return _Beams(
            [self.sources[i] for i in kept],
            self.scores[rows],
            self.tokens[flat(self.scores.size(1))],
            self.last[stepped],
            self.state.reorder(stepped),
        )


class _Finished:
    """Per source, the K best hypotheses found so far, best first."""

    def __init__(self, batch: int, beam_size: int, alpha: float, kind: str):
        self.hyps: list[list[Hypothesis]] = [[] for _ in range(batch)]
        self.beam_size, self.alpha, self.kind = beam_size, alpha, kind

    def add(self, sources: list[int], tokens: Tensor, log_probs: Tensor, finished: bool) -> None:
        """tokens (n, t) and log_probs (n,) of n new hypotheses of `sources`."""
        length = tokens.size(1) + int(finished)
        lengths = torch.full_like(log_probs, length)  # (n,)
        scores = penalized(log_probs, lengths, self.alpha, self.kind)  # (n,)
        rows = zip(sources, tokens.tolist(), log_probs.tolist(), scores.tolist())
        for source, ids, log_prob, score in rows:
            kept = self.hyps[source]
            kept.append(Hypothesis(tuple(ids), score, log_prob, finished))
            kept.sort(key=lambda h: h.score, reverse=True)
            del kept[self.beam_size :]

    def done(self, beams: _Beams, t: int, limits: list[int], early_stopping: bool) -> list[bool]:
        """Per active source: can it no longer improve? (`beam_search`'s stopping rule).

        The bound is computed only when a full source would otherwise keep searching
        (`early_stopping` off), so the default rule costs one small reduction per step.
        """
        alive = torch.isfinite(beams.scores).any(dim=1).tolist()
        full = [len(self.hyps[source]) >= self.beam_size for source in beams.sources]
        if early_stopping or not any(full):
            return [not a or f for a, f in zip(alive, full, strict=True)]
        longest = torch.tensor([limits[i] for i in beams.sources], device=beams.scores.device)
        bound = score_bound(beams.scores, t, longest, self.alpha, self.kind)
        return [
            not a or (f and best <= self.hyps[source][-1].score)
            for source, a, f, best in zip(beams.sources, alive, full, bound.tolist(), strict=True)
        ]


def _advance(beams: _Beams, pool: _Finished, log_probs: Tensor, eos_id: int) -> _Beams:
    """Select from log_probs (Ba, K, V): end eos candidates into `pool`, extend the survivors."""
    batch, width = beams.scores.shape
    sel = select_step(beams.scores, log_probs, eos_id)
    offset = torch.arange(batch, device=log_probs.device).unsqueeze(1) * width  # (Ba, 1)
    where = sel.finalize.nonzero()  # (n, 2): (source row, candidate rank)
    if where.numel():
        parents = (offset + sel.parents)[where[:, 0], where[:, 1]]  # (n,) flat rows
        sources = [beams.sources[i] for i in where[:, 0].tolist()]
        pool.add(sources, beams.tokens[parents], sel.values[where[:, 0], where[:, 1]], True)
    flat = (offset + sel.beam_parents).view(-1)  # (Ba*K,)
    tokens = torch.cat([beams.tokens[flat], sel.tokens.view(-1, 1)], dim=1)  # (Ba*K, t+1)
    state = beams.state.reorder(flat)
    return _Beams(beams.sources, sel.scores, tokens, sel.tokens.view(-1), state)


def _first_step(decoder: Decoder, beams: _Beams, block_eos: int | None):
    """The first step, on one row per source: before it, the K beams of a source are the same
    beam (BOS, one live and K - 1 at -inf), so stepping K rows would compute K equal rows.
    The state becomes one per beam after it.

    Returns:
        log-probs (Ba, K, V) (each source's row repeated, a view) and the state of Ba*K rows.
    """
    width = beams.scores.size(1)
    log_probs, state = _next_log_probs(decoder, beams.last, beams.state, block_eos)  # (Ba, V)
    return log_probs.unsqueeze(1).expand(-1, width, -1), state.expand(width)


def _retire(beams: _Beams, pool: _Finished, at_limit: list[bool]) -> None:
    """Hand the finite alive beams of the sources where `at_limit` to `pool`, unfinished."""
    limited = torch.tensor(at_limit, device=beams.scores.device)  # (Ba,)
    alive = limited.unsqueeze(1) & torch.isfinite(beams.scores)  # (Ba, K)
    where = alive.nonzero()  # (n, 2)
    if where.numel():
        flat = where[:, 0] * beams.scores.size(1) + where[:, 1]  # (n,)
        sources = [beams.sources[i] for i in where[:, 0].tolist()]
        pool.add(sources, beams.tokens[flat], beams.scores[where[:, 0], where[:, 1]], False)


def _check_beam(beam_size: int, nbest: int, kind: str) -> None:
    _positive("beam_size", beam_size)
    _positive("nbest", nbest)
    if nbest > beam_size:
        raise ConfigError(f"nbest = {nbest} must not exceed beam_size = {beam_size}")
    check_penalty_kind(kind)


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    encoded: Encoded,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    max_len: int | None = None,
    length_penalty: float = 1.0,
    length_penalty_kind: str = "gnmt",
    nbest: int = 1,
    min_len: int = 0,
    early_stopping: bool = True,
) -> list[list[Hypothesis]]:
    """Beam search over B sources × K beams at once (Koehn 2004; fairseq's `SequenceGenerator`).

    Each source starts with one live beam (the others at -inf, so step one does not pick K copies
    of the same token), and that first step runs the decoder on one row per source. Every step
    keeps the 2K best continuations: eos among the first K ends a hypothesis, the K best others
    continue (`beam.select_step`). Hypotheses are ranked by `score = log_prob / lp(len)`
    (`beam.length_penalty`, len counting eos).

    Stopping, per source: when no beam is alive; when it reaches its maximum length (its alive
    beams become unfinished hypotheses); and, with `early_stopping` (the default, fairseq's
    rule), as soon as K hypotheses have finished. With `early_stopping=False` a source stops only
    once no alive beam can beat its K-th finished hypothesis (`beam.score_bound`): slower, exact
    with respect to the beam. Finished sources leave the batch.

    Returns:
        B lists of up to `nbest` hypotheses (fewer only when fewer exist), best score first.
    """
    _check_beam(beam_size, nbest, length_penalty_kind)
    batch, device = encoded.batch_size, encoded.memory.device
    limits = max_lengths(encoded, max_len_a, max_len_b, max_len)  # (B,)
    scores = torch.full((batch, beam_size), float("-inf"), device=device)  # (B, K)
    scores[:, 0] = 0.0
    beams = _Beams(
        list(range(batch)),
        scores,
        torch.zeros(batch * beam_size, 0, dtype=torch.long, device=device),
        torch.full((batch,), bos_id, dtype=torch.long, device=device),  # one row per source
        decoder.init_state(encoded),
    )
    pool = _Finished(batch, beam_size, length_penalty, length_penalty_kind)
    limits_host = limits.tolist()
    t = 0
    while beams.sources:
        stop = pool.done(beams, t, limits_host, early_stopping)
        at_limit = [not s and limits_host[i] <= t for i, s in zip(beams.sources, stop, strict=True)]
        if any(at_limit):
            _retire(beams, pool, at_limit)
        if any(stop) or any(at_limit):
            beams = beams.keep([not (s or a) for s, a in zip(stop, at_limit, strict=True)])
            if not beams.sources:
                break
        block = eos_id if t < min_len else None
        if t == 0:
            log_probs, state = _first_step(decoder, beams, block)  # (Ba, K, V)
        else:
            log_probs, state = _next_log_probs(decoder, beams.last, beams.state, block)
            log_probs = log_probs.view(*beams.scores.shape, -1)  # (Ba*K, V) -> (Ba, K, V)
        beams = dataclasses.replace(beams, state=state)
        beams = _advance(beams, pool, log_probs, eos_id)
        t += 1
    return [hyps[:nbest] for hyps in pool.hyps]
