"""Scores: BLEU and chrF by sacrebleu (with signatures), perplexity and accuracy."""

from seqlab.evaluation.bleu import corpus_scores
from seqlab.evaluation.metrics import MeanAccumulator, accuracy, perplexity

__all__ = ["MeanAccumulator", "accuracy", "corpus_scores", "perplexity"]
