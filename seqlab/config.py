"""Recipes: one TOML file per experiment, read strictly into frozen dataclasses.

A recipe has top-level `name`, `task`, `seed` and the sections `[data]`, `[model]` (with
`kind = ...` choosing a model family from `seqlab.models.MODELS`), `[train]` and `[decode]`.
`load_recipe(path, ["train.max_steps=200"])` applies overrides parsed as TOML literals, then builds
the dataclasses strictly: an unknown key is an error naming the key, the file and the closest valid
key; a value of the wrong type names the key and the expected type. Nothing downstream reads raw
dictionaries (no `cfg.get` deep inside modules).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seqlab.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]


def _check_at_least(config: Any, section: str, low: float, *keys: str) -> None:
    """Raise ValueError naming `section.key` for each set key below `low` (None is unset)."""
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < low:
            raise ValueError(f"{section}.{key} = {value} must be at least {low}")


def _check_own_files(
    config: Any, paths: tuple[str, ...], files_only: tuple[str, ...] = ("valid_size",)
) -> None:
    """`corpus = "files"` needs `train_path`, and takes a held-out size or a file for each split,
    not both; with another corpus the `paths` (and `files_only` keys) are ignored, so setting one
    is an error naming it."""
    if config.corpus == "files":
        if config.train_path is None:
            raise ValueError("data.corpus = 'files' needs data.train_path")
        for split in ("valid", "test"):
            path, size = f"{split}_path", f"{split}_size"
            if getattr(config, path, None) is not None and getattr(config, size, None) is not None:
                raise ValueError(
                    f"data.{size} holds rows out of train_path; with data.{path} set it is not "
                    "used: remove one of them"
                )
        return
    for key in (*paths, *files_only):
        if getattr(config, key, None) is not None:
            raise ValueError(
                f"data.{key} is read only with data.corpus = 'files' (corpus is "
                f"{config.corpus!r}); remove it (data.{key}=none on the command line)"
            )


def _check_fraction(config: Any, section: str, key: str, *, upper_open: bool = False) -> None:
    value = getattr(config, key)
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{section}.{key} = {value} must be in [0, 1{')' if upper_open else ']'}")


@dataclass(frozen=True)
class TranslationData:
    """Where the parallel text comes from and how it becomes ids.

    `corpus` is a shipped manifest name, "synthetic", "files" (the user's own files: see
    `seqlab/data/user_files.py` for the accepted layouts) or "hf" (a Hugging Face dataset). A
    validation (or test) set that the source lacks is held out of the training pairs: a seeded
    sample of `valid_size` (`test_size`) pairs, never trained on.
    """

    corpus: str = "multi30k"  # a manifest name, "synthetic", "files" or "hf"
    src_lang: str = "de"
    tgt_lang: str = "en"
    train_split: str = "train"
    valid_split: str | None = "val"  # the split validated on; "": hold out valid_size pairs
    # the split the best checkpoint is scored on after training; "": none (or test_size pairs)
    test_split: str | None = "test_2016_flickr"
    # with corpus = "files": PREFIX (files PREFIX.<src_lang>, PREFIX.<tgt_lang>), a .tsv file
    # (source TAB target) or a .jsonl file ({"translation": {lang: text}} or {lang: text}),
    # each optionally gzipped (.gz)
    train_path: str | None = None
    valid_path: str | None = None
    test_path: str | None = None
    # hold out this many training pairs (seeded) for validation instead of valid_split /
    # valid_path; unset while neither gives validation pairs: 1000
    valid_size: int | None = None
    test_size: int | None = None  # hold out this many training pairs for test instead of test_split
    hf_path: str | None = None  # with corpus = "hf": a hub dataset name or a save_to_disk folder
    hf_config: str | None = None
    # with "files" (JSONL) or "hf": the field holding the source text, or a {lang: text} record
    # ("translation" in WMT and OPUS datasets); unset: "translation", else the field src_lang
    src_field: str | None = None
    tgt_field: str | None = None
    tokenizer: Literal["word", "char", "sentencepiece"] = "word"
    lowercase: bool = True
    joint_vocab: bool = False  # one tokenizer and vocabulary for both sides
    min_freq: int = 2
    max_vocab: int | None = None
    sp_model_type: Literal["bpe", "unigram"] = "bpe"
    sp_vocab_size: int = 8000
    sp_character_coverage: float = 1.0
    sp_input_sentence_size: int = 1_000_000  # SentencePiece trains on a seeded sample this big
    max_len: int | None = 100  # drop training pairs with a side longer than this (tokens)
    max_len_ratio: float | None = None  # drop training pairs whose length ratio exceeds this
    num_proc: int = 1  # processes that tokenize (each writes one shard of the ids)
    synthetic_task: Literal["copy", "reverse", "sort"] = "reverse"
    synthetic_size: int = 20000
    synthetic_symbols: int = 20

    def __post_init__(self):
        _check_at_least(self, "data", 1, "synthetic_size", "synthetic_symbols", "min_freq")
        _check_at_least(self, "data", 1, "num_proc", "sp_vocab_size")
        _check_at_least(self, "data", 1, "valid_size", "test_size", "sp_input_sentence_size")
        _check_own_files(self, ("train_path", "valid_path", "test_path"), files_only=())
        if self.corpus == "hf" and self.hf_path is None:
            raise ValueError('corpus = "hf" needs data.hf_path')
        if self.corpus != "hf" and self.hf_path is not None:
            raise ValueError(
                f"data.hf_path is read only with data.corpus = 'hf' (corpus is {self.corpus!r})"
            )


@dataclass(frozen=True)
class MaskedLMData:
    """BERT pretraining data: sentence pairs of a corpus's paragraphs, masked anew each epoch."""

    corpus: str = "wikitext-2"  # a "lines" manifest (one paragraph per line), or "files"
    train_split: str = "train"
    valid_split: str = "valid"
    # with corpus = "files": UTF-8 text (or .gz), one paragraph per line; sentences end at . ! or ?
    # followed by a space, and a line of fewer than two sentences gives no pair
    train_path: str | None = None
    valid_path: str | None = None  # with corpus = "files"; unset: hold out valid_size lines
    # with corpus = "files" and no valid_path: paragraphs (lines of two sentences or more) of
    # train_path held out for validation, drawn with the recipe's seed; unset: 1000
    valid_size: int | None = None
    tokenizer: Literal["sentencepiece", "whitespace"] = "sentencepiece"
    lowercase: bool = True
    min_freq: int = 5  # whitespace vocabulary (d2l: 5)
    max_vocab: int | None = None
    sp_model_type: Literal["bpe", "unigram"] = "bpe"
    sp_vocab_size: int = 10000
    sp_character_coverage: float = 1.0
    sp_input_sentence_size: int = 1_000_000  # SentencePiece trains on a seeded sample this big
    max_len: int = 64  # tokens of <cls> A <sep> B <sep>; the longer side is truncated
    next_prob: float = 0.5  # share of pairs whose B is the true next sentence
    mask_prob: float = 0.15  # share of non-special tokens chosen for prediction
    mask_token_prob: float = 0.8  # of those: replaced by <mask>
    random_token_prob: float = 0.1  # of those: replaced by a random token (the rest unchanged)
    max_train_pairs: int | None = None  # keep the first N training pairs (smoke runs)
    max_valid_pairs: int | None = None
    num_proc: int = 1

    def __post_init__(self):
        for key in ("next_prob", "mask_prob", "mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"data.{key} = {getattr(self, key)} must be in [0, 1]")
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise ValueError("data.mask_token_prob + data.random_token_prob must be at most 1")
        if self.max_len < 5:
            raise ValueError(f"data.max_len = {self.max_len} leaves no room for two sentences")
        _check_at_least(self, "data", 2, "valid_size")  # pairs need two paragraphs
        _check_at_least(self, "data", 1, "sp_input_sentence_size")
        _check_own_files(self, ("train_path", "valid_path"))


@dataclass(frozen=True)
class ClassificationData:
    """Sentence classification (SST-2), from a pretrained BERT checkpoint or from scratch."""

    corpus: str = "sst2"  # a "tsv-labelled" manifest, or "files" (train_path, valid_path, ...)
    train_split: str = "train"
    valid_split: str = "dev"
    # with corpus = "files": a labelled .tsv / .csv (a header row naming the columns) or .jsonl
    # file (one JSON object a line), optionally .gz; label names are the training file's labels
    train_path: str | None = None
    valid_path: str | None = None  # with corpus = "files"; unset: hold out valid_size rows
    test_path: str | None = None  # with corpus = "files": scored with best.pt after training
    # with corpus = "files" and no valid_path: rows of train_path held out for validation, drawn
    # with the recipe's seed; unset: 1000
    valid_size: int | None = None
    text_column: str = "text"  # with corpus = "files": the column (JSON key) of the sentence
    label_column: str = "label"  # with corpus = "files": the column (JSON key) of its label
    # unset: the number of labels (sst2: 2; files: the training file's distinct labels); set
    # with corpus = "files": must equal that number
    num_classes: int | None = None
    pretrained: str | None = None  # a masked_lm checkpoint: its tokenizer, vocabulary, model
    init: Literal["pretrained", "scratch"] = "pretrained"  # scratch: its vocabulary, fresh weights
    tokenizer: Literal["sentencepiece", "whitespace"] = "whitespace"  # without `pretrained`
    lowercase: bool = True
    min_freq: int = 1
    max_vocab: int | None = None
    sp_model_type: Literal["bpe", "unigram"] = "bpe"
    sp_vocab_size: int = 8000
    sp_character_coverage: float = 1.0
    sp_input_sentence_size: int = 1_000_000  # SentencePiece trains on a seeded sample this big
    max_len: int = 64  # tokens of <cls> sentence <sep>; longer sentences are truncated
    max_train_examples: int | None = None  # keep the first N training sentences (smoke runs)
    num_proc: int = 1

    def __post_init__(self):
        _check_at_least(self, "data", 1, "valid_size", "max_train_examples", "num_proc")
        _check_at_least(self, "data", 1, "sp_input_sentence_size")
        _check_at_least(self, "data", 2, "num_classes")
        if self.max_len < 3:
            raise ValueError(f"data.max_len = {self.max_len} leaves no room for a sentence")
        _check_own_files(self, ("train_path", "valid_path", "test_path"))
        if self.corpus != "files":
            for key, default in (("text_column", "text"), ("label_column", "label")):
                if getattr(self, key) != default:
                    raise ValueError(
                        f"data.{key} is read only with data.corpus = 'files' "
                        f"(corpus is {self.corpus!r}); remove it or set corpus = 'files'"
                    )


@dataclass(frozen=True)
class LanguageModelData:
    """Language modelling: a corpus read as one token stream, cut for truncated BPTT.

    Lines become tokens and are joined into one stream per split: `line_break = "eos"` appends
    `<eos>` to every line, blank ones included (pytorch/examples on WikiText); "space" joins them
    as running text (a `▁` between lines for characters; d2l on The Time Machine). A corpus
    without a validation or test split gives the last `valid_fraction` / `test_fraction` of its
    training stream (test last). The vocabulary comes from the training stream only.
    """

    corpus: str = "wikitext-2"  # a "lines" manifest, or "files" (train_path, valid_path, ...)
    train_split: str = "train"
    valid_split: str | None = None  # unset: carve valid_fraction off the training stream
    test_split: str | None = None  # unset: carve test_fraction off the training stream (or none)
    valid_fraction: float = 0.0
    test_fraction: float = 0.0
    train_path: str | None = None  # with corpus = "files": plain UTF-8 text files
    valid_path: str | None = None
    test_path: str | None = None
    tokenizer: Literal["whitespace", "word", "char"] = "whitespace"
    lowercase: bool = False
    letters_only: bool = False  # d2l: every run of non-letters becomes one space
    line_break: Literal["eos", "space"] = "eos"
    min_freq: int = 1
    max_vocab: int | None = None
    bptt: int = 35  # time steps per training segment
    partition: Literal["random", "sequential"] = "sequential"
    eval_batch_size: int = 10  # rows of the validation/test streams (pytorch/examples: 10)
    max_train_tokens: int | None = None  # keep the first N training tokens (smoke runs)
    max_eval_tokens: int | None = None  # keep the first N validation and test tokens
    # > 0: also score the best checkpoint with a continuous cache of this many positions
    # (Grave et al. 2017; `seqlab/evaluation/neural_cache.py`), tuned on the validation stream
    cache_window: int = 0

    def __post_init__(self):
        if self.cache_window < 0:
            raise ValueError(f"data.cache_window = {self.cache_window} must not be negative")
        if self.corpus != "files":
            _check_own_files(self, ("train_path", "valid_path", "test_path"), files_only=())
        for key in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"data.{key} = {getattr(self, key)} must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("data.valid_fraction + data.test_fraction leave no training text")
        for key in ("bptt", "eval_batch_size", "min_freq"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} = {getattr(self, key)} must be at least 1")
        for key in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, key) is not None and getattr(self, key) < 2:
                raise ValueError(f"data.{key} = {getattr(self, key)} must be at least 2")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop: steps, batches, optimiser, schedule, checkpoints."""

    max_steps: int = 10000
    max_epochs: int | None = None
    max_tokens: int | None = 4096  # token budget per batch (padded source or target tokens)
    batch_size: int | None = None  # cap on sentences per batch (with or instead of max_tokens)
    accumulate: int = 1  # batches per optimiser step
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: Literal["constant", "inverse_sqrt", "cosine", "linear"] = "inverse_sqrt"
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.0
    clip_norm: float | None = 1.0
    label_smoothing: float = 0.1
    valid_every: int = 1000
    log_every: int = 50
    keep_last: int = 3
    patience: int | None = None  # validations without improvement before stopping
    # validation metric picking best.pt; unset: the task's first. translation "bleu" | "loss",
    # language_model "loss", masked_lm "mlm_loss", classification "accuracy" | "loss"
    metric: str | None = None
    valid_max_sentences: int | None = None  # cap on sentences decoded for validation BLEU
    device: str = "auto"
    precision: Precision = "fp32"  # bf16: autocast; fp16: autocast and a gradient scaler
    compile: bool = False  # torch.compile the model's forward
    fused_adamw: bool = False  # fused AdamW kernel where the device has one, else foreach
    ddp_find_unused_parameters: bool = False  # torchrun: for models leaving parameters unused
    num_workers: int = 0

    def __post_init__(self):
        if self.max_tokens is None and self.batch_size is None:
            raise ValueError("set train.max_tokens, train.batch_size or both")
        _check_at_least(self, "train", 1, "max_steps", "accumulate", "valid_every", "log_every")
        _check_at_least(self, "train", 1, "keep_last", "max_epochs", "max_tokens", "batch_size")
        _check_at_least(self, "train", 1, "patience", "valid_max_sentences")
        _check_at_least(self, "train", 0, "warmup_steps", "num_workers")
        _check_at_least(self, "train", 0.0, "weight_decay", "clip_norm")
        if not self.lr > 0:
            raise ValueError(f"train.lr = {self.lr} must be positive")
        _check_fraction(self, "train", "label_smoothing", upper_open=True)
        _check_fraction(self, "train", "min_lr_ratio")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"train.betas = {list(self.betas)}: each must be in [0, 1)")


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings for validation, evaluation and the CLI (overridable there)."""

    beam_size: int = 5
    valid_beam_size: int = 1
    length_penalty: float = 1.0
    length_penalty_kind: Literal["gnmt", "average", "none"] = "gnmt"
    max_len_a: float = 1.5
    max_len_b: int = 10
    batch_size: int = 64

    def __post_init__(self):
        _check_at_least(self, "decode", 1, "beam_size", "valid_beam_size", "batch_size")
        _check_at_least(self, "decode", 0, "max_len_a", "max_len_b", "length_penalty")


