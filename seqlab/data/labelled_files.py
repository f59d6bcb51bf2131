"""The user's own labelled text: TSV, CSV or JSONL files with a text column and a label column.

The format follows the file name (`.tsv`, `.csv`, `.jsonl`, each optionally `.gz`). TSV and CSV
files start with a header row naming their columns; TSV fields are split on every tab (no quoting,
as GLUE's files), CSV follows RFC 4180 (quoted fields may hold commas, quotes and line breaks).
A JSONL line is one JSON object. Lines are read strictly (`seqlab.data.readers.read_lines`): a
BOM is dropped, invalid UTF-8 is an error naming the line; a `\\r` before the newline (CRLF) is
dropped, and blank lines are skipped. Texts and labels are stripped; a JSON label may be a string
or an integer (read as its decimal string).

Every error names the file and line: a missing column (with the columns found), a row with the
wrong number of fields, an empty text or label, a JSONL line that is not a JSON object.
Label names are the training file's distinct labels, sorted (numerically when all are integers,
so "2" comes before "10"); a validation or test label outside them is an error naming it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from seqlab.data.readers import _open_bytes, read_lines
from seqlab.errors import ConfigError, DataError

FORMATS = (".tsv", ".csv", ".jsonl")


def file_format(path: str | os.PathLike) -> str:
    """ ".tsv", ".csv" or ".jsonl" from the name of `path` (a `.gz` suffix is looked through)."""
    suffixes = Path(path).suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1].lower() if suffixes else ""
    if kind not in FORMATS:
        raise ConfigError(
            f"{path}: cannot tell the format from the name; labelled files end in "
            f"{', '.join(FORMATS)} (optionally .gz)"
        )
    return kind


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without `\\r\\n`) of the non-blank lines of `path`."""
    for number, line in enumerate(read_lines(path, strip=False), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            yield number, line


def _row(path: Path, number: int, text: str, label: str, columns: tuple[str, str]) -> dict:
    text, label = text.strip(), label.strip()
    if not text:
        raise DataError(f"{path}:{number}: empty text (column '{columns[0]}')")
    if not label:
        raise DataError(f"{path}:{number}: empty label (column '{columns[1]}')")
    return {"line": number, "text": text, "label": label}


def _header_positions(path: Path, header: list[str], columns: tuple[str, str]) -> list[int]:
    names = [name.strip() for name in header]
    for column in columns:
        if column not in names:
            found = ", ".join(repr(n) for n in names)
            raise DataError(f"{path}:1: no column '{column}' in the header (columns: {found})")
    return [names.index(column) for column in columns]


def _read_tsv(path: Path, columns: tuple[str, str]) -> Iterator[dict]:
    lines = _numbered_lines(path)
    first = next(lines, None)
    if first is None:
        return
    header = first[1].split("\t")
    i, j = _header_positions(path, header, columns)
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"{path}:{number}: expected {len(header)} tab-separated fields "
                f"(as the header), found {len(fields)}"
            )
        yield _row(path, number, fields[i], fields[j], columns)


def _csv_lines(path: Path) -> Iterable[str]:
    for line in read_lines(path, strip=False):
        yield (line[:-1] if line.endswith("\r") else line) + "\n"


def _read_csv(path: Path, columns: tuple[str, str]) -> Iterator[dict]:
    reader = csv.reader(_csv_lines(path), strict=True)
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            return
        i, j = _header_positions(path, header, columns)
        for fields in reader:
            number = reader.line_num
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{path}:{number}: expected {len(header)} comma-separated fields "
                    f"(as the header), found {len(fields)}"
                )
            yield _row(path, number, fields[i], fields[j], columns)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {e}") from None


def _json_value(path: Path, number: int, record: dict, key: str, what: str) -> str:
    if key not in record:
        keys = ", ".join(repr(k) for k in record)
        raise DataError(f"{path}:{number}: no key '{key}' (keys: {keys or 'none'})")
    value = record[key]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and what == "label":
        return str(value)
    kinds = "a string or an integer" if what == "label" else "a string"
    raise DataError(f"{path}:{number}: '{key}' is {json.dumps(value)[:40]}, not {kinds}")


def _read_jsonl(path: Path, columns: tuple[str, str]) -> Iterator[dict]:
    for number, line in _numbered_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: not a JSON object: {line.strip()[:40]}")
        text = _json_value(path, number, record, columns[0], "text")
        label = _json_value(path, number, record, columns[1], "label")
        yield _row(path, number, text, label, columns)


_READERS = {".tsv": _read_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}


def read_labelled(
    path: str | os.PathLike, text_column: str = "text", label_column: str = "label"
) -> Iterator[dict]:
    """Yield `{"line", "text", "label"}` rows of a labelled TSV / CSV / JSONL file, streaming.

    Raises:
        ConfigError: the name says no known format.
        DataError: naming the file (and line): a missing file or column, a malformed row, an
            empty text or label, invalid UTF-8, a file without rows.
    """
    path = Path(path)
    reader = _READERS[file_format(path)]
    with _open_bytes(path):  # a missing file or folder is named before anything is parsed
        pass
    rows = 0
    for row in reader(path, (text_column, label_column)):
        rows += 1
        yield row
    if rows == 0:
        raise DataError(f"{path}: no labelled rows")


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=lambda label: (int(label), label))
    except ValueError:
        return sorted(distinct)
