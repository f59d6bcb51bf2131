"""seqlab: sequence modeling for NLP in PyTorch, a staged pipeline whose stages stand alone.

The curated public API; everything else is imported from its module (`seqlab.layers`,
`seqlab.models`, `seqlab.data.corpus`, ...).
"""

from seqlab.config import Recipe, load_recipe
from seqlab.data import Batch, BucketBatchSampler, Vocab, collate
from seqlab.decoding import Hypothesis, beam_search, greedy_search, sample
from seqlab.errors import CheckpointError, ConfigError, DataError, SeqlabError
from seqlab.inference import Translator
from seqlab.models import MODELS, build_model

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "Batch",
    "BucketBatchSampler",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Hypothesis",
    "Recipe",
    "SeqlabError",
    "Translator",
    "Vocab",
    "__version__",
    "beam_search",
    "build_model",
    "collate",
    "greedy_search",
    "load_recipe",
    "sample",
]
