"""Corpora as Hugging Face `datasets` tables: Arrow on disk, memory-mapped, cached by fingerprint.

Text rows come from a generator (the strict readers in `readers.py`), so a corpus larger than memory
streams into Arrow once. Every derived table (tokenized ids, length-filtered) carries a fingerprint
built from the input files' sha256 and the tokenizer settings, so changing either rebuilds it and
nothing else does. Tokenizing runs as a batched `map` with `num_proc` workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.exceptions import DatasetGenerationError

from seqlab.data.tokenize import Tokenizer, tokenizer_from_config
from seqlab.data.vocab import Vocab
from seqlab.errors import SeqlabError


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (file hashes, settings, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


def text_dataset(
    rows: Callable[..., Iterator[dict]], kwargs: dict, fp: str, cache_dir: Path
) -> datasets.Dataset:
    """Materialise `rows(**kwargs)` as an Arrow table cached under `cache_dir` by `fp`.

    `datasets` writes the table under a temporary name and renames it when the generator is
    done, so an error or Ctrl-C part way leaves no table a rerun would load. A reader's
    `SeqlabError` (a malformed line) comes out as itself, not wrapped in datasets' own error.
    """
    with _quiet_progress():
        try:
            return datasets.Dataset.from_generator(
                rows, gen_kwargs=kwargs, cache_dir=str(cache_dir), fingerprint=fp
            )
        except DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, SeqlabError):
                raise cause from None
            raise


def _encode_batch(batch: dict, columns: dict, settings: dict) -> dict:
    """`map` worker: text columns -> id columns (tokenizers rebuilt per worker from settings).

    A SentencePiece tokenizer whose own pieces are the vocabulary encodes the whole batch in
    one call to the processor (its ids are the vocabulary's), several times faster than piece
    strings mapped one sentence at a time.
    """
    out = {}
    for text_column, id_column in columns.items():
        tokenizer, vocab, own_pieces = _worker_side(*settings[text_column])
        texts = batch[text_column]
        if own_pieces:
            out[id_column] = tokenizer.encode_ids_batch(texts)
        else:
            out[id_column] = [vocab.encode(tokenizer.tokenize(text)) for text in texts]
    return out


_WORKER_CACHE: dict[str, tuple[Tokenizer, Vocab, bool]] = {}


def _worker_side(
    config: dict, model_bytes: bytes | None, tokens: list[str], key: str
) -> tuple[Tokenizer, Vocab, bool]:
    """(tokenizer, vocabulary, whether the vocabulary is the tokenizer's own piece list), built
    once per worker; `key` is the settings' fingerprint, computed once by `encode_dataset` (not
    per batch: hashing a large vocabulary is slower than encoding a batch)."""
    if key not in _WORKER_CACHE:
        tokenizer = tokenizer_from_config(config, model_bytes)
        vocab = Vocab(tokens)
        own = hasattr(tokenizer, "encode_ids_batch") and tokenizer.vocab().tokens == vocab.tokens
        _WORKER_CACHE[key] = (tokenizer, vocab, own)
    return _WORKER_CACHE[key]


def tokenizer_settings(
    tokenizer: Tokenizer, vocab: Vocab
) -> tuple[dict, bytes | None, list[str], str]:
    """What a worker process needs to rebuild a tokenizer and vocabulary (picklable), and the
    fingerprint of all of it."""
    config, model = tokenizer.config(), getattr(tokenizer, "model_bytes", None)
    tokens = list(vocab.tokens)
    return (
        config,
        model,
        tokens,
        fingerprint(config, hashlib.sha256(model or b"").hexdigest(), tokens),
    )


def encode_dataset(
    ds: datasets.Dataset,
    sides: dict[str, tuple[str, Tokenizer, Vocab]],
    *,
    num_proc: int = 1,
) -> datasets.Dataset:
    """Add id columns: `sides` maps a text column to (id column, tokenizer, vocab).

    The new fingerprint combines the input table's with every tokenizer's settings and vocabulary,
    so the cached Arrow file is reused exactly when nothing that shapes the ids changed.
    """
    columns = {text: id_col for text, (id_col, _, _) in sides.items()}
    settings = {text: tokenizer_settings(tok, vocab) for text, (_, tok, vocab) in sides.items()}
    fp = fingerprint(ds._fingerprint, columns, {k: v[3] for k, v in settings.items()})
    with _quiet_progress():
        return ds.map(
            _encode_batch,
            batched=True,
            fn_kwargs={"columns": columns, "settings": settings},
            num_proc=num_proc if num_proc > 1 else None,
            new_fingerprint=fp,
        )


def list_lengths(ds: datasets.Dataset, column: str) -> np.ndarray:
    """(N,) lengths of list column `column` for the N rows `ds` holds.

    A filtered or selected `Dataset` keeps the whole Arrow table (`ds.data`) plus an indices
    mapping; reading `ds.data.column(...)` directly would see the rows the filter dropped. The
    lengths are computed on the memory-mapped column, then taken through that mapping.
    """
    lengths = pc.list_value_length(ds.data.column(column))  # (rows of the whole table,)
    mapping = ds._indices  # the filter/select mapping; None when the table is contiguous
    if mapping is not None:
        lengths = lengths.take(mapping.column(0))  # (N,)
    return lengths.to_numpy().astype(np.int64)


@dataclass
class FilterReport:
    """How many rows a filter kept and, per reason, how many it dropped."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        return f"kept {self.kept}, dropped {sum(self.dropped.values())} ({reasons})"


def filter_pairs(
    ds: datasets.Dataset, *, max_len: int | None, max_ratio: float | None
) -> tuple[datasets.Dataset, FilterReport]:
    """Drop pairs with an empty side, a side over `max_len` tokens or a ratio over `max_ratio`.

    Returns the kept rows and a report counting each reason (the first that applies, in that
    order), so nothing disappears unexplained. The lengths are read from the memory-mapped id
    columns and compared as arrays; the kept rows become an index mapping, not a copy.
    """
    src = list_lengths(ds, "src_ids")  # (N,)
    tgt = list_lengths(ds, "tgt_ids")  # (N,)
    longer, shorter = np.maximum(src, tgt), np.minimum(src, tgt)  # (N,), (N,)
    empty = shorter == 0
    too_long = ~empty & (longer > max_len) if max_len is not None else np.zeros_like(empty)
    skewed = np.zeros_like(empty)
    if max_ratio is not None:
        skewed = ~empty & ~too_long & (longer > max_ratio * shorter)
    report = FilterReport()
    for reason, mask in (
        ("empty side", empty),
        (f"longer than {max_len} tokens", too_long),
        (f"length ratio above {max_ratio}", skewed),
    ):
        if mask.any():
            report.dropped[reason] = int(mask.sum())
    keep = ~(empty | too_long | skewed)
    report.kept = int(keep.sum())
    if report.kept == len(ds):
        return ds, report
    fp = fingerprint(ds._fingerprint, "filter", max_len, max_ratio)
    return ds.select(np.flatnonzero(keep), new_fingerprint=fp), report


class _quiet_progress:
    """Silence datasets' own progress bars (our CLI reports what it did in one summary)."""

    def __enter__(self):
        self._was = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self._was:
            datasets.utils.logging.enable_progress_bar()
