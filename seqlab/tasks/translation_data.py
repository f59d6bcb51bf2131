"""Translation data: read a parallel corpus, tokenize it, build vocabularies, cache the ids.

`prepare(recipe)` is what `seqlab prepare` runs and what training starts from. The text comes from
a shipped manifest, synthetic tasks, the user's files (`corpus = "files"`) or a Hugging Face dataset
(`corpus = "hf"`); a validation or test set the source lacks is a seeded hold-out of training
pairs. Everything streams through Arrow tables on disk: vocabulary counts are accumulated line by
line and SentencePiece trains on a seeded sample of `sp_input_sentence_size` sentences, so memory
does not grow with the corpus. Tokenizers and vocabularies are built on the training split only,
cached (atomically) under `<cache>/prepared/<fingerprint>/`, and every split becomes an Arrow table
with `src`, `tgt` (text) and `src_ids`, `tgt_ids` columns. Pairs with an empty side are dropped
from every split and, in training, those over the length limits; the summary counts each reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from seqlab.config import Recipe, TranslationData
from seqlab.data.arrow_stream import record_batches
from seqlab.data.atomic import atomic_folder
from seqlab.data.corpus import cache_dir, fetch_corpus, load_manifest
from seqlab.data.dataset import (
    FilterReport,
    encode_dataset,
    filter_pairs,
    fingerprint,
    list_lengths,
    sample_rows,
    text_dataset,
)
from seqlab.data.readers import read_split
from seqlab.data.synthetic import synthetic_pairs
from seqlab.data.tokenize import (
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
)
from seqlab.data.user_files import READER_VERSION as USER_READER_VERSION
from seqlab.data.user_files import (
    file_identity,
    input_files,
    load_hf,
    read_hf_pairs,
    read_pairs,
)
from seqlab.data.vocab import Side, Vocab
from seqlab.errors import ConfigError, DataError

READER_VERSION = 1  # bump when readers change what rows they yield
SIDES_VERSION = 2  # the cached sides' file layout (`Side.save`)
DEFAULT_VALID_SIZE = 1000  # pairs held out when the source has no validation set


@dataclass
class PreparedTranslation:
    """Everything training needs from the data stage."""

    src: Side
    tgt: Side
    splits: dict[str, datasets.Dataset]  # "train", "valid", optionally "test"
    reports: dict[str, FilterReport]  # what filtering kept and dropped, per split

    @property
    def report(self) -> FilterReport:
        """The training split's filter report."""
        return self.reports["train"]

    def summary(self) -> str:
        lines = [f"train pairs: {self.report}"]
        for name, report in self.reports.items():
            if name != "train" and report.dropped:
                lines.append(f"{name} pairs: {report}")
        for name, ds in self.splits.items():
            src_tokens, tgt_tokens = _token_count(ds, "src_ids"), _token_count(ds, "tgt_ids")
            lines.append(
                f"{name}: {len(ds)} pairs, {src_tokens} source tokens, {tgt_tokens} target tokens"
            )
        shared = " (joint)" if self.src.vocab is self.tgt.vocab else ""
        lines.append(
            f"vocabulary: source {len(self.src.vocab)}, target {len(self.tgt.vocab)}{shared}"
        )
        return "\n".join(lines)


def _token_count(ds: datasets.Dataset, column: str) -> int:
    return int(list_lengths(ds, column).sum())


def _corpus_rows(corpus: str, folder: str, split: str, src_lang: str, tgt_lang: str):
    manifest = load_manifest(corpus)
    yield from read_split(manifest, Path(folder), split, src_lang=src_lang, tgt_lang=tgt_lang)


def _synthetic_rows(task: str, n: int, symbols: int, seed: int):
    for src, tgt in synthetic_pairs(task, n, num_symbols=symbols, seed=seed):
        yield {"src": src, "tgt": tgt}


def text_splits(data: TranslationData, cache: Path, seed: int) -> dict[str, datasets.Dataset]:
    """Raw text tables for train / valid (/ test) of the recipe's corpus."""
    store = cache / "datasets"
    if data.corpus == "synthetic":
        sizes = {"train": data.synthetic_size, "valid": 200, "test": 200}
        return {
            name: text_dataset(
                _synthetic_rows,
                {
                    "task": data.synthetic_task,
                    "n": n,
                    "symbols": data.synthetic_symbols,
                    "seed": seed * 1000 + i,
                },
                fingerprint("synthetic", data.synthetic_task, n, data.synthetic_symbols, seed, i),
                store,
            )
            for i, (name, n) in enumerate(sizes.items())
        }
    if data.corpus == "files":
        tables = _file_tables(data, store)
    elif data.corpus == "hf":
        tables = _hf_tables(data, store)
    else:
        tables = _manifest_tables(data, cache, store)
    return hold_out(tables, _hold_out_sizes(data), seed)


