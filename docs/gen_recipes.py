"""Write docs/recipes.md: every recipe key, read from the config dataclasses and their comments.

    python docs/gen_recipes.py > docs/recipes.md

The keys, types and defaults come from the dataclasses a recipe is read into (the task registry's
data configs, `seqlab.models.MODELS`, and the `train` / `decode` fields of `seqlab.config.Recipe`).
A key's description is its comment in the dataclass source: the trailing `# ...` on its line, any
comment lines right above it, or its entry in the class docstring's `Attributes:` list. So a field
added without regenerating this page fails `tests/test_docs.py`, and the fix is the command above.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python docs/gen_recipes.py > docs/recipes.md"
ENTRY = re.compile(r"^(\s*)([A-Za-z_]\w*(?:,\s*[A-Za-z_]\w*)*):\s+(\S.*)$")

_SP = {
    "sp_model_type": "SentencePiece algorithm",
    "sp_vocab_size": "SentencePiece vocabulary size",
    "sp_character_coverage": "share of characters SentencePiece covers (1.0 for small alphabets)",
    "lowercase": "lowercase the text before tokenizing",
    "num_proc": "processes for the tokenizing map",
}
# Descriptions of keys whose dataclass has no comment yet. A comment in the source wins: move a
# line from here into the dataclass as a trailing `# ...` when you touch that field.
FALLBACK: dict[str, dict[str, str]] = {
    "TranslationData": {
        **_SP,
        "src_lang": "source language, as the corpus manifest names it",
        "tgt_lang": "target language",
        "train_split": "the corpus split to train on",
        "valid_split": "the split validated on (loss and BLEU)",
        "test_split": "the split the best checkpoint is scored on after training; unset: none",
        "tokenizer": "words (punctuation split off), characters, or a SentencePiece model "
        "trained on the training text",
        "min_freq": "word and character vocabularies: rarer tokens become `<unk>`",
        "max_vocab": "word and character vocabularies: keep at most this many tokens",
        "synthetic_task": 'with corpus = "synthetic": the target is the source copied, '
        "reversed or sorted",
        "synthetic_size": 'with corpus = "synthetic": training pairs (validation and test: 200)',
        "synthetic_symbols": 'with corpus = "synthetic": distinct symbols',
        # keys of the user's own data (corpus = "files" / "hf") whose lines carry no comment
        "valid_path": 'with corpus = "files": validation pairs, in the form of train_path',
        "test_path": 'with corpus = "files": test pairs, in the form of train_path',
        "hf_config": 'with corpus = "hf": the dataset\'s configuration name',
        "tgt_field": "like src_field, for the target side",
    },
    "MaskedLMData": {
        **_SP,
        "train_split": "the corpus split to train on",
        "valid_split": "the split validated on (MLM and NSP loss and accuracy)",
        "tokenizer": "a SentencePiece model trained on the training text, or whitespace words",
        "max_vocab": "whitespace vocabulary: keep at most this many tokens",
        "max_valid_pairs": "keep the first N validation pairs (smoke runs)",
        "valid_path": 'with corpus = "files": validation text, in the form of train_path',
    },
    "ClassificationData": {
        **_SP,
        "train_split": "the corpus split to train on",
        "valid_split": "the split validated on (loss and accuracy)",
        "min_freq": "without `pretrained`: rarer tokens become `<unk>`",
        "max_vocab": "without `pretrained`: keep at most this many tokens",
        "valid_path": 'with corpus = "files": validation examples, in the form of train_path',
        "text_column": 'with corpus = "files": the column (or JSON key) holding the text',
        "label_column": 'with corpus = "files": the column (or JSON key) holding the label',
    },
    "LanguageModelData": {
        "train_split": "the corpus split to train on",
        "valid_fraction": "share of the training stream held out for validation",
        "test_fraction": "share of the training stream held out for test",
        "valid_path": 'with corpus = "files": validation text',
        "test_path": 'with corpus = "files": test text',
        "tokenizer": "whitespace-split words, the word tokenizer (punctuation split off), "
        "or characters",
        "lowercase": "lowercase the text before tokenizing",
        "line_break": '"eos": `<eos>` after every line; "space": lines joined as running text',
        "min_freq": "rarer tokens become `<unk>`",
        "max_vocab": "keep at most this many tokens",
        "partition": "sequential: each batch row continues the previous batch's and the hidden "
        "state carries over; random: segments in random order from a zero state (d2l §9.3)",
    },
    "TrainConfig": {
        "max_steps": "optimiser steps to train for",
        "max_epochs": "stop after this many passes over the training data; unset: no limit",
        "lr": "peak learning rate (AdamW)",
        "weight_decay": "AdamW weight decay",
        "betas": "AdamW betas",
        "schedule": "learning-rate schedule after linear warm-up",
        "warmup_steps": "steps of linear warm-up from 0 to `lr`",
        "min_lr_ratio": "cosine and linear schedules end at `lr` times this",
        "clip_norm": "clip the gradient norm to this; unset: no clipping",
        "label_smoothing": "label smoothing of the cross-entropy",
        "valid_every": "steps between validations (each writes a checkpoint)",
        "log_every": "steps between training log lines",
        "keep_last": "numbered checkpoints kept (`best.pt` and `last.pt` always)",
        "metric": 'what picks `best.pt`: the task\'s metric ("bleu": BLEU for translation, '
        "accuracy for classification) or the validation loss",
        "device": '"auto" (CUDA when there is one, else the CPU), "cpu", "cuda", ...',
        "num_workers": "DataLoader worker processes",
    },
    "DecodeConfig": {
        "beam_size": "beam size of test scoring, `translate` and `evaluate` (1: greedy)",
        "valid_beam_size": "beam size of validation BLEU during training",
        "length_penalty": "alpha of the length penalty (0: none)",
        "length_penalty_kind": "gnmt: ((5 + len) / 6) ** alpha; average: len ** alpha; none",
        "max_len_a": "outputs stop at max_len_a * source length + max_len_b tokens",
        "max_len_b": "see max_len_a",
        "batch_size": "sentences per batch when translating",
    },
}


def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the `#` comments on its line and on the comment-only lines right above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    trailing: dict[int, str] = {}
    alone: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            text = token.string.lstrip("#").strip()
            own_line = not token.line[:col].strip()
            (alone if own_line else trailing)[row] = text
    notes: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, row = [], node.lineno - 1
            while row in alone:
                above.insert(0, alone[row])
                row -= 1
            parts = [*above, trailing.get(node.end_lineno, "")]
            notes[node.target.id] = " ".join(p for p in parts if p)
    return notes


def docstring_entries(cls: type, names: set[str]) -> dict[str, str]:
    """Field name -> its `name: text` entry (continuation lines joined) in the class docstring."""
    notes: dict[str, str] = {}
    current: list[str] = []
    indent = -1
    for line in (inspect.getdoc(cls) or "").splitlines():
        match = ENTRY.match(line)
        keys = [k.strip() for k in match.group(2).split(",")] if match else []
        if keys and all(k in names for k in keys):
            indent, current = len(match.group(1)), [match.group(3).strip()]
            for key in keys:
                notes[key] = current  # shared list: continuation lines reach every key
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            current.append(line.strip())
        else:
            current = []
    return {key: " ".join(parts) for key, parts in notes.items()}


def class_intro(cls: type) -> str:
    """The class docstring up to its `Attributes:` list, as one paragraph per blank-line block."""
    doc = (inspect.getdoc(cls) or "").split("Attributes:")[0].strip()
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())


def field_notes(cls: type) -> dict[str, str]:
    """Every init field's description, base classes first, source comments before docstrings."""
    notes: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        documented = docstring_entries(klass, names)
        fallback = FALLBACK.get(klass.__name__, {})
        for name, text in source_comments(klass).items():
            notes[name] = text or documented.get(name) or fallback.get(name, "")
    return notes


