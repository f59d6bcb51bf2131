"""Translation data: fetch a parallel corpus, tokenize it, build vocabularies, cache the ids.

`prepare(recipe)` is what `seqlab prepare` runs and what training starts from. Tokenizers and
vocabularies are built on the training split only, cached under `<cache>/prepared/<fingerprint>/`,
and every split becomes an Arrow table with `src`, `tgt` (text) and `src_ids`, `tgt_ids` columns.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

from seqlab.config import Recipe, TranslationData
from seqlab.data.corpus import cache_dir, fetch_corpus, load_manifest
from seqlab.data.dataset import (
    FilterReport,
    encode_dataset,
    filter_pairs,
    fingerprint,
    list_lengths,
    text_dataset,
)
from seqlab.data.readers import read_split
from seqlab.data.synthetic import synthetic_pairs
from seqlab.data.tokenize import (
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    tokenizer_from_config,
)
from seqlab.data.vocab import Side, Vocab
from seqlab.errors import DataError

READER_VERSION = 1  # bump when readers change what rows they yield


@dataclass
class PreparedTranslation:
    """Everything training needs from the data stage."""

    src: Side
    tgt: Side
    splits: dict[str, datasets.Dataset]  # "train", "valid", optionally "test"
    report: FilterReport

    def summary(self) -> str:
        lines = [f"train pairs: {self.report}"]
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
    manifest = load_manifest(data.corpus)
    names = {"train": data.train_split, "valid": data.valid_split, "test": data.test_split}
    names = {name: split for name, split in names.items() if split is not None}
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


def _iter_texts(ds: datasets.Dataset, columns: tuple[str, ...]):
    for batch in ds.iter(batch_size=2000):
        for column in columns:
            yield from batch[column]


def _build_side(data: TranslationData, train: datasets.Dataset, columns: tuple[str, ...]) -> Side:
    """Train (SentencePiece) or build (word/char counts) a tokenizer and vocabulary on train."""
    if data.tokenizer == "sentencepiece":
        tokenizer = SentencePieceTokenizer.train(
            _iter_texts(train, columns),
            model_type=data.sp_model_type,
            vocab_size=data.sp_vocab_size,
            character_coverage=data.sp_character_coverage,
            lowercase=data.lowercase,
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


def _save_side(folder: Path, name: str, side: Side) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(side.tokenizer, "model_bytes", None)
    if model is not None:
        (folder / f"{name}.model").write_bytes(model)
    side.vocab.save(folder / f"{name}.vocab.json")
    (folder / f"{name}.tokenizer.json").write_text(json.dumps(side.tokenizer.config()))


def _load_side(folder: Path, name: str) -> Side | None:
    config_path = folder / f"{name}.tokenizer.json"
    if not config_path.is_file():
        return None
    model_path = folder / f"{name}.model"
    model = model_path.read_bytes() if model_path.is_file() else None
    tokenizer = tokenizer_from_config(json.loads(config_path.read_text()), model)
    return Side(tokenizer, Vocab.load(folder / f"{name}.vocab.json"))


def build_sides(data: TranslationData, train: datasets.Dataset, cache: Path) -> tuple[Side, Side]:
    """Source and target sides, reused from the cache when the same settings saw the same data."""
    settings = {
        k: getattr(data, k)
        for k in (
            "tokenizer",
            "lowercase",
            "joint_vocab",
            "min_freq",
            "max_vocab",
            "sp_model_type",
            "sp_vocab_size",
            "sp_character_coverage",
        )
    }
    folder = cache / "prepared" / fingerprint(train._fingerprint, settings)
    if data.joint_vocab:
        side = _load_side(folder, "joint")
        if side is None:
            side = _build_side(data, train, ("src", "tgt"))
            _save_side(folder, "joint", side)
        return side, side
    src, tgt = _load_side(folder, "src"), _load_side(folder, "tgt")
    if src is None or tgt is None:
        src, tgt = _build_side(data, train, ("src",)), _build_side(data, train, ("tgt",))
        _save_side(folder, "src", src)
        _save_side(folder, "tgt", tgt)
    return src, tgt


def encode_splits(
    tables: dict[str, datasets.Dataset], src: Side, tgt: Side, data: TranslationData
) -> tuple[dict[str, datasets.Dataset], FilterReport]:
    sides = {
        "src": ("src_ids", src.tokenizer, src.vocab),
        "tgt": ("tgt_ids", tgt.tokenizer, tgt.vocab),
    }
    encoded = {
        name: encode_dataset(ds, sides, num_proc=data.num_proc) for name, ds in tables.items()
    }
    encoded["train"], report = filter_pairs(
        encoded["train"], max_len=data.max_len, max_ratio=data.max_len_ratio, num_proc=data.num_proc
    )
    if report.kept == 0:
        raise DataError(f"corpus '{data.corpus}': no training pair survived filtering ({report})")
    return encoded, report


def prepare(recipe: Recipe, *, cache: Path | None = None) -> PreparedTranslation:
    """Fetch the recipe's corpus, build tokenizers and vocabularies, and cache id tables."""
    cache = cache or cache_dir()
    tables = text_splits(recipe.data, cache, recipe.seed)
    if len(tables["train"]) == 0:
        raise DataError(f"corpus '{recipe.data.corpus}': the training split is empty")
    src, tgt = build_sides(recipe.data, tables["train"], cache)
    splits, report = encode_splits(tables, src, tgt, recipe.data)
    return PreparedTranslation(src, tgt, splits, report)