@dataclass(frozen=True)
class ModelSpec:
    """`kind` picks the family in `seqlab.models.MODELS`; `config` is that family's dataclass."""

    kind: str
    config: Any


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    seed: int
    data: Any
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    path: str | None = None

    def to_dict(self) -> dict:
        """Plain dict (TOML-shaped) of the resolved recipe, stored in checkpoints."""
        return {
            "name": self.name,
            "task": self.task,
            "seed": self.seed,
            "data": dataclasses.asdict(self.data),
            "model": {"kind": self.model.kind, **dataclasses.asdict(self.model.config)},
            "train": dataclasses.asdict(self.train),
            "decode": dataclasses.asdict(self.decode),
        }


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return "array of " + ", ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _means_unset(value: Any) -> bool:
    """TOML has no null: an optional key is unset by the string "none" (any case) or ""."""
    return isinstance(value, str) and value.strip().lower() in ("", "none")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; return it (ints widen to float, lists to tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        if type(None) in args and (value is None or _means_unset(value)):
            return None  # None: a resolved recipe read back from a checkpoint
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple:
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {value!r} is not a finite number")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (bool, str):
        if isinstance(value, tp):
            return value
    else:
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, values: dict, where: str, source: str) -> Any:
    """Build frozen dataclass `cls` from `values`, rejecting unknown keys and wrong types.

    `where` is the section's dotted name (for messages), `source` the recipe file.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown key '{where}.{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{source}: key '{where}.{key}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: section [{where}]: {error}") from error


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 3e-4); the value is a TOML literal, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. train.max_steps=200")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return raw


TOP_KEYS = ("name", "task", "seed", "data", "model", "train", "decode")


def recipe_from_dict(raw: dict, source: str = "<recipe>") -> Recipe:
    """Build a `Recipe` strictly from a TOML-shaped dict (a file's or a checkpoint's)."""
    from seqlab.models import MODELS

    for key in raw:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(key, TOP_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown top-level key '{key}'{hint}")
    from seqlab.tasks import get_task  # a recipe names its task; the task says how to read [data]

    task = _coerce(raw.get("task", "translation"), str, f"{source}: key 'task'")
    data_config = get_task(task, source).data_config
    model_raw = dict(raw.get("model", {}))
    kind = model_raw.pop("kind", None)
    if kind not in MODELS:
        raise ConfigError(
            f"{source}: [model] kind = {kind!r} is not one of: {', '.join(sorted(MODELS))}"
        )
    model_cls = MODELS[kind].config
    return Recipe(
        name=_coerce(raw.get("name", Path(source).stem), str, f"{source}: key 'name'"),
        task=task,
        seed=_coerce(raw.get("seed", 1), int, f"{source}: key 'seed'"),
        data=build_dataclass(data_config, raw.get("data", {}), "data", source),
        model=ModelSpec(kind, build_dataclass(model_cls, model_raw, "model", source)),
        train=build_dataclass(TrainConfig, raw.get("train", {}), "train", source),
        decode=build_dataclass(DecodeConfig, raw.get("decode", {}), "decode", source),
        path=source,
    )


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply `overrides` ('section.key=value'), and validate it strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    raw = apply_overrides(raw, overrides or [])
    recipe = recipe_from_dict(raw, str(path))
    from seqlab.tasks import get_task

    get_task(recipe.task).check_keys(raw, str(path))  # keys and metric this task does not use
    return recipe
