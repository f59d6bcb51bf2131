"""Masked-LM data: paragraphs of a corpus -> sentences -> tokenizer -> ids -> packed NSP pairs.

`prepare(recipe)` is what `seqlab prepare` runs for `task = "masked_lm"`. Each line of a "lines"
corpus (WikiText-2) is a paragraph; those with two sentences or more are split into sentences as
d2l does (`seqlab.data.sentence_pairs.split_paragraph`). The user's own text (`corpus = "files"`)
is read the same way, a paragraph a line, its sentences ending at `.`, `!` or `?` and a space
(`split_sentences`); without `valid_path`, `valid_size` whole paragraphs drawn with the recipe's
seed are held out for validation. The sentence tables and their ids are
Arrow tables cached by fingerprint (`seqlab.data.dataset`); the tokenizer (SentencePiece, or a
whitespace vocabulary with `min_freq` as d2l) is trained on the training sentences only and cached
under `<cache>/prepared/<fingerprint>/`. Pairs are drawn once per split from the recipe's seed
(next sentence or a sentence of another paragraph) and packed `<cls> A <sep> B <sep>`, truncated
to `max_len`; the masks are drawn later, afresh each epoch (`seqlab.data.masking`).

WikiText-2 writes unknown words as the literal `<unk>`; `encode_text` maps it to the `<unk>` id
whatever the tokenizer (SentencePiece would otherwise spell it out as pieces).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import MemoryMappedTable

from seqlab.config import MaskedLMData, Recipe
from seqlab.data.arrow_stream import record_batches
from seqlab.data.corpus import cache_dir, fetch_corpus, load_manifest
from seqlab.data.dataset import (
    WRITER_BATCH_SIZE,
    encode_dataset,
    fingerprint,
    list_lengths,
    sample_rows,
    text_dataset,
    write_arrow_stream,
)
from seqlab.data.readers import file_identity, read_lines, read_split
from seqlab.data.sentence_pairs import (
    iter_nsp_pairs,
    packed_pairs,
    split_paragraph,
    split_sentences,
)
from seqlab.data.tokenize import (
    SentencePieceTokenizer,
    WhitespaceTokenizer,
    tokenizer_from_config,
)
from seqlab.data.vocab import UNK, Side, Vocab
from seqlab.errors import DataError

READER_VERSION = 1  # bump when the sentence rows change
PAIRS_VERSION = 1  # bump when the packed pairs change
DEFAULT_VALID_SIZE = 1000  # paragraphs held out of data.train_path without data.valid_path


@dataclass
class PreparedMaskedLM:
    """Everything pretraining needs from the data stage."""

    side: Side  # tokenizer and vocabulary
    splits: dict[str, datasets.Dataset]  # "train", "valid": columns ids, segments, is_next

    def summary(self) -> str:
        lines = []
        for name, ds in self.splits.items():
            tokens = int(list_lengths(ds, "ids").sum())
            is_next = pc.sum(ds.data.column("is_next")).as_py() or 0
            lines.append(f"{name}: {len(ds)} sentence pairs ({is_next} true next), {tokens} tokens")
        lines.append(f"vocabulary: {len(self.side.vocab)} ({self.side.tokenizer!r})")
        return "\n".join(lines)


def _sentence_rows(corpus: str, folder: str, split: str, lowercase: bool):
    manifest = load_manifest(corpus)
    paragraph = 0
    for row in read_split(manifest, Path(folder), split):
        sentences = split_paragraph(row["text"], lowercase=lowercase)
        for sentence in sentences:
            yield {"paragraph": paragraph, "text": sentence}
        paragraph += bool(sentences)


def _file_sentence_rows(path: str, lowercase: bool):
    """Rows of the user's text file: one paragraph a line, sentences split at . ! ? + space."""
    paragraph = 0
    for line in read_lines(path, strip=False):
        sentences = split_sentences(line, lowercase=lowercase)
        for sentence in sentences:
            yield {"paragraph": paragraph, "text": sentence}
        paragraph += bool(sentences)
    if paragraph == 0:
        raise DataError(
            f"{path}: no line has two sentences or more (one paragraph a line; a sentence ends "
            "with '.', '!' or '?' followed by a space)"
        )


def _file_table(path: str, data: MaskedLMData, cache: Path) -> datasets.Dataset:
    fp = fingerprint("mlm-file-sentences", READER_VERSION, file_identity([path]), data.lowercase)
    kwargs = {"path": path, "lowercase": data.lowercase}
    return text_dataset(_file_sentence_rows, kwargs, fp, cache / "datasets")


def hold_out_paragraphs(
    table: datasets.Dataset, size: int, seed: int, path: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, valid): `size` paragraphs drawn with `seed` from the sentence table of `path`
    go to valid, whole, so no validation sentence's neighbour is trained on."""
    paragraph = table.data.column("paragraph").to_numpy()  # (sentences,)
    count = int(paragraph.max()) + 1
    if size >= count - 1:
        raise DataError(
            f"data.valid_size = {size} holds out {size} of the {count} paragraphs (lines of two "
            f"sentences or more) of {path}, leaving fewer than two to train on; lower it or "
            "give data.valid_path"
        )
    held = np.zeros(count, dtype=bool)
    held[random.Random(seed).sample(range(count), size)] = True
    valid = held[paragraph]  # (sentences,)
    return table.select(np.flatnonzero(~valid)), table.select(np.flatnonzero(valid))


