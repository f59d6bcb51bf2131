"""Text to batches: tokenizers, vocabularies, corpora, collation and length-bucketed sampling.

Corpus fetching (`seqlab.data.corpus`) and the Arrow-cached tables (`seqlab.data.dataset`, which
imports Hugging Face `datasets`) are imported from their modules, and the names below on first
use (PEP 562), so `import seqlab.data` stays light: `seqlab.data.vocab` and `.tokenize` need no
torch.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
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

_WHERE = {
    "Batch": "seqlab.data.batch",
    "collate": "seqlab.data.batch",
    "pad": "seqlab.data.batch",
    "BucketBatchSampler": "seqlab.data.sampler",
    "padding_stats": "seqlab.data.sampler",
    "CharTokenizer": "seqlab.data.tokenize",
    "SentencePieceTokenizer": "seqlab.data.tokenize",
    "Tokenizer": "seqlab.data.tokenize",
    "WordTokenizer": "seqlab.data.tokenize",
    "tokenizer_from_config": "seqlab.data.tokenize",
    "SPECIALS": "seqlab.data.vocab",
    "Vocab": "seqlab.data.vocab",
}

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


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'seqlab.data' has no attribute {name!r}")
