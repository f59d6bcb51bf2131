"""Scores: BLEU and chrF by sacrebleu (with signatures), perplexity and accuracy.

`corpus_scores` is imported on first use (PEP 562): sacrebleu costs about 0.1 s to import, which
training and `seqlab translate` (using only the metrics) need not pay.
"""

from typing import TYPE_CHECKING

from seqlab.evaluation.metrics import MeanAccumulator, accuracy, perplexity

if TYPE_CHECKING:  # pragma: no cover
    from seqlab.evaluation.bleu import corpus_scores

__all__ = ["MeanAccumulator", "accuracy", "corpus_scores", "perplexity"]


def __getattr__(name: str):
    if name == "corpus_scores":
        from seqlab.evaluation.bleu import corpus_scores

        return corpus_scores
    raise AttributeError(f"module 'seqlab.evaluation' has no attribute {name!r}")