def type_text(tp: Any) -> str:
    """A field's annotation in TOML terms: `int`, `"a" | "b"`, `[float, float]`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        return " | ".join(type_text(a) for a in args if a is not type(None))
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    return {str: "string", bool: "bool", int: "int", float: "float"}.get(tp, str(tp))


def value_text(value: Any) -> str:
    """A default as a TOML literal; None (a key left out) reads "unset"."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def default_of(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{value_text(field.default)}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{value_text(field.default_factory())}`"
    return "required"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def key_table(cls: type) -> list[str]:
    """A Markdown table of `cls`'s keys: name, type, default, description."""
    hints, notes = typing.get_type_hints(cls), field_notes(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.init:
            kind = cell(f"`{type_text(hints[field.name])}`")
            meaning = cell(notes.get(field.name, ""))
            rows.append(f"| `{field.name}` | {kind} | {cell(default_of(field))} | {meaning} |")
    return rows


def class_section(heading: str, cls: type) -> list[str]:
    intro = class_intro(cls)
    return [
        heading,
        "",
        f"`{cls.__module__}.{cls.__qualname__}`. {intro}".strip(),
        "",
        *key_table(cls),
        "",
    ]


def data_configs() -> dict[str, type]:
    """Task name -> its `[data]` dataclass, from the task registry (or the older config table)."""
    try:
        from seqlab.tasks import TASKS
    except ImportError:
        from seqlab.config import DATA_CONFIGS

        return dict(DATA_CONFIGS)
    return {name: spec.data_config for name, spec in TASKS.items()}


def recipe_defaults() -> Any:
    """A recipe from nothing but a model kind: the top-level defaults as the code has them."""
    from seqlab.config import recipe_from_dict
    from seqlab.models import MODELS

    for kind in MODELS:
        try:
            return recipe_from_dict({"model": {"kind": kind}}, "RECIPE.toml")
        except Exception:  # this kind does not suit the default task; try the next
            continue
    raise RuntimeError("no model kind builds a recipe from defaults")


def make_targets() -> dict[str, str]:
    """Recipe path -> the first Makefile target whose commands train it."""
    targets, current = {}, None
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([\w-]+):", line):
            current = match.group(1)
        elif line.startswith("\t") and current:
            for path in re.findall(r"\btrain (recipes/[\w.-]+\.toml)", line):
                targets.setdefault(path, current)
    return targets


def shipped_recipes(default_task: str) -> list[str]:
    rows = ["| recipe | task | `[model] kind` | command |", "|---|---|---|---|"]
    targets = make_targets()
    for path in sorted((REPO / "recipes").glob("*.toml")):
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        task, kind = raw.get("task", default_task), raw.get("model", {}).get("kind", "")
        name = f"recipes/{path.name}"
        command = f"make {targets[name]}" if name in targets else f"seqlab train {name}"
        rows.append(f"| [`{path.name}`](../{name}) | `{task}` | `{kind}` | `{command}` |")
    return rows


def top_level(defaults: Any, tasks: list[str]) -> list[str]:
    names = ", ".join(f"`{json.dumps(t)}`" for t in tasks)
    return [
        "## Top level",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        f"| `name` | `string` | the file name without `.toml` (`{defaults.name}`) "
        "| the run folder is `runs/<name>` unless `--run-dir` says otherwise |",
        f"| `task` | `string` | `{json.dumps(defaults.task)}` | one of {names}; "
        "chooses the `[data]` table below |",
        f"| `seed` | `int` | `{defaults.seed}` | seeds data order, initialisation and dropout |",
        "",
    ]


def render() -> str:
    """The whole of docs/recipes.md."""
    from seqlab.config import Recipe
    from seqlab.models import MODELS

    defaults, data, hints = recipe_defaults(), data_configs(), typing.get_type_hints(Recipe)
    out = [
        "# Recipe keys",
        "",
        f"<!-- Generated by `{COMMAND}`: edit the dataclasses' comments, not this file. -->",
        "",
        "A recipe is one TOML file: top-level `name`, `task` and `seed`, then the tables `[data]`"
        " (its keys depend on `task`), `[model]` (`kind = ...` picks a model family; the other"
        " keys are that family's), `[train]` and `[decode]`. A key left out takes the default"
        ' below ("unset" means no value: leave the key out, or unset a key whose default is set'
        ' with the string `"none"` or `""`, e.g. `data.test_split = "none"` for a corpus without'
        " a test split). An unknown key or a value of the"
        " wrong type is an error naming the key, the file and the closest valid key. Any key can"
        " be overridden on the command line as `section.key=value`, the value a TOML literal:"
        " `seqlab train recipes/reverse.toml train.max_steps=300 decode.beam_size=4`.",
        "",
        *top_level(defaults, list(data)),
        "## Shipped recipes",
        "",
        *shipped_recipes(defaults.task),
        "",
        "## `[data]`, by task",
        "",
    ]
    for task, cls in data.items():
        out += class_section(f'### `task = "{task}"`', cls)
    out += ["## `[model]`, by kind", ""]
    for kind, entry in MODELS.items():
        out += class_section(f'### `kind = "{kind}"`', entry.config)
    out += class_section("## `[train]`", hints["train"])
    out += class_section("## `[decode]`", hints["decode"])
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.path.insert(0, str(REPO))
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
