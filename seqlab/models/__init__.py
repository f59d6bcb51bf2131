"""Model families. `MODELS` maps a recipe's `[model] kind` to its config dataclass and builder.

Each family's config dataclass sits in its model file beside its `build_*` function; builders take
the config and the vocabulary sizes and return an `nn.Module` with `encode(src, src_mask)`,
`.decoder` (a `Decoder`, see interfaces.py) and `forward(src, src_mask, tgt_in) -> logits`.
Language models (`rnn_lm`) have one vocabulary and are themselves a `Decoder` with an empty
source (see language_model.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from seqlab.models.bert import BertConfig, build_bert
from seqlab.models.language_model import LMConfig, build_language_model
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer


class ModelEntry(NamedTuple):
    config: type
    build: Callable[[Any, int, int], nn.Module]


MODELS: dict[str, ModelEntry] = {
    "rnn_seq2seq": ModelEntry(RNNSeq2SeqConfig, build_rnn_seq2seq),
    "transformer": ModelEntry(TransformerConfig, build_transformer),
    "bert": ModelEntry(BertConfig, build_bert),
    "rnn_lm": ModelEntry(LMConfig, build_language_model),
}


def build_model(spec, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
    """Build the model a recipe's `ModelSpec` (kind + config) describes."""
    return MODELS[spec.kind].build(spec.config, src_vocab_size, tgt_vocab_size)
