"""Open a model for translation, whatever its path holds (for now: a seqlab checkpoint file).

`open_translator` is what `seqlab serve` (and later `translate` / `evaluate`) call: it returns an
object with `Translator`'s `translate(lines, ...)` and `decode` (the model's `DecodeConfig`). The
export work extends it to portable seqlab folders and CTranslate2 folders behind this signature.
"""

from __future__ import annotations

from pathlib import Path

from seqlab.errors import ConfigError
from seqlab.inference.translator import Translator


def open_translator(
    path: str | Path,
    *,
    engine: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    optimize: bool = True,
) -> Translator:
    """A translator for the model at `path` on `device`, using `threads` CPU threads if given.

    Raises:
        ConfigError: `engine` is not one this path can run on.
        CheckpointError: `path` is not a readable translation checkpoint.
    """
    if engine not in (None, "torch"):
        raise ConfigError(f"{path}: engine {engine!r} cannot run a checkpoint file; use 'torch'")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return Translator.from_checkpoint(path, device=device, optimize=optimize)
