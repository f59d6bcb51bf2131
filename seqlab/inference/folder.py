"""Exported model folders: the portable seqlab folder, and what every export folder shares.

An export folder holds `seqlab.json` (what the folder is, the resolved recipe, the decoding
defaults, the special tokens and each side's tokenizer settings) and each side's files as
`Side.save` writes them: the vocabulary (`src_vocab.json`: the `Vocab.save` format, ids in order),
the tokenizer settings (`src.tokenizer.json`) and, for a SentencePiece side, its model
(`src.spm.model`), readable by any SentencePiece tool. Beside them:

- `--format seqlab`: `model.safetensors`, the weights. Loading it unpickles nothing: safetensors is
  a JSON header plus raw tensor bytes, and `seqlab.json` is plain JSON (`read_folder`,
  `load_weights`; `seqlab.checkpoint.load_model` opens such a folder).
- `--format ctranslate2`: CTranslate2's own `model.bin`, `config.json` and vocabulary (`ct2.py`).

Folders are written atomically: into a temporary folder beside OUTDIR, renamed into place once
complete (`atomic_folder`), so OUTDIR is never half-written. Reading the sides and the decoding
defaults needs no torch (the CTranslate2 engine runs without it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqlab.data.atomic import atomic_folder
from seqlab.errors import CheckpointError

__all__ = ["atomic_folder", "export_seqlab", "load_weights", "read_folder", "read_meta"]

META = "seqlab.json"
FORMAT = "seqlab-export"
VERSION = 1
WEIGHTS = "model.safetensors"
ENGINES = ("seqlab", "ctranslate2")


def is_export_folder(path: str | Path) -> bool:
    """True when `path` is a folder written by `seqlab export`."""
    return (Path(path) / META).is_file()


# -- sides and metadata ---------------------------------------------------------------------------


def write_sides(sides: dict[str, Any], folder: Path) -> dict[str, dict]:
    """Write each side into `folder` (`Side.save`); return what `seqlab.json` records of them:
    key -> {"tokenizer": settings, "vocab": file, "model": SentencePiece file or None}."""
    return {key: side.save(folder, key) for key, side in sides.items()}


def read_sides(folder: Path, meta: dict) -> dict[str, Any]:
    """The sides (`seqlab.data.vocab.Side`) that `write_sides` wrote, by key, in order."""
    from seqlab.data.vocab import Side

    return {key: Side.load(folder, key) for key in meta["sides"]}


def write_meta(folder: Path, meta: dict) -> None:
    """`seqlab.json`, with the format marker and version."""
    full = {"format": FORMAT, "version": VERSION, **meta}
    (folder / META).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", "utf-8")


def read_meta(folder: str | Path, engine: str | None = None) -> dict:
    """`seqlab.json` of an export folder, checked (and for `engine` when given).

    Raises:
        CheckpointError: naming the folder, when it holds no readable `seqlab.json`, one of a
            newer version, or a folder for another engine than `engine`.
    """
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not an exported model folder (no {META})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seqlab export (no 'format': '{FORMAT}' entry)")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(f"{path}: version {meta.get('version')!r} is newer than {VERSION}")
    if meta.get("engine") not in ENGINES:
        raise CheckpointError(f"{path}: unknown engine {meta.get('engine')!r}")
    if engine is not None and meta["engine"] != engine:
        raise CheckpointError(
            f"{folder}: a {meta['engine']} export; it cannot be opened as a {engine} model"
        )
    return meta


def describe(loaded: Any, engine: str) -> dict:
    """What `seqlab.json` says of a loaded model (`LoadedModel`), besides its sides.

    Raises:
        CheckpointError: one of its `extras` (classification: the label names) is not plain
            JSON data.
    """
    recipe = loaded.recipe
    extras = dict(getattr(loaded, "extras", {}) or {})
    try:
        json.dumps(extras)
    except TypeError as error:
        raise CheckpointError(
            f"the model's extras {sorted(extras)} are not JSON: {error}"
        ) from None
    return {
        "engine": engine,
        "task": recipe.task,
        "recipe": recipe.to_dict(),
        "decode": recipe.to_dict()["decode"],
        "max_source_len": getattr(loaded.model, "max_source_len", None),
        "max_target_len": getattr(loaded.model, "max_target_len", None),
        "special_tokens": {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"},
        "source_ends_with": "<eos>",
        "decoder_starts_with": "<bos>",
        "extras": extras,
    }


# -- the portable seqlab folder --------------------------------------------------------------------


def export_seqlab(loaded: Any, outdir: str | Path, force: bool = False) -> Path:
    """Write `loaded` (a `LoadedModel`) as a portable folder: safetensors weights, JSON, tokenizer
    files. Tied weights (one tensor under two names) are stored once and load tied."""
    from safetensors.torch import save_model

    with atomic_folder(outdir, force) as tmp:
        save_model(loaded.model, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        meta = describe(loaded, "seqlab")
        meta["sides"] = write_sides(loaded.sides, tmp)
        write_meta(tmp, meta)
    return Path(outdir)


def read_folder(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """`seqlab.json` and the sides of a seqlab export folder (`--format seqlab`).

    Raises:
        CheckpointError: naming the folder, when it is not a seqlab export (a CTranslate2 one
            included).
    """
    meta = read_meta(path, "seqlab")
    return meta, read_sides(Path(path), meta)


def load_weights(model: Any, path: str | Path) -> None:
    """Load the folder's `model.safetensors` into `model` (built from its recipe), strictly.

    Raises:
        CheckpointError: the file is missing, unreadable, or does not fit `model`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_safetensors

    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS}")
    try:
        load_safetensors(model, str(weights), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"{weights}: does not fit the recipe's model: {error}") from error
