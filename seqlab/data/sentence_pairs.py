"""Sentence pairs for next-sentence prediction (Devlin et al. 2019, §3.1 "Task #2"; d2l §15.9).

A paragraph is a list of sentences; each sentence but the last gives one pair (A, B) whose B is
the true next sentence with probability `next_prob`, else a sentence of another paragraph. A pair
is packed as `<cls> A <sep> B <sep>` with segment ids 0 for `<cls> A <sep>` and 1 for `B <sep>`,
and a pair longer than the model's `max_len` is truncated by dropping tokens from the end of the
longer sentence, one at a time (BERT's `truncate_seq_pair`), so neither side vanishes.
These functions are pure: randomness comes from the `random.Random` the caller passes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from seqlab.errors import DataError

T = TypeVar("T")
SENTENCE_SEPARATOR = " . "  # WikiText-2 is tokenized: a sentence ends with " . " (as d2l splits)


def split_paragraph(line: str, *, lowercase: bool = True, min_sentences: int = 2) -> list[str]:
    """The sentences of one WikiText-style paragraph line, or [] when it has fewer than
    `min_sentences` (headings such as ` = Title = ` and blank lines have one or none).

    As d2l's `_read_wiki`: strip, lowercase, split on " . " (the separator is dropped).
    """
    text = line.strip()
    if lowercase:
        text = text.lower()
    sentences = [s.strip() for s in text.split(SENTENCE_SEPARATOR)]
    sentences = [s for s in sentences if s]
    return sentences if len(sentences) >= min_sentences else []


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(line: str, *, lowercase: bool = True, min_sentences: int = 2) -> list[str]:
    """The sentences of one paragraph of plain text, or [] when it has fewer than
    `min_sentences`: the user's own files (`data.corpus = "files"`), whose sentences end with
    `.`, `!` or `?` followed by whitespace (the punctuation stays with its sentence). WikiText's
    tokenized " . " splits the same way, its full stops kept."""
    text = line.strip()
    if lowercase:
        text = text.lower()
    sentences = [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]
    return sentences if len(sentences) >= min_sentences else []


def nsp_pairs(
    paragraphs: Sequence[Sequence[T]], next_prob: float, rng: random.Random
) -> list[tuple[T, T, bool]]:
    """(A, B, is_next) for every sentence A that has a successor in its paragraph.

    With probability `next_prob` B is that successor (is_next True); otherwise B is a uniformly
    drawn sentence of a uniformly drawn *other* paragraph (is_next False).

    Raises:
        DataError: fewer than two non-empty paragraphs (no "other paragraph" to draw from).
    """
    return list(iter_nsp_pairs(paragraphs, next_prob, rng))


def iter_nsp_pairs(
    paragraphs: Sequence[Sequence[T]], next_prob: float, rng: random.Random
) -> Iterator[tuple[T, T, bool]]:
    """`nsp_pairs` one pair at a time, with the same draws from `rng`: a caller can pack and
    write the pairs of a large corpus as they come, its paragraphs held as row numbers.

    Raises:
        DataError: (on the first pair) fewer than two non-empty paragraphs.
    """
    usable = [i for i, p in enumerate(paragraphs) if len(p)]
    if len(usable) < 2:
        raise DataError(f"next-sentence pairs need two paragraphs or more, got {len(usable)}")
    for i, paragraph in enumerate(paragraphs):
        for j in range(len(paragraph) - 1):
            if rng.random() < next_prob:
                yield paragraph[j], paragraph[j + 1], True
                continue
            other = i
            while other == i:
                other = usable[rng.randrange(len(usable))]
            yield paragraph[j], rng.choice(paragraphs[other]), False


def truncate_pair(a: Sequence[T], b: Sequence[T], max_tokens: int) -> tuple[list[T], list[T]]:
    """Drop tokens from the end of the longer side (A on ties) until len(a) + len(b) <= max_tokens.

    Raises:
        ValueError: max_tokens < 2 (each side keeps at least one token when it has one).
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens = {max_tokens}: a pair needs room for two tokens")
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) >= len(b) else b
        longer.pop()
    return a, b


def pack_pair(
    a: Iterable[int], b: Iterable[int] | None, *, cls_id: int, sep_id: int
) -> tuple[list[int], list[int]]:
    """(`<cls> A <sep> B <sep>`, segment ids 0...0 1...1); `<cls> A <sep>` alone when b is None."""
    first = [cls_id, *a, sep_id]
    if b is None:
        return first, [0] * len(first)
    second = [*b, sep_id]
    return first + second, [0] * len(first) + [1] * len(second)


def packed_pairs(
    pairs: Iterable[tuple[Sequence[int], Sequence[int], bool]],
    *,
    max_len: int,
    cls_id: int,
    sep_id: int,
) -> dict[str, list]:
    """Columns `ids`, `segments`, `is_next` (0/1) of the truncated, packed pairs."""
    columns: dict[str, list] = {"ids": [], "segments": [], "is_next": []}
    for a, b, is_next in pairs:
        a, b = truncate_pair(a, b, max_len - 3)  # room for <cls> and two <sep>
        ids, segments = pack_pair(a, b, cls_id=cls_id, sep_id=sep_id)
        columns["ids"].append(ids)
        columns["segments"].append(segments)
        columns["is_next"].append(int(is_next))
    return columns
