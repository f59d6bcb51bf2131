"""A `datasets.Dataset`'s rows in record batches read from its files, not through its memory map.

A `Dataset` reads its Arrow files through a memory map, and every page a pass touches stays in
the process's resident set while the table is open: one pass over a corpus of a million pairs adds
the corpus's whole size (hundreds of MB) to peak RSS, and the prepare stage makes three passes
(vocabulary counts or the SentencePiece sample, tokenizing, the summary). Those passes read each
row once, in order, so here they read the files as Arrow streams with ordinary reads, one record
batch at a time: the memory they hold is one batch, whatever the corpus size.

A selected or filtered dataset (a hold-out, a sample) is read through its index mapping when that
mapping is ascending, as `select` of sorted rows gives. Anything else (an in-memory table, a
mapping out of order, a table transformed after loading) falls back to `Dataset.iter`, which
gives the same rows through the memory map.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
import pyarrow as pa
from datasets.table import ConcatenationTable, MemoryMappedTable

__all__ = ["record_batches"]

_HARMLESS_REPLAYS = {"replace_schema_metadata"}  # table edits that change no column's values


def _stream_files(ds: datasets.Dataset) -> list[str] | None:
    """The Arrow files whose rows, read in order, are `ds.data`'s; None when there are none
    (an in-memory table) or a column was changed after loading (a cast, a rename)."""
    table = ds.data
    blocks = table.blocks if isinstance(table, ConcatenationTable) else [[table]]
    if any(len(row) != 1 for row in blocks):  # tables joined side by side
        return None
    files = []
    for (block,) in blocks:
        if not isinstance(block, MemoryMappedTable):
            return None
        if any(op not in _HARMLESS_REPLAYS for op, _, _ in block.replays):
            return None
        files.append(block.path)
    return files


def _row_indices(ds: datasets.Dataset) -> np.ndarray | None:
    """(N,) the table rows `ds` holds, in order; None when it holds the whole table."""
    if ds._indices is None:
        return None
    return ds._indices.column(0).to_numpy().astype(np.int64)


def record_batches(
    ds: datasets.Dataset, columns: list[str], start: int = 0, stop: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Rows `start:stop` of `ds` (positions in `ds`, after any selection), `columns` only, as
    record batches in order; read from the files with ordinary reads where possible (module doc).
    """
    stop = len(ds) if stop is None else min(stop, len(ds))
    if start >= stop:
        return
    files, rows = _stream_files(ds), _row_indices(ds)
    if files is None or (rows is not None and np.any(np.diff(rows) < 0)):
        yield from _mapped_batches(ds, columns, start, stop)
        return
    first, last = (start, stop) if rows is None else (rows[start], rows[stop - 1] + 1)
    offset = 0  # table row of the current batch's first row
    for path in files:
        with pa.OSFile(path) as source:
            for batch in pa.ipc.open_stream(source):
                begin, end = offset, offset + batch.num_rows
                offset = end
                if end <= first:
                    continue
                if begin >= last:
                    return
                batch = batch.select(columns)
                if rows is None:
                    yield batch.slice(max(first - begin, 0), min(last, end) - max(first, begin))
                    continue
                lo = max(np.searchsorted(rows, begin), start)
                hi = min(np.searchsorted(rows, end), stop)
                if hi > lo:
                    yield batch.take(pa.array(rows[lo:hi] - begin))


def _mapped_batches(
    ds: datasets.Dataset, columns: list[str], start: int, stop: int, size: int = 1000
) -> Iterator[pa.RecordBatch]:
    part = ds.select_columns(columns).with_format("arrow")
    for lo in range(start, stop, size):
        yield from part[lo : min(lo + size, stop)].to_batches()
