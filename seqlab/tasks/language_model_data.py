"""Language-model data: a corpus's lines -> one token stream per split, and the vocabulary.

`prepare(recipe)` fetches a "lines" corpus (or reads plain text files), normalises and tokenizes
every line, joins the lines into one stream per split (see `LanguageModelData` for `line_break`),
carves validation/test streams off the end of the training stream when the corpus has no such
split (The Time Machine), builds the vocabulary on the training stream only and encodes every
stream as a (N,) tensor of ids. The streams are small (WikiText-2: 2.1M tokens, read in a few
seconds), so they live in memory rather than in an Arrow cache.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqlab.config import LanguageModelData, Recipe
from seqlab.data.corpus import cache_dir, fetch_corpus, load_manifest
from seqlab.data.readers import read_lines, read_split
from seqlab.data.tokenize import SPACE, CharTokenizer, WhitespaceTokenizer, WordTokenizer
from seqlab.data.vocab import EOS, Side, Vocab
from seqlab.errors import ConfigError, DataError

TOKENIZERS = {"whitespace": WhitespaceTokenizer, "word": WordTokenizer, "char": CharTokenizer}
_NON_LETTERS = re.compile(r"[^A-Za-z]+")


@dataclass
class PreparedLM:
    """Everything training and generation need from the data stage.

    Attributes:
        side: the tokenizer and the vocabulary (built on the training stream).
        splits: "train", "valid" and, when there is one, "test": (N,) long id streams.
        data: the recipe's data settings (normalisation and line breaks, for generation).
    """

    side: Side
    splits: dict[str, Tensor]
    data: LanguageModelData

    def summary(self) -> str:
        lines = [f"{name}: {len(ids)} tokens" for name, ids in self.splits.items()]
        unk = int((self.splits["train"] == self.side.vocab.unk_id).sum())
        lines.append(f"vocabulary: {len(self.side.vocab)} (train <unk>: {unk})")
        return "\n".join(lines)


def normalise(data: LanguageModelData, text: str) -> str:
    """What the tokenizer sees of one line: with `letters_only`, non-letter runs -> one space."""
    return _NON_LETTERS.sub(" ", text) if data.letters_only else text


def line_tokens(data: LanguageModelData, tokenizer, lines: Iterator[str]) -> Iterator[list[str]]:
    """The tokens each line adds to the stream (`<eos>` or a separator included)."""
    separator = [SPACE] if isinstance(tokenizer, CharTokenizer) else []
    first = True
    for line in lines:
        tokens = tokenizer.tokenize(normalise(data, line))
        if data.line_break == "eos":
            yield [*tokens, EOS]
        elif tokens:
            yield tokens if first else [*separator, *tokens]
            first = False


def token_stream(
    data: LanguageModelData, tokenizer, lines: Iterator[str], limit: int | None
) -> list[str]:
    """All tokens of `lines` in order, cut after `limit` tokens (when given)."""
    stream: list[str] = []
    for tokens in line_tokens(data, tokenizer, lines):
        stream.extend(tokens)
        if limit is not None and len(stream) >= limit:
            return stream[:limit]
    return stream


def _split_lines(data: LanguageModelData, name: str, cache: Path) -> Iterator[str] | None:
    """The lines of split `name` ("train", "valid", "test"), or None when it is not configured."""
    if data.corpus == "files":
        path = getattr(data, f"{name}_path")
        if path is None and name == "train":
            raise ConfigError("data.corpus = 'files' needs data.train_path")
        return None if path is None else read_lines(path, strip=False)
    split = getattr(data, f"{name}_split")
    if split is None:
        return None
    manifest = load_manifest(data.corpus)
    manifest.require_format(
        "lines", "a language model reads a 'lines' corpus (or data.corpus = 'files')"
    )
    manifest.require_splits({f"data.{name}_split": split})
    folder = fetch_corpus(manifest, cache=cache, progress=False)
    return (row["text"] for row in read_split(manifest, folder, split))


def _check_splits(data: LanguageModelData) -> None:
    """Name a missing split before anything is fetched or read."""
    if data.corpus == "files":
        return
    manifest = load_manifest(data.corpus)
    if manifest.format == "lines":
        names = ("train", "valid", "test")
        manifest.require_splits({f"data.{n}_split": getattr(data, f"{n}_split") for n in names})


def _carve(stream: list[str], data: LanguageModelData, carve: dict[str, float]) -> dict:
    """Cut the fractions in `carve` off the end of `stream` (test last): name -> tokens."""
    total, out, end = len(stream), {}, len(stream)
    for name in ("test", "valid"):
        if name in carve:
            size = int(total * carve[name])
            if size < 2:
                raise DataError(
                    f"data.{name}_fraction = {carve[name]} of {total} training tokens leaves "
                    f"{size} for {name}; raise it (or data.max_train_tokens)"
                )
            out[name], end = stream[end - size : end], end - size
    out["train"] = stream[:end]
    return out


def token_splits(data: LanguageModelData, tokenizer, cache: Path) -> dict[str, list[str]]:
    """Token strings of train, valid and (when there is one) test."""
    _check_splits(data)
    streams = {"train": token_stream(data, tokenizer, _split_lines(data, "train", cache), None)}
    if data.max_train_tokens is not None:
        streams["train"] = streams["train"][: data.max_train_tokens]
    carve = {}
    for name in ("valid", "test"):
        lines = _split_lines(data, name, cache)
        fraction = getattr(data, f"{name}_fraction")
        if lines is not None and fraction:
            raise ConfigError(f"data.{name}_fraction needs data.{name}_split unset (the corpus)")
        if lines is not None:
            streams[name] = token_stream(data, tokenizer, lines, data.max_eval_tokens)
        elif fraction:
            carve[name] = fraction
        elif name == "valid":
            raise ConfigError("no validation text: set data.valid_split or data.valid_fraction")
    streams.update(_carve(streams["train"], data, carve))
    if data.max_eval_tokens is not None:
        for name in ("valid", "test"):
            if name in streams:
                streams[name] = streams[name][: data.max_eval_tokens]
    for name, stream in streams.items():
        if len(stream) < 2:
            raise DataError(f"corpus '{data.corpus}': the {name} text has {len(stream)} tokens")
    return streams


def prepare(recipe: Recipe, *, cache: Path | None = None) -> PreparedLM:
    """Read the recipe's corpus into id streams and build the vocabulary on the training stream."""
    data: LanguageModelData = recipe.data
    tokenizer = TOKENIZERS[data.tokenizer](lowercase=data.lowercase)
    streams = token_splits(data, tokenizer, cache or cache_dir())
    vocab = Vocab.build(Counter(streams["train"]), min_freq=data.min_freq, max_size=data.max_vocab)
    splits = {name: encode(vocab, stream) for name, stream in streams.items()}
    return PreparedLM(Side(tokenizer, vocab), splits, data)