def _manifest_tables(
    data: TranslationData, cache: Path, store: Path
) -> dict[str, datasets.Dataset]:
    manifest = load_manifest(data.corpus)
    names = {name: split for name, split in _wanted(data).items() if split is not None}
    manifest.require_splits({f"data.{name}_split": split for name, split in names.items()})
    folder = fetch_corpus(manifest, cache=cache)
    tables = {}
    for name, split in names.items():
        files = [f.sha256 for f in manifest.files_for(split)]
        kwargs = {
            "corpus": manifest.name,
            "folder": str(folder),
            "split": split,
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
        }
        fp = fingerprint(READER_VERSION, files, split, data.src_lang, data.tgt_lang)
        tables[name] = text_dataset(_corpus_rows, kwargs, fp, store)
    return tables


def _wanted(data: TranslationData) -> dict[str, str | None]:
    """The split (or path) each table is read from; None where it is held out or absent."""
    if data.corpus == "files":
        given = {"train": data.train_path, "valid": data.valid_path, "test": data.test_path}
    else:
        given = {"train": data.train_split, "valid": data.valid_split, "test": data.test_split}
    if data.valid_size is not None:
        given["valid"] = None
    if data.test_size is not None:
        given["test"] = None
    return given


def _hold_out_sizes(data: TranslationData) -> dict[str, int]:
    """How many training pairs to hold out for the splits the source does not give."""
    wanted, sizes = _wanted(data), {}
    if wanted["valid"] is None:
        sizes["valid"] = data.valid_size or DEFAULT_VALID_SIZE
    if wanted["test"] is None and data.test_size is not None:
        sizes["test"] = data.test_size
    return sizes


def _file_tables(data: TranslationData, store: Path) -> dict[str, datasets.Dataset]:
    """Tables of the user's files, cached by the files' path, size and modification time."""
    tables = {}
    for name, path in _wanted(data).items():
        if path is None:
            continue
        identity = file_identity(input_files(path, data.src_lang, data.tgt_lang))
        kwargs = {
            "path": path,
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
            "src_field": data.src_field,
            "tgt_field": data.tgt_field,
        }
        fp = fingerprint("files", USER_READER_VERSION, identity, kwargs)
        tables[name] = text_dataset(read_pairs, kwargs, fp, store)
    return tables


def _hf_tables(data: TranslationData, store: Path) -> dict[str, datasets.Dataset]:
    """Tables of a Hugging Face dataset's splits, cached by the dataset's own fingerprint."""
    tables = {}
    for name, split in _wanted(data).items():
        if split is None:
            continue
        source = load_hf(data.hf_path, data.hf_config, split, training=name == "train")
        kwargs = {
            "hf_path": data.hf_path,
            "hf_config": data.hf_config,
            "split": split,
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
            "src_field": data.src_field,
            "tgt_field": data.tgt_field,
            "training": name == "train",
        }
        fp = fingerprint("hf", USER_READER_VERSION, source._fingerprint, kwargs)
        tables[name] = text_dataset(read_hf_pairs, kwargs, fp, store)
    return tables


def hold_out(
    tables: dict[str, datasets.Dataset], sizes: dict[str, int], seed: int
) -> dict[str, datasets.Dataset]:
    """Move a seeded sample of `sizes[name]` training pairs into table `name` (valid, test).

    The held-out rows are disjoint and never trained on; each keeps the corpus order. Only an
    index mapping over the training table is written, not a copy of its text.
    """
    if not sizes:
        return tables
    train = tables["train"]
    total, spare = len(train), sum(sizes.values())
    if spare >= total:
        keys = " + ".join(f"data.{name}_size = {n}" for name, n in sizes.items())
        raise ConfigError(
            f"holding out {keys} leaves no training pair of {total}; lower them or give "
            "validation (and test) data"
        )
    order = np.random.default_rng(seed).permutation(total)  # (total,)
    out, start = dict(tables), 0
    for name, n in [*sizes.items(), ("train", total - spare)]:
        rows = np.sort(order[start : start + n])  # each table's rows depend on every size
        fp = fingerprint(train._fingerprint, "hold-out", sizes, seed, name)
        out[name] = train.select(rows, new_fingerprint=fp)
        start += n
    return out


def _iter_texts(ds: datasets.Dataset, columns: tuple[str, ...]) -> Iterator[str]:
    """The texts of `columns`, a record batch at a time, read from `ds`'s files (not mapped)."""
    for batch in record_batches(ds, list(columns)):
        for column in columns:
            yield from batch.column(column).to_pylist()


