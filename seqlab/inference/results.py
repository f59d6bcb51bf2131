"""What a translation engine returns, what every engine offers, and the input handling they
share (source ids, length-sorted batches), kept free of torch so that every engine (PyTorch or
CTranslate2) and its callers can import them without paying for torch's start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Translation:
    """One hypothesis: detokenized text, its search score and its target token ids."""

    text: str
    score: float
    tokens: tuple[int, ...]


class TranslationEngine(Protocol):
    """What `open_translator` returns: `Translator` (PyTorch) or `CTranslate2Translator`.

    Attributes:
        engine: "torch" or "ctranslate2".
        decode: the model's decoding defaults (`seqlab.config.DecodeConfig`: beam size, length
            penalty, output cap `max_len_a * len + max_len_b`, batch size).
    """

    engine: str
    decode: Any

    def translate(
        self,
        lines: list[str],
        *,
        beam_size: int | None = None,
        nbest: int = 1,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        progress: Any = None,
    ) -> list[list[Translation]]:
        """One list of up to `nbest` translations per input line, in input order (an empty
        list for an empty line)."""
        ...


def source_ids(side: Any, line: str, number: int, limit: int | None) -> list[int]:
    """Ids of source `line` (input line `number`) without `<eos>`, cut to `limit - 1` with a
    warning when the model has `limit` positions (`<eos>` takes the last)."""
    ids = side.vocab.encode(side.tokenizer.tokenize(line))
    if limit is not None and len(ids) + 1 > limit:
        logger.warning("input line %d has %d tokens; truncated to %d", number, len(ids), limit - 1)
        ids = ids[: limit - 1]
    return ids


def length_batches(
    ids: list[list[int]],
    batch_size: int,
    max_tokens: int | None,
    group: Callable[[int], Any] | None = None,
) -> Iterator[list[int]]:
    """Indices of the non-empty inputs, sorted by length, cut into batches of at most
    `batch_size` sentences and `max_tokens` padded source tokens (with `<eos>`); with `group`,
    a batch also holds only sentences whose lengths give the same `group(length)`."""
    order = sorted((i for i, x in enumerate(ids) if x), key=lambda i: len(ids[i]))
    batch: list[int] = []
    for i in order:
        longest = len(ids[i]) + 1
        if batch and (
            len(batch) >= batch_size
            or (max_tokens is not None and longest * (len(batch) + 1) > max_tokens)
            or (group is not None and group(len(ids[i])) != group(len(ids[batch[0]])))
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
