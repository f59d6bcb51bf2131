"""Strict, streaming readers of corpus files: lines, parallel pairs, TSV pairs, SST-2.

Corpus files are read as bytes and split on `\\n` only (never on tabs, `\\r` or Unicode line
separators), then decoded as strict UTF-8: a bad byte is an error naming the file and line, never a
replacement character. `.gz` files are opened transparently. U+FEFF is removed wherever it occurs
(WikiText-2's train file has 36 mid-line). Nothing else is normalised here: U+00A0 / U+202F are the
tokenizer's business. `read_split` turns a manifest split into rows (dicts) that
`datasets.Dataset.from_generator` can consume.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from seqlab.errors import DataError

if TYPE_CHECKING:
    from seqlab.data.corpus import Manifest

BOM = "\ufeff"
STDIN = "-"  # the path that means standard input
SST2_LABELLED_HEADER = ("sentence", "label")
SST2_TEST_HEADER = ("index", "sentence")


@contextmanager
def _open_bytes(path: Path) -> Iterator[BinaryIO]:
    """Open `path` for binary reading (gunzipping `.gz`); missing file -> DataError naming it."""
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise DataError(f"{path}: is a folder, not a file") from e
    try:
        yield f
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {e}") from e
    finally:
        f.close()


def read_lines(path: str | os.PathLike, *, strip: bool = True) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (or `.gz`; "-": stdin), without their trailing newline.

    Args:
        path: the file, or "-" for standard input (read as bytes, decoded as strictly).
        strip: also strip leading/trailing whitespace (`str.strip()`); inner tabs survive.

    Raises:
        DataError: missing file, corrupt gzip, or invalid UTF-8 ("FILE:LINE: invalid UTF-8 ...").
    """
    if str(path) == STDIN:
        yield from _decode_lines(_stdin_bytes(), "<stdin>", strip)
        return
    path = Path(path)
    with _open_bytes(path) as f:
        yield from _decode_lines(f, str(path), strip)


def _stdin_bytes() -> Iterator[bytes]:
    """Standard input's lines as bytes; a text stream without a byte buffer (a `StringIO`)
    gives its text back as the bytes it came from."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        yield from buffer
    else:
        for line in sys.stdin:
            yield line.encode("utf-8", "surrogateescape")


def _decode_lines(raw_lines: Iterable[bytes], name: str, strip: bool) -> Iterator[str]:
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name}:{number}: invalid UTF-8 at byte {e.start} of the line "
                f"({raw[e.start : e.start + 4]!r})"
            ) from None
        if line.endswith("\n"):
            line = line[:-1]
        if BOM in line:
            line = line.replace(BOM, "")
        yield line.strip() if strip else line


def count_lines(path: str | os.PathLike) -> int:
    """Number of lines `read_lines(path)` yields (a last line without `\\n` counts too)."""
    path = Path(path)
    count, last = 0, b"\n"
    with _open_bytes(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def read_parallel(
    src_path: str | os.PathLike, tgt_path: str | os.PathLike
) -> Iterator[tuple[str, str]]:
    """Yield stripped (source, target) sentence pairs from two line-aligned files.

    Both files are counted first, so a misaligned corpus fails before any pair is used.

    Raises:
        DataError: the files have different line counts (both files and counts are named), both
            are empty ("empty corpus"), or a line is not valid UTF-8.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    n_src, n_tgt = count_lines(src_path), count_lines(tgt_path)
    if n_src != n_tgt:
        raise DataError(
            f"parallel files differ in length: {src_path} has {n_src} lines, {tgt_path} has {n_tgt}"
        )
    if n_src == 0:
        raise DataError(f"empty corpus: {src_path} and {tgt_path} have no lines")
    yield from zip(read_lines(src_path), read_lines(tgt_path))


def read_tsv_pairs(path: str | os.PathLike, *, columns: int = 2) -> Iterator[tuple[str, ...]]:
    """Yield the stripped fields of each `col1<TAB>col2...` line; every line must have `columns`.

    Raises:
        DataError: "FILE:LINE: expected N tab-separated columns, found M", or an empty file.
    """
    path = Path(path)
    rows = 0
    for number, line in enumerate(read_lines(path, strip=False), start=1):
        fields = line.split("\t")
        if len(fields) != columns:
            raise DataError(
                f"{path}:{number}: expected {columns} tab-separated columns, found {len(fields)}"
            )
        rows += 1
        yield tuple(field.strip() for field in fields)
    if rows == 0:
        raise DataError(f"empty corpus: {path} has no lines")


