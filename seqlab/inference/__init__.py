"""Using a trained model: translating text (`translator.py`), labelling sentences
(`classifier.py`), the CPU fast paths applied to a built model for inference (`optimize.py`),
exported model folders (`folder.py`: the portable safetensors folder; `ct2.py`: CTranslate2), and
`open_translator` (`engines.py`), which opens a checkpoint or either folder with the engine it
needs. A checkpoint is loaded by `seqlab.checkpoint.load_model`.

The names are imported lazily (PEP 562), so that `from seqlab.inference import open_translator`
with a CTranslate2 folder never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from seqlab.inference.classifier import Classifier, Prediction
    from seqlab.inference.engines import open_translator
    from seqlab.inference.results import Translation
    from seqlab.inference.translator import Translator

_WHERE = {
    "Classifier": "seqlab.inference.classifier",
    "Prediction": "seqlab.inference.classifier",
    "Translation": "seqlab.inference.results",
    "Translator": "seqlab.inference.translator",
    "open_translator": "seqlab.inference.engines",
}

__all__ = ["Classifier", "Prediction", "Translation", "Translator", "open_translator"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'seqlab.inference' has no attribute {name!r}")