def file_sentence_tables(data: MaskedLMData, cache: Path, seed: int) -> dict[str, datasets.Dataset]:
    """Sentence tables of `data.train_path` and `data.valid_path` (or a seeded hold-out)."""
    train = _file_table(data.train_path, data, cache)
    if data.valid_path is not None:
        return {"train": train, "valid": _file_table(data.valid_path, data, cache)}
    size = DEFAULT_VALID_SIZE if data.valid_size is None else data.valid_size
    train, valid = hold_out_paragraphs(train, size, seed, data.train_path)
    return {"train": train, "valid": valid}


def sentence_tables(data: MaskedLMData, cache: Path, seed: int = 1) -> dict[str, datasets.Dataset]:
    """Tables of (paragraph number, sentence text) for the train and valid splits."""
    if data.corpus == "files":
        return file_sentence_tables(data, cache, seed)
    manifest = load_manifest(data.corpus)
    manifest.require_format(
        "lines", "masked_lm needs a 'lines' corpus (one paragraph per line, e.g. wikitext-2)"
    )
    manifest.require_splits(
        {"data.train_split": data.train_split, "data.valid_split": data.valid_split}
    )
    folder = fetch_corpus(manifest, cache=cache)
    tables = {}
    for name, split in (("train", data.train_split), ("valid", data.valid_split)):
        files = [f.sha256 for f in manifest.files_for(split)]
        kwargs = {
            "corpus": manifest.name,
            "folder": str(folder),
            "split": split,
            "lowercase": data.lowercase,
        }
        fp = fingerprint("mlm-sentences", READER_VERSION, files, split, data.lowercase)
        tables[name] = text_dataset(_sentence_rows, kwargs, fp, cache / "datasets")
        if len(tables[name]) == 0:
            raise DataError(
                f"corpus '{manifest.name}', split '{split}': no paragraph has two sentences"
            )
    return tables


def _texts(ds: datasets.Dataset, drop_unk: bool):
    """The `text` column, a record batch at a time, read from `ds`'s files (not mapped)."""
    for batch in record_batches(ds, ["text"]):
        for text in batch.column("text").to_pylist():
            yield text.replace(UNK, " ") if drop_unk else text


def train_side(data, train: datasets.Dataset, seed: int = 1) -> Side:
    """SentencePiece or whitespace vocabulary on the `text` column of `train`.

    `data` is a `MaskedLMData` or `ClassificationData` (both have the tokenizer keys).
    SentencePiece keeps its whole input in memory, so it sees a sample of at most
    `sp_input_sentence_size` sentences drawn with `seed`; word counts stream over every row.
    """
    if data.tokenizer == "sentencepiece":
        sample = sample_rows(train, data.sp_input_sentence_size, seed)
        tokenizer = SentencePieceTokenizer.train(
            _texts(sample, drop_unk=True),
            model_type=data.sp_model_type,
            vocab_size=data.sp_vocab_size,
            character_coverage=data.sp_character_coverage,
            lowercase=data.lowercase,
            max_sentences=data.sp_input_sentence_size,
        )
        return Side(tokenizer, tokenizer.vocab())
    tokenizer = WhitespaceTokenizer(lowercase=data.lowercase)
    counts = Counter()
    for text in _texts(train, drop_unk=False):
        counts.update(tokenizer.tokenize(text))
    if not counts:
        raise DataError(f"corpus '{data.corpus}': the training split has no tokens")
    return Side(tokenizer, Vocab.build(counts, min_freq=data.min_freq, max_size=data.max_vocab))


