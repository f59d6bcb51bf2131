"""Scores: BLEU and chrF by sacrebleu (with signatures), perplexity and accuracy.

Names are imported on first use (PEP 562): sacrebleu costs about 0.1 s to import, which training
and `seqlab translate` need not pay, and the metrics import torch, which scoring a CTranslate2
export (`seqlab evaluate`) need not pay.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from seqlab.evaluation.bleu import corpus_scores
    from seqlab.evaluation.metrics import MeanAccumulator, accuracy, perplexity

_WHERE = {
    "MeanAccumulator": "seqlab.evaluation.metrics",
    "accuracy": "seqlab.evaluation.metrics",
    "perplexity": "seqlab.evaluation.metrics",
    "corpus_scores": "seqlab.evaluation.bleu",
}

__all__ = ["MeanAccumulator", "accuracy", "corpus_scores", "perplexity"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'seqlab.evaluation' has no attribute {name!r}")
