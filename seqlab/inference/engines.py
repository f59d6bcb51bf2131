"""`open_translator`: one call for translate, evaluate and serve to open whatever model path they
are given, with the engine it needs.

The engine follows from what the path holds: a checkpoint file or a `--format seqlab` folder runs
on PyTorch (`Translator`), a `--format ctranslate2` folder on CTranslate2
(`CTranslate2Translator`). `engine=` overrides where both are possible: a checkpoint or seqlab
folder can run on CTranslate2 (converted in memory at start-up, float32); a CTranslate2 folder
holds no PyTorch model. Both engines have the same `translate(lines, *, beam_size, nbest,
length_penalty, batch_size, max_tokens, progress) -> list[list[Translation]]` and a `decode`
attribute (`DecodeConfig`) holding the model's decoding defaults.

Nothing heavy is imported here: torch only for the PyTorch engine, ctranslate2 only for its own.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from seqlab.errors import CheckpointError, ConfigError
from seqlab.inference.folder import is_export_folder, read_meta
from seqlab.inference.results import TranslationEngine

logger = logging.getLogger(__name__)

ENGINES = ("torch", "ctranslate2")


def engine_of(path: str | Path) -> str:
    """The engine a model path needs: "torch" for a checkpoint file or seqlab folder,
    "ctranslate2" for a CTranslate2 export.

    Raises:
        CheckpointError: `path` does not exist, or is a folder `seqlab export` did not write.
    """
    path = Path(path)
    if path.is_dir():
        if not is_export_folder(path):
            raise CheckpointError(
                f"{path}: a folder, but not a model exported by `seqlab export` (no seqlab.json)"
            )
        return "torch" if read_meta(path)["engine"] == "seqlab" else "ctranslate2"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or model folder")
    return "torch"


def open_translator(
    path: str | Path,
    *,
    engine: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    optimize: bool = True,
) -> TranslationEngine:
    """A translator for the model at `path` (checkpoint file, seqlab folder or CTranslate2 folder).

    Args:
        engine: "torch" or "ctranslate2"; None: the one the path needs (`engine_of`).
        device: "cpu", "cuda", ... (both engines).
        threads: PyTorch's intra-op threads, or CTranslate2's parallel batches (`inter_threads`,
            one thread each); None: the engine's default.
        optimize: PyTorch only: search with `optimize_for_inference` on CPU.

    Raises:
        CheckpointError: the path holds no model, or no model the engine can run.
        ConfigError: an unknown engine, or `optimize=False` for CTranslate2.
    """
    found = engine_of(path)
    engine = engine or found
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine == "torch":
        if found == "ctranslate2":
            raise CheckpointError(
                f"{path}: a CTranslate2 export holds no PyTorch model; for --engine torch give "
                "the checkpoint or a `seqlab export --format seqlab` folder"
            )
        return _torch_translator(path, device, threads, optimize)
    if not optimize:
        raise ConfigError("--no-optimize applies to the torch engine only, not to ctranslate2")
    from seqlab.inference.ct2 import CTranslate2Translator

    if found == "ctranslate2":
        return CTranslate2Translator(path, device, threads)
    return _converted(path, device, threads)


def _torch_translator(path: str | Path, device: str, threads: int | None, optimize: bool):
    import torch

    from seqlab.inference.translator import Translator

    if threads is not None:
        torch.set_num_threads(threads)
    return Translator.from_checkpoint(path, device, optimize)


def _converted(path: str | Path, device: str, threads: int | None):
    """A CTranslate2 engine for a checkpoint or seqlab folder, converted into a temporary folder
    that is removed once CTranslate2 has read it."""
    from seqlab.checkpoint import load_model
    from seqlab.inference.ct2 import CTranslate2Translator, export_ctranslate2

    logger.info("converting %s to CTranslate2 (float32) for --engine ctranslate2", path)
    loaded = load_model(path, "cpu", task="translation")
    tmp = Path(tempfile.mkdtemp(prefix="seqlab-ct2-"))
    try:
        export_ctranslate2(loaded, tmp / "model")
        return CTranslate2Translator(tmp / "model", device, threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