def corpus_streams(
    side: Side, data: LanguageModelData, names: list[str], *, cache: Path | None = None
) -> dict[str, Tensor]:
    """The id streams of splits `names` ("valid", "test") of the recipe's corpus, encoded with a
    trained model's vocabulary (as `prepare` cut them: carved fractions, `max_eval_tokens`)."""
    streams = token_splits(data, side.tokenizer, cache or cache_dir())
    for name in names:
        if name not in streams:
            where = f"data.{name}_path" if data.corpus == "files" else f"data.{name}_split"
            raise ConfigError(
                f"the model's recipe has no {name} text of corpus '{data.corpus}' "
                f"(set {where} or data.{name}_fraction)"
            )
    return {name: encode(side.vocab, streams[name]) for name in names}


def text_stream(side: Side, data: LanguageModelData, paths: list[str]) -> Tensor:
    """The id stream of text files ('-': stdin), read line by line as the training text was."""
    tokens: list[str] = []
    for path in paths:
        tokens.extend(token_stream(data, side.tokenizer, read_lines(path, strip=False), None))
    if len(tokens) < 2:
        raise DataError(f"{', '.join(paths)}: {len(tokens)} tokens, at least 2 are needed")
    return encode(side.vocab, tokens)


def encode(vocab: Vocab, tokens: list[str]) -> Tensor:
    """(N,) long ids of `tokens`, in chunks (a list of two million ints is slow to convert)."""
    size = 1 << 16
    chunks = (vocab.encode(tokens[i : i + size]) for i in range(0, len(tokens), size))
    return torch.cat([torch.tensor(c, dtype=torch.long) for c in chunks])
