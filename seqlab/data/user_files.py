"""The user's own parallel text, as `{"src", "tgt"}` rows for `datasets.Dataset.from_generator`.

A path given as `data.train_path` (or `valid_path`, `test_path`) is one of:

- a prefix: `PREFIX.<src_lang>` and `PREFIX.<tgt_lang>`, one sentence per line (fairseq's
  `--trainpref`); each file may be gzipped (`PREFIX.de.gz`);
- a `.tsv` file: `source<TAB>target` per line;
- a `.jsonl` file: `{"translation": {"<src_lang>": ..., "<tgt_lang>": ...}}` per line (Hugging
  Face's WMT and OPUS layout) or flat `{"<src_lang>": ..., "<tgt_lang>": ...}`;
- any of these gzipped (`train.tsv.gz`, `train.jsonl.gz`).

`corpus = "hf"` reads a Hugging Face dataset (a `save_to_disk` folder, else a hub name) the same
way as JSONL rows. Files are decoded as strict UTF-8 by `readers.read_lines` (BOM removed, lines
split on `\\n` only, so CRLF reads as LF once the `\\r` is stripped); sides are stripped, so
trailing blanks make no tokens. Blank lines become pairs with an empty side, which the prepare
stage drops and counts. Malformed input is a `DataError` naming the file and the line. Rows
stream: nothing here holds more than one line of a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from seqlab.data.readers import file_identity, read_lines, read_parallel
from seqlab.errors import DataError

__all__ = ["file_identity", "input_files", "layout", "read_hf_pairs", "read_pairs"]

READER_VERSION = 1  # bump when what these readers yield changes (it is part of the cache key)
TRANSLATION_FIELD = "translation"  # HF's {lang: text} record of WMT, OPUS, IWSLT datasets


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def layout(path: str | os.PathLike) -> str:
    """ "tsv", "jsonl" or "prefix", from the file name (`.gz` ignored)."""
    name = _strip_gz(Path(path).name)
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".jsonl"):
        return "jsonl"
    return "prefix"


def prefix_file(prefix: str | os.PathLike, lang: str) -> Path:
    """`PREFIX.<lang>`, or `PREFIX.<lang>.gz` when only that exists.

    Raises:
        DataError: neither exists (naming the expected path).
    """
    plain = Path(f"{prefix}.{lang}")
    if plain.is_file():
        return plain
    zipped = Path(f"{plain}.gz")
    if zipped.is_file():
        return zipped
    raise DataError(f"{plain}: no such file (the {lang} side of prefix {prefix})")


def input_files(path: str | os.PathLike, src_lang: str, tgt_lang: str) -> list[Path]:
    """The files `read_pairs(path, ...)` reads (both sides of a prefix, else the file itself)."""
    if layout(path) == "prefix":
        return [prefix_file(path, src_lang), prefix_file(path, tgt_lang)]
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return [path]


def read_pairs(
    path: str | os.PathLike,
    src_lang: str,
    tgt_lang: str,
    src_field: str | None = None,
    tgt_field: str | None = None,
) -> Iterator[dict]:
    """Yield `{"src", "tgt"}` rows of one user path (prefix, TSV or JSONL; see the module doc).

    Raises:
        DataError: a missing file, prefix files of different line counts, invalid UTF-8, a TSV
            line without exactly two fields, a JSONL line that is not a JSON object or lacks a
            side, or a file without any line (each naming the file, and the line where one is
            at fault).
    """
    kind = layout(path)
    if kind == "prefix":
        src, tgt = input_files(path, src_lang, tgt_lang)
        for s, t in read_parallel(src, tgt):
            yield {"src": s, "tgt": t}
        return
    path = input_files(path, src_lang, tgt_lang)[0]
    rows = (
        _tsv_rows(path)
        if kind == "tsv"
        else _jsonl_rows(path, src_lang, tgt_lang, src_field, tgt_field)
    )
    empty = True
    for row in rows:
        empty = False
        yield row
    if empty:
        raise DataError(f"empty corpus: {path} has no lines")


def _tsv_rows(path: Path) -> Iterator[dict]:
    for number, line in enumerate(read_lines(path, strip=False), start=1):
        if not line.strip():
            yield {"src": "", "tgt": ""}  # a blank line: an empty pair, dropped and counted
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: expected 2 tab-separated fields (source, target), "
                f"found {len(fields)}"
            )
        yield {"src": fields[0].strip(), "tgt": fields[1].strip()}


def _jsonl_rows(
    path: Path, src_lang: str, tgt_lang: str, src_field: str | None, tgt_field: str | None
) -> Iterator[dict]:
    for number, line in enumerate(read_lines(path), start=1):
        if not line:
            yield {"src": "", "tgt": ""}
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not JSON: {e.msg} (column {e.colno})") from None
        yield pair_of(record, src_lang, tgt_lang, src_field, tgt_field, f"{path}:{number}")


def _side(record: dict, lang: str, field: str | None, where: str) -> str:
    """The text of one side of `record`: `record[field]` (a text, or a {lang: text} record) with
    `field`; else `record["translation"][lang]` when there is such a record, else `record[lang]`."""
    if field is None:
        nested = record.get(TRANSLATION_FIELD)
        field = TRANSLATION_FIELD if isinstance(nested, dict) else lang
    if field not in record:
        raise DataError(
            f"{where}: no key '{field}' (keys: {', '.join(map(str, record)) or 'none'})"
        )
    value = record[field]
    if isinstance(value, dict):
        if lang not in value:
            keys = ", ".join(map(str, value)) or "none"
            raise DataError(f"{where}: '{field}' has no language key '{lang}' (keys: {keys})")
        value = value[lang]
    if value is None:
        return ""  # a missing translation: an empty side, dropped and counted
    if not isinstance(value, str):
        raise DataError(f"{where}: the {lang} side is {type(value).__name__}, not text")
    return value.strip()


def pair_of(
    record: object,
    src_lang: str,
    tgt_lang: str,
    src_field: str | None,
    tgt_field: str | None,
    where: str,
) -> dict:
    """`{"src", "tgt"}` of one JSON / dataset record (see `_side`); `where` names it in errors."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    return {
        "src": _side(record, src_lang, src_field, where),
        "tgt": _side(record, tgt_lang, tgt_field, where),
    }


