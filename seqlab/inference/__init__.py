"""Using a trained model: translating text (`translator.py`) and the CPU fast paths applied to a
built model for inference (`optimize.py`); a model is loaded by `seqlab.checkpoint.load_model`."""

from seqlab.inference.translator import Translation, Translator

__all__ = ["Translation", "Translator"]
