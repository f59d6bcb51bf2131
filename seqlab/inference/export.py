"""`seqlab export`: a trained model as a folder for deployment, in one of two formats.

- "ctranslate2": a CTranslate2 model folder (Transformer translation models only; `ct2.py`),
  optionally quantized, plus our tokenizer files and `seqlab.json`;
- "seqlab": the portable folder (safetensors weights, recipe JSON, tokenizer files; `folder.py`)
  that `load_model`, translate, evaluate and serve open without unpickling anything.
Both are written atomically; the input is a checkpoint file or a seqlab folder.
"""

from __future__ import annotations

from pathlib import Path

from seqlab.errors import ConfigError

FORMATS = ("ctranslate2", "seqlab")


def export_model(
    path: str | Path,
    outdir: str | Path,
    format: str,
    *,
    quantization: str | None = None,
    force: bool = False,
) -> Path:
    """Export the model at `path` (checkpoint or seqlab folder) to `outdir` in `format`.

    Raises:
        ConfigError: an unknown format, or a quantization for the seqlab format.
        CheckpointError: `path` holds no model, or none the format can hold (a recurrent model
            to CTranslate2), or `outdir` exists and is not empty (without `force`).
    """
    from seqlab.checkpoint import load_model

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is not one of: {', '.join(FORMATS)}")
    if format == "seqlab" and quantization is not None:
        raise ConfigError("--quantization applies to --format ctranslate2 only")
    loaded = load_model(path, "cpu")
    if format == "seqlab":
        from seqlab.inference.folder import export_seqlab

        return export_seqlab(loaded, outdir, force)
    from seqlab.inference.ct2 import export_ctranslate2

    return export_ctranslate2(loaded, outdir, quantization, force)
