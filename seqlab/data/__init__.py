"""Text to batches: tokenizers, vocabularies, corpora, collation and length-bucketed sampling.

Corpus fetching (`seqlab.data.corpus`) and the Arrow-cached tables (`seqlab.data.dataset`, which
imports Hugging Face `datasets`) are imported from their modules, so `import seqlab.data`
stays light.
"""

from seqlab.data.batch import Batch, collate, pad
from seqlab.data.sampler import BucketBatchSampler, padding_stats
from seqlab.data.tokenize import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    tokenizer_from_config,
)
from seqlab.data.vocab import SPECIALS, Vocab

__all__ = [
    "SPECIALS",
    "Batch",
    "BucketBatchSampler",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "Vocab",
    "WordTokenizer",
    "collate",
    "pad",
    "padding_stats",
    "tokenizer_from_config",
]