def read_sst2(path: str | os.PathLike) -> Iterator[tuple[str, int | None]]:
    """Yield (sentence, label) from a GLUE SST-2 TSV; the unlabelled test split yields label None.

    Train/dev files start with the header `sentence<TAB>label` and rows `text <TAB>0|1` (the space
    before the tab is stripped); the test file starts with `index<TAB>sentence`.

    Raises:
        DataError: an unknown header, a row with the wrong number of fields, a label other than
            0/1, or a non-integer index (each naming file and line).
    """
    path = Path(path)
    lines = enumerate(read_lines(path, strip=False), start=1)
    first = next(lines, None)
    header = tuple(first[1].split("\t")) if first else ()
    if header not in (SST2_LABELLED_HEADER, SST2_TEST_HEADER):
        raise DataError(
            f"{path}:1: not a GLUE SST-2 file: header {header!r}, expected "
            f"'sentence<TAB>label' or 'index<TAB>sentence'"
        )
    labelled = header == SST2_LABELLED_HEADER
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: expected 2 tab-separated fields, found {len(fields)}"
            )
        if labelled:
            text, label = fields
            if label.strip() not in ("0", "1"):
                raise DataError(f"{path}:{number}: label {label!r} is not 0 or 1")
            yield text.strip(), int(label)
        else:
            index, text = fields
            if not index.strip().isdigit():
                raise DataError(f"{path}:{number}: index {index!r} is not an integer")
            yield text.strip(), None


def _pair_langs(manifest: Manifest, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """The (source, target) languages; defaults to the manifest's order for 2-language corpora."""
    langs = manifest.languages
    if src_lang is None and tgt_lang is None and len(langs) == 2:
        return langs[0], langs[1]
    if src_lang is None or tgt_lang is None:
        raise DataError(
            f"corpus '{manifest.name}': give src_lang and tgt_lang (languages: {', '.join(langs)})"
        )
    for lang in (src_lang, tgt_lang):
        if lang not in langs:
            raise DataError(
                f"corpus '{manifest.name}' has no language '{lang}' (languages: {', '.join(langs)})"
            )
    return src_lang, tgt_lang


def read_split(
    manifest: Manifest,
    folder: str | os.PathLike,
    split: str,
    *,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> Iterator[dict]:
    """Yield the rows of one split of a fetched corpus, dispatching on `manifest.format`.

    Rows are `{"src", "tgt"}` for "parallel" and "tsv-pairs" (tsv columns follow
    `manifest.languages`), `{"text"}` for "lines" (one row per line, empty lines kept) and
    `{"text", "label"}` for "tsv-labelled" (label None on the unlabelled test split).

    Args:
        manifest: the corpus manifest.
        folder: the folder `fetch_corpus` returned.
        split: a split name of the manifest.
        src_lang, tgt_lang: for translation formats; default to the manifest's two languages.
    """
    folder = Path(folder)
    kind = manifest.format
    if kind == "parallel":
        src, tgt = _pair_langs(manifest, src_lang, tgt_lang)
        src_file = folder / manifest.file(split, src).path
        tgt_file = folder / manifest.file(split, tgt).path
        for s, t in read_parallel(src_file, tgt_file):
            yield {"src": s, "tgt": t}
    elif kind == "tsv-pairs":
        src, tgt = _pair_langs(manifest, src_lang, tgt_lang)
        i, j = manifest.languages.index(src), manifest.languages.index(tgt)
        columns = len(manifest.languages)
        for fields in read_tsv_pairs(folder / manifest.file(split).path, columns=columns):
            yield {"src": fields[i], "tgt": fields[j]}
    elif kind == "lines":
        for line in read_lines(folder / manifest.file(split).path):
            yield {"text": line}
    elif kind == "tsv-labelled":
        for text, label in read_sst2(folder / manifest.file(split).path):
            yield {"text": text, "label": label}
    else:
        raise DataError(f"corpus '{manifest.name}': unknown format '{kind}'")


def file_identity(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) of each file: what the cache key of a table read from
    the user's files includes (as Hugging Face `datasets` keys local files), so an edited or
    replaced file is read again while an unchanged one is never read just to be hashed.

    Raises:
        DataError: a path is missing or is a folder.
    """
    out = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}")
        stat = path.stat()
        out.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return out