def load_hf(hf_path: str, hf_config: str | None, split: str, *, training: bool = False):
    """Split `split` of a Hugging Face dataset: a `save_to_disk` folder, else a hub dataset.

    A folder holding one `Dataset` (not a `DatasetDict`) is the training split (`training`);
    validation and test pairs are then held out of it (`data.valid_size`, `data.test_size`).

    Raises:
        DataError: the folder holds no such split (naming the splits it has), or holds one
            `Dataset` and `split` is not the training split.
    """
    import datasets

    if Path(hf_path).is_dir():
        try:
            loaded = datasets.load_from_disk(hf_path)
        except FileNotFoundError as e:
            raise DataError(f"{hf_path}: not a folder written by save_to_disk ({e})") from e
        if isinstance(loaded, datasets.Dataset):
            if not training:
                raise DataError(
                    f"{hf_path}: one dataset, not a DatasetDict with a '{split}' split; it can "
                    "only be the training split (hold pairs out with data.valid_size / test_size)"
                )
            return loaded
        if split not in loaded:
            raise DataError(f"{hf_path}: no split '{split}' (splits: {', '.join(loaded)})")
        return loaded[split]
    try:
        return datasets.load_dataset(hf_path, hf_config, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:  # unknown name, split, offline
        raise DataError(f"hf dataset '{hf_path}' split '{split}': {e}") from e


def read_hf_pairs(
    hf_path: str,
    hf_config: str | None,
    split: str,
    src_lang: str,
    tgt_lang: str,
    src_field: str | None = None,
    tgt_field: str | None = None,
    training: bool = False,
) -> Iterator[dict]:
    """Yield `{"src", "tgt"}` rows of one split of a Hugging Face dataset, a batch at a time."""
    table = load_hf(hf_path, hf_config, split, training=training)
    number = 0
    for batch in table.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*batch.values()):
            record = dict(zip(columns, values))
            yield pair_of(
                record,
                src_lang,
                tgt_lang,
                src_field,
                tgt_field,
                f"{hf_path} [{split}] row {number}",
            )
            number += 1
    if number == 0:
        raise DataError(f"empty corpus: {hf_path} [{split}] has no rows")
