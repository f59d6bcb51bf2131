"""Using a trained model: translating text (`translator.py`), labelling sentences
(`classifier.py`) and the CPU fast paths applied to a built model for inference (`optimize.py`); a
model is loaded by `seqlab.checkpoint.load_model`."""

from seqlab.inference.classifier import Classifier, Prediction
from seqlab.inference.translator import Translation, Translator

__all__ = ["Classifier", "Prediction", "Translation", "Translator"]
