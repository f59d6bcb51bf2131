"""seqlab: sequence modeling for NLP in PyTorch, a staged pipeline whose stages stand alone.

The curated public API; everything else is imported from its module (`seqlab.layers`,
`seqlab.models`, `seqlab.data.corpus`, ...). The names are imported on first use (PEP 562), so
that `import seqlab` (and the `seqlab` command, e.g. translating with a CTranslate2 model) does
not pay for torch unless it uses it.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
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

_WHERE = {
    "Recipe": "seqlab.config",
    "load_recipe": "seqlab.config",
    "Batch": "seqlab.data",
    "BucketBatchSampler": "seqlab.data",
    "Vocab": "seqlab.data",
    "collate": "seqlab.data",
    "Hypothesis": "seqlab.decoding",
    "beam_search": "seqlab.decoding",
    "greedy_search": "seqlab.decoding",
    "sample": "seqlab.decoding",
    "CheckpointError": "seqlab.errors",
    "ConfigError": "seqlab.errors",
    "DataError": "seqlab.errors",
    "SeqlabError": "seqlab.errors",
    "Translator": "seqlab.inference",
    "MODELS": "seqlab.models",
    "build_model": "seqlab.models",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