def cached_side(data, train: datasets.Dataset, cache: Path, seed: int = 1) -> Side:
    """`train_side`, reused from `<cache>/prepared/` when the same settings saw the same data."""
    keys = ("tokenizer", "lowercase", "min_freq", "max_vocab", "sp_model_type", "sp_vocab_size")
    settings = {k: getattr(data, k) for k in (*keys, "sp_character_coverage")}
    if data.tokenizer == "sentencepiece":  # the sample it trains on
        settings |= {"sp_input_sentence_size": data.sp_input_sentence_size, "seed": seed}
    folder = cache / "prepared" / fingerprint(train._fingerprint, "side", settings)
    config_path, model_path = folder / "tokenizer.json", folder / "tokenizer.model"
    if config_path.is_file():
        model = model_path.read_bytes() if model_path.is_file() else None
        tokenizer = tokenizer_from_config(json.loads(config_path.read_text()), model)
        return Side(tokenizer, Vocab.load(folder / "vocab.json"))
    side = train_side(data, train, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(side.tokenizer, "model_bytes", None)
    if model is not None:
        model_path.write_bytes(model)
    side.vocab.save(folder / "vocab.json")
    config_path.write_text(json.dumps(side.tokenizer.config()))
    return side


def encode_table(
    ds: datasets.Dataset, side: Side, cache: Path, num_proc: int = 1
) -> datasets.Dataset:
    """`ds` with an `ids` column of its `text` (the literal `<unk>` as the `<unk>` id), written
    a record batch at a time under `<cache>/datasets/encoded/` and reused while the table,
    tokenizer and vocabulary are the same (`seqlab.data.dataset.encode_dataset`)."""
    sides = {"text": ("ids", side.tokenizer, side.vocab)}
    return encode_dataset(ds, sides, cache / "datasets", num_proc=num_proc, literal_unk=True)


class _Paragraphs(Sequence):
    """Paragraphs as row numbers of a sentence table: paragraph p holds rows
    `rows[starts[p]:starts[p + 1]]` (numpy arrays), 16 bytes a sentence however long it is."""

    def __init__(self, paragraph: np.ndarray, keep: np.ndarray):
        """`paragraph` (N,): each row's paragraph number; `keep` (N,): the rows to use."""
        count = int(paragraph.max()) + 1 if len(paragraph) else 0
        rows = np.flatnonzero(keep)
        order = np.argsort(paragraph[rows], kind="stable")  # table order within a paragraph
        self.rows = rows[order]
        self.starts = np.searchsorted(paragraph[self.rows], np.arange(count + 1))

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, p: int) -> np.ndarray:
        return self.rows[self.starts[p] : self.starts[p + 1]]


def _take(column: pa.ChunkedArray, rows) -> list[list[int]]:
    """The lists at `rows` of a memory-mapped list column."""
    return column.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()


PAIRS_SCHEMA = pa.schema(
    [
        ("ids", pa.list_(pa.int32())),
        ("segments", pa.list_(pa.int8())),
        ("is_next", pa.int8()),
    ]
)


def pair_table(
    sentences: datasets.Dataset,
    data: MaskedLMData,
    seed: int,
    limit: int | None,
    cache: Path,
) -> datasets.Dataset:
    """Draw the NSP pairs of one encoded sentence table and pack them (first `limit` kept).

    The paragraphs are held as row numbers (`_Paragraphs`), the pairs drawn one at a time with
    the draws of `nsp_pairs` and packed and written `WRITER_BATCH_SIZE` at a time to an Arrow
    file under `<cache>/datasets/pairs/`, cached by the table's and the settings' fingerprint:
    memory holds two arrays of the sentence count and one batch, not the corpus's ids.
    """
    vocab = Vocab.build({})
    settings = (data.next_prob, data.max_len, vocab.cls_id, vocab.sep_id)
    fp = fingerprint(PAIRS_VERSION, sentences._fingerprint, seed, limit, settings)
    path = cache / "datasets" / "pairs" / f"{fp}.arrow"
    if not path.is_file():
        paragraph = sentences.data.column("paragraph").to_numpy()  # (N,) the table is contiguous
        paragraphs = _Paragraphs(paragraph, list_lengths(sentences, "ids") > 0)
        pairs = iter_nsp_pairs(paragraphs, data.next_prob, random.Random(seed))
        if limit is not None:
            pairs = itertools.islice(pairs, limit)
        ids = sentences.data.column("ids")
        path.parent.mkdir(parents=True, exist_ok=True)

        def batches():
            while chunk := list(itertools.islice(pairs, WRITER_BATCH_SIZE)):
                a, b, is_next = zip(*chunk, strict=True)
                packed = packed_pairs(
                    zip(_take(ids, a), _take(ids, b), is_next, strict=True),
                    max_len=data.max_len,
                    cls_id=vocab.cls_id,
                    sep_id=vocab.sep_id,
                )
                yield pa.RecordBatch.from_pydict(packed, schema=PAIRS_SCHEMA)

        write_arrow_stream(path, PAIRS_SCHEMA, batches())
    return datasets.Dataset(MemoryMappedTable.from_file(str(path)), fingerprint=fp)


def _split_name(data: MaskedLMData, name: str) -> str:
    """How a message names split `name` ("train", "valid") of the recipe's corpus."""
    if data.corpus != "files":
        return f"corpus '{data.corpus}', split '{getattr(data, name + '_split')}'"
    if name == "valid" and data.valid_path is None:
        return f"the paragraphs held out of {data.train_path} (data.valid_size)"
    return str(getattr(data, f"{name}_path"))


def prepare(recipe: Recipe, *, cache: Path | None = None) -> PreparedMaskedLM:
    """Fetch the corpus, train the tokenizer, encode sentences and draw the NSP pairs."""
    data: MaskedLMData = recipe.data
    cache = cache or cache_dir()
    tables = sentence_tables(data, cache, recipe.seed)
    side = cached_side(data, tables["train"], cache, recipe.seed)
    splits = {}
    for i, name in enumerate(("train", "valid")):
        encoded = encode_table(tables[name], side, cache, data.num_proc)
        limit = data.max_train_pairs if name == "train" else data.max_valid_pairs
        try:
            splits[name] = pair_table(encoded, data, recipe.seed * 1000 + i, limit, cache)
        except DataError as error:
            raise DataError(f"{_split_name(data, name)}: {error}") from None
    return PreparedMaskedLM(side, splits)
