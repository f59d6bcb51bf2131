"""Corpora as Hugging Face `datasets` tables: Arrow on disk, memory-mapped, cached by fingerprint.

Text rows come from a generator (the strict readers in `readers.py`), so a corpus larger than memory
streams into Arrow once. Every derived table (tokenized ids, length-filtered) carries a fingerprint
built from its input's (the files' identity, the tokenizer settings), so changing either rebuilds
it and nothing else does. Tokenizing reads the text table a record batch at a time
(`arrow_stream`) and writes the id table with `num_proc` worker processes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetGenerationError
from datasets.table import ConcatenationTable, MemoryMappedTable

from seqlab.data.arrow_stream import record_batches
from seqlab.data.tokenize import Tokenizer, encode_text, tokenizer_from_config
from seqlab.data.vocab import UNK, Vocab
from seqlab.errors import SeqlabError, WriteError, is_write_failure, why_unwritable

# Rows per Arrow record batch in the tables we write. Opening a table or reading its lengths
# touches every batch's header and offsets through the memory map, and the kernel maps 64 KiB
# around each touch: with datasets' default of 1000 rows that kept ~19% of a table's size
# resident, with 10,000 rows ~3%.
WRITER_BATCH_SIZE = 10_000
ENCODED_VERSION = 2  # what `encode_dataset` writes (2: int32 ids, streamed; 1: int64 via map)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (file hashes, settings, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


def text_dataset(
    rows: Callable[..., Iterator[dict]],
    kwargs: dict,
    fp: str,
    cache_dir: Path,
) -> datasets.Dataset:
    """Materialise `rows(**kwargs)` as an Arrow table cached under `cache_dir` by `fp`.

    `datasets` writes the table under a temporary name and renames it when the generator is
    done, so an error or Ctrl-C part way leaves no table a rerun would load. A reader's
    `SeqlabError` (a malformed line) comes out as itself, not wrapped in datasets' own error.
    Record batches hold `WRITER_BATCH_SIZE` rows.
    """
    with _quiet_progress():
        try:
            return datasets.Dataset.from_generator(
                rows,
                gen_kwargs=kwargs,
                cache_dir=str(cache_dir),
                fingerprint=fp,
                writer_batch_size=WRITER_BATCH_SIZE,
            )
        except DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, SeqlabError):
                raise cause from None
            if is_write_failure(cause):  # pyarrow names no file
                raise WriteError(
                    f"{cache_dir}: could not write a table: {why_unwritable(cause)}; "
                    "nothing a rerun would load was kept"
                ) from error
            raise


def _encode_batch(batch: dict, columns: dict, settings: dict, literal_unk: bool = False) -> dict:
    """Worker: text columns -> id columns (tokenizers rebuilt per worker from settings).

    A SentencePiece tokenizer whose own pieces are the vocabulary encodes the whole batch in
    one call to the processor (its ids are the vocabulary's), several times faster than piece
    strings mapped one sentence at a time. With `literal_unk`, a text holding the literal
    `<unk>` is encoded by `encode_text` (that token becomes the `<unk>` id), as BERT's tasks read
    WikiText.
    """
    out = {}
    for text_column, id_column in columns.items():
        tokenizer, vocab, own_pieces = _worker_side(*settings[text_column])
        texts = batch[text_column]
        if own_pieces:
            ids = tokenizer.encode_ids_batch(texts)
        else:
            ids = [vocab.encode(tokenizer.tokenize(text)) for text in texts]
        if literal_unk:
            ids = [encode_text(tokenizer, vocab, t) if UNK in t else i for t, i in zip(texts, ids)]
        out[id_column] = ids
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
    cache_dir: Path,
    *,
    num_proc: int = 1,
    literal_unk: bool = False,
) -> datasets.Dataset:
    """`ds` with id columns added: `sides` maps a text column to (id column, tokenizer, vocab).

    The rows stream from `ds`'s files a record batch at a time (`arrow_stream`), so tokenizing
    a corpus of any size holds one batch, not the pages of the whole memory-mapped text; the text
    columns pass through as Arrow arrays and only the int32 ids are built from Python lists.
    `num_proc` processes each write one shard of rows. The table is cached under
    `cache_dir/encoded/` by a fingerprint of `ds`'s and every tokenizer's settings and
    vocabulary, so it is reused exactly when nothing that shapes the ids changed; each shard is
    written under a temporary name and renamed when whole, so an interrupted run leaves nothing
    a rerun would load. `literal_unk`: the literal `<unk>` in a text is the `<unk>` id
    (`encode_text`).
    """
    columns = {text: id_col for text, (id_col, _, _) in sides.items()}
    settings = {text: tokenizer_settings(tok, vocab) for text, (_, tok, vocab) in sides.items()}
    keys = {k: v[3] for k, v in settings.items()}
    fp = fingerprint(ENCODED_VERSION, ds._fingerprint, columns, keys, literal_unk)
    features = datasets.Features(dict(ds.features))
    for id_column in columns.values():
        features[id_column] = datasets.List(datasets.Value("int32"))
    bounds = np.linspace(0, len(ds), max(1, min(num_proc, len(ds))) + 1).astype(int)
    shards = len(bounds) - 1
    folder = Path(cache_dir) / "encoded"
    paths = [folder / f"{fp}-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    jobs = [
        (ds, columns, settings, features, int(start), int(stop), path, literal_unk)
        for start, stop, path in zip(bounds[:-1], bounds[1:], paths, strict=True)
        if not path.is_file()
    ]
    if jobs:
        folder.mkdir(parents=True, exist_ok=True)
        if len(jobs) == 1:
            _write_encoded(*jobs[0])
        else:
            with ProcessPoolExecutor(len(jobs)) as pool:
                list(pool.map(_write_encoded, *zip(*jobs, strict=True)))
    tables = [MemoryMappedTable.from_file(str(path)) for path in paths]
    table = tables[0] if shards == 1 else ConcatenationTable.from_tables(tables)
    return datasets.Dataset(table, fingerprint=fp)


def _write_encoded(
    ds: datasets.Dataset,
    columns: dict[str, str],
    settings: dict,
    features: datasets.Features,
    start: int,
    stop: int,
    path: Path,
    literal_unk: bool,
) -> None:
    """Write rows `start:stop` of `ds` with their id columns to the Arrow stream file `path`."""
    schema = features.arrow_schema

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in record_batches(ds, list(ds.column_names), start, stop):
            texts = {column: batch.column(column).to_pylist() for column in columns}
            ids = _encode_batch(texts, columns, settings, literal_unk)
            arrays = [
                batch.column(name)
                if name in batch.schema.names
                else pa.array(ids[name], type=schema.field(name).type)
                for name in schema.names
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    write_arrow_stream(path, schema, batches())


def write_arrow_stream(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
    """Write `batches` to the Arrow stream file `path` (read back by `MemoryMappedTable`) under
    a temporary name, renamed when whole: an error or Ctrl-C leaves nothing a rerun would load."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        os.replace(partial, path)
    except OSError as error:
        if is_write_failure(error):  # pyarrow names no file
            raise WriteError(
                f"{path}: could not be written: {why_unwritable(error)}; nothing was kept"
            ) from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def sample_rows(ds: datasets.Dataset, rows: int, seed: int) -> datasets.Dataset:
    """A seeded sample of `rows` rows of `ds` in table order (all of `ds` when it is smaller)."""
    if rows >= len(ds):
        return ds
    chosen = np.sort(np.random.default_rng(seed).choice(len(ds), size=rows, replace=False))
    return ds.select(chosen, new_fingerprint=fingerprint(ds._fingerprint, "sample", rows, seed))


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
