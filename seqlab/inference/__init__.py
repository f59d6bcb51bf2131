"""Using a trained model: translating text (`translator.py`); export and serving grow beside it."""

from seqlab.inference.translator import (
    Translation,
    Translator,
    load_translation_checkpoint,
    side_from_payload,
    side_to_payload,
)

__all__ = [
    "Translation",
    "Translator",
    "load_translation_checkpoint",
    "side_from_payload",
    "side_to_payload",
]