def _build_side(
    data: TranslationData, train: datasets.Dataset, columns: tuple[str, ...], seed: int
) -> Side:
    """Train (SentencePiece) or build (word/char counts) a tokenizer and vocabulary on train.

    SentencePiece keeps its whole input in memory, so it sees a seeded sample of at most
    `sp_input_sentence_size` sentences; word and character counts stream over every row.
    """
    if data.tokenizer == "sentencepiece":
        rows = max(1, data.sp_input_sentence_size // len(columns))
        tokenizer = SentencePieceTokenizer.train(
            _iter_texts(sample_rows(train, rows, seed), columns),
            model_type=data.sp_model_type,
            vocab_size=data.sp_vocab_size,
            character_coverage=data.sp_character_coverage,
            lowercase=data.lowercase,
            max_sentences=data.sp_input_sentence_size,
        )
        return Side(tokenizer, tokenizer.vocab())
    tokenizer = (WordTokenizer if data.tokenizer == "word" else CharTokenizer)(
        lowercase=data.lowercase
    )
    counts = Counter()
    for text in _iter_texts(train, columns):
        counts.update(tokenizer.tokenize(text))
    if not counts:
        raise DataError(f"corpus '{data.corpus}': the training split has no tokens")
    return Side(tokenizer, Vocab.build(counts, min_freq=data.min_freq, max_size=data.max_vocab))


def _save_sides(folder: Path, sides: dict[str, Side]) -> None:
    """Write `sides` into `folder` whole (`atomic_folder`), so an interrupted prepare leaves no
    half-written folder that a rerun would load."""
    with atomic_folder(folder, force=True) as partial:
        for name, side in sides.items():
            side.save(partial, name)


def _load_side(folder: Path, name: str) -> Side | None:
    """The cached side `name`, or None when this folder holds none yet."""
    if not (folder / f"{name}.tokenizer.json").is_file():
        return None
    return Side.load(folder, name)


def build_sides(
    data: TranslationData, train: datasets.Dataset, cache: Path, seed: int = 1
) -> tuple[Side, Side]:
    """Source and target sides, reused from the cache when the same settings saw the same data."""
    keys = ["tokenizer", "lowercase", "joint_vocab", "min_freq", "max_vocab"]
    if data.tokenizer == "sentencepiece":
        keys += ["sp_model_type", "sp_vocab_size", "sp_character_coverage"]
        keys += ["sp_input_sentence_size"]
    settings = {k: getattr(data, k) for k in keys}
    if data.tokenizer == "sentencepiece":
        settings["seed"] = seed
    folder = cache / "prepared" / fingerprint(SIDES_VERSION, train._fingerprint, settings)
    if data.joint_vocab:
        side = _load_side(folder, "joint")
        if side is None:
            side = _build_side(data, train, ("src", "tgt"), seed)
            _save_sides(folder, {"joint": side})
        return side, side
    src, tgt = _load_side(folder, "src"), _load_side(folder, "tgt")
    if src is None or tgt is None:
        src, tgt = (
            _build_side(data, train, ("src",), seed),
            _build_side(data, train, ("tgt",), seed),
        )
        _save_sides(folder, {"src": src, "tgt": tgt})
    return src, tgt


def encode_splits(
    tables: dict[str, datasets.Dataset], src: Side, tgt: Side, data: TranslationData, cache: Path
) -> tuple[dict[str, datasets.Dataset], dict[str, FilterReport]]:
    """Id columns for every split; pairs with an empty side dropped everywhere, and training
    pairs over `max_len` / `max_len_ratio` too. Returns the tables and a report per split."""
    sides = {
        "src": ("src_ids", src.tokenizer, src.vocab),
        "tgt": ("tgt_ids", tgt.tokenizer, tgt.vocab),
    }
    encoded, reports = {}, {}
    for name, ds in tables.items():
        ids = encode_dataset(ds, sides, cache / "datasets", num_proc=data.num_proc)
        training = name == "train"
        encoded[name], reports[name] = filter_pairs(
            ids,
            max_len=data.max_len if training else None,
            max_ratio=data.max_len_ratio if training else None,
        )
        if reports[name].kept == 0:
            raise DataError(
                f"corpus '{data.corpus}': no {name} pair survived filtering ({reports[name]})"
            )
    return encoded, reports


def prepare(recipe: Recipe, *, cache: Path | None = None) -> PreparedTranslation:
    """Read the recipe's corpus, build tokenizers and vocabularies, and cache id tables."""
    cache = cache or cache_dir()
    tables = text_splits(recipe.data, cache, recipe.seed)
    if len(tables["train"]) == 0:
        raise DataError(f"corpus '{recipe.data.corpus}': the training split is empty")
    src, tgt = build_sides(recipe.data, tables["train"], cache, recipe.seed)
    splits, reports = encode_splits(tables, src, tgt, recipe.data, cache)
    return PreparedTranslation(src, tgt, splits, reports)
