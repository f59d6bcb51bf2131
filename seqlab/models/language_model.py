"""Recurrent language models: an RNN, GRU or LSTM stack read as a `Decoder` with an empty source.

The model of Zaremba et al. 2014 and pytorch/examples `word_language_model`: embedding -> dropout
-> L-layer RNN/GRU/LSTM (dropout between layers) -> dropout -> linear output over the vocabulary,
optionally tied to the embedding (Press & Wolf 2017; Inan et al. 2017). When the embedding is
narrower than the hidden size a tied model projects H -> E before the shared output table.

It satisfies `Decoder` (interfaces.py) so `greedy_search` and `sample` generate text with it: the
"source" is empty (`Encoded` with S = 0) and `Encoded.final`, when set, is the state to start
from, which is how `prime` conditions generation on a prefix. Training with truncated
backpropagation through time calls `run(tokens, state) -> (logits, state)` directly, carrying
the state from one batch to the next (`seqlab/tasks/language_model.py`). `forward`, `step` and
`run` share one code path, so stepping equals teacher forcing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from seqlab.errors import ConfigError
from seqlab.layers.projection import AdaptiveSoftmax
from seqlab.layers.recurrent import Recurrent
from seqlab.layers.regularization import (
    LockedDropout,
    VariationalRecurrent,
    activation_penalty,
    embedding_dropout,
    weight_drop,
)
from seqlab.models.interfaces import DecoderState, Encoded, at_rows

PAD_ID = 0  # seqlab vocabularies fix <pad> at id 0 (see seqlab/data/vocab.py)


@dataclass(frozen=True)
class LMConfig:
    """`[model] kind = "rnn_lm"` in a recipe.

    Attributes:
        cell: "rnn" (Elman, tanh), "gru" or "lstm".
        embed_dim: E, the embedding size.
        hidden_size: H, per layer.
        num_layers: L.
        dropout: on the embeddings, between recurrent layers and before the output layer.
        tie_embeddings: share the embedding table with the output layer (Press & Wolf 2017),
            through a Linear(H -> E) when E != H.
        init_range: embedding and output weights ~ U(-r, r), output bias 0 (pytorch/examples);
            0 keeps torch's defaults. Recurrent weights keep torch's U(-1/sqrt(H), 1/sqrt(H)).
        adaptive_cutoffs: (c1, c2) for an adaptive softmax (Grave et al. 2017): the c1 most
            frequent tokens in the head, ranks c1..c2 and c2..V in two tail clusters of width
            H/4 and H/16. Far cheaper than a full softmax over a large vocabulary on a CPU; it
            cannot be tied. None: a full softmax.

    AWD-LSTM's regularisation (Merity et al. 2018; `seqlab/layers/regularization.py`), all off
    by default:
        variational: dropout masks shared by every time step (locked dropout), on the
            embeddings, between layers (layers then run one at a time) and on the outputs.
        dropout_input: dropout on the embeddings (AWD's dropouti); None: `dropout`.
        dropout_hidden: dropout between recurrent layers (dropouth); None: `dropout`.
        dropout_embedding: drop whole words from the embedding table (dropoute).
        weight_drop: DropConnect on the hidden-to-hidden weights (wdrop).
        ar_alpha, tar_beta: activation and temporal activation regularisation of the last
            layer's outputs, added to the training loss (alpha 2, beta 1 in AWD-LSTM).
    """

    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    embed_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2
    tie_embeddings: bool = True
    init_range: float = 0.1
    adaptive_cutoffs: tuple[int, int] | None = None
    variational: bool = False
    dropout_input: float | None = None
    dropout_hidden: float | None = None
    dropout_embedding: float = 0.0
    weight_drop: float = 0.0
    ar_alpha: float = 0.0
    tar_beta: float = 0.0


@dataclass(frozen=True)
class LMState(DecoderState):
    """State of `RNNLanguageModel`, batch-first.

    Attributes:
        hidden: (B, L, H) hidden state of every layer.
        cell: (B, L, H) LSTM cell state, None for RNN/GRU.
    """

    hidden: Tensor
    cell: Tensor | None = None

    def detach(self) -> LMState:
        """The same values cut from the autograd graph (between TBPTT segments)."""
        cell = None if self.cell is None else self.cell.detach()
        return LMState(self.hidden.detach(), cell)


class RNNLanguageModel(nn.Module):
    """p(x_t | x_<t) with a recurrent stack; a `Decoder` whose source is empty.

    Args:
        embedding: token embedding (V, E).
        rnn: unidirectional `Recurrent` (or `VariationalRecurrent`) with input E, hidden H.
        output: maps (..., H) features to (..., V) logits.
        dropout: on the features before `output`, and on the embeddings unless `dropout_input`.
        dropout_input: on the embeddings; None: `dropout`.
        variational: locked dropout masks (one per sequence, shared over time).
        dropout_embedding: whole-word dropout on the embedding table.
        ar_alpha, tar_beta: AR / TAR weights of `run_with_penalty`.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        rnn: nn.Module,
        output: nn.Module,
        dropout: float,
        *,
        dropout_input: float | None = None,
        variational: bool = False,
        dropout_embedding: float = 0.0,
        ar_alpha: float = 0.0,
        tar_beta: float = 0.0,
    ):
        super().__init__()
        if rnn.num_directions != 1:
            raise ValueError("a language model's Recurrent must be unidirectional")
        self.embedding, self.rnn, self.output = embedding, rnn, output
        drop = LockedDropout if variational else nn.Dropout
        self.input_dropout = drop(dropout if dropout_input is None else dropout_input)
        self.output_dropout = drop(dropout)
        self.dropout_embedding, self.ar_alpha, self.tar_beta = dropout_embedding, ar_alpha, tar_beta
        self.weight_dropped = any(parametrize.is_parametrized(m) for m in rnn.modules())

    def zero_state(self, batch: int, device: torch.device | None = None) -> LMState:
        """All-zero state for `batch` rows."""
        device = device or self.embedding.weight.device
        shape = (batch, self.rnn.num_layers, self.rnn.hidden_size)
        hidden = torch.zeros(shape, device=device)  # (B, L, H)
        return LMState(hidden, torch.zeros_like(hidden) if self.rnn.mode == "lstm" else None)

    def run(self, tokens: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        """Read tokens (B, T) from `state` (zeros when None) -> (features (B, T, H), next state).

        `logits(features)` or `nll(features, targets)` turn the features into predictions.
        """
        features, _, state = self._run(tokens, state)
        return features, state

    def run_with_penalty(
        self, tokens: Tensor, state: LMState | None = None
    ) -> tuple[Tensor, LMState, Tensor]:
        """`run` plus the AR / TAR penalty of this segment (a scalar; 0 when both are off),
        for the training loss."""
        features, raw, state = self._run(tokens, state)
        return features, state, activation_penalty(features, raw, self.ar_alpha, self.tar_beta)

    def _run(self, tokens: Tensor, state: LMState | None) -> tuple[Tensor, Tensor, LMState]:
        """-> (features after dropout, raw outputs (B, T, H) before it, next state)."""
        if state is None:
            state = self.zero_state(tokens.size(0), tokens.device)
        embedded = embedding_dropout(self.embedding, tokens, self.dropout_embedding, self.training)
        x = self.input_dropout(embedded)  # (B, T, E)
        hx = state.hidden if state.cell is None else (state.hidden, state.cell)  # (B, L, H)
        # weight drop: one mask per segment, however often the weights are read
        dropping = self.training and self.weight_dropped
        with parametrize.cached() if dropping else contextlib.nullcontext():
            outputs, final = self.rnn(x, None, hx)  # (B, T, H)
        hidden, cell = final if isinstance(final, tuple) else (final, None)  # (B, L, H)
        return self.output_dropout(outputs), outputs, LMState(hidden, cell)

    def logits(self, features: Tensor) -> Tensor:
        """(..., H) features -> (..., V) logits of the next token (log-probs when adaptive)."""
        if isinstance(self.output, AdaptiveSoftmax):
            flat = self.output.log_prob(features.reshape(-1, features.size(-1)))  # (N, V)
            return flat.view(*features.shape[:-1], -1)
        return self.output(features)

    def nll(self, features: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Per-token negative log-likelihood (natural log): features (B, T, H), targets (B, T).

        With `label_smoothing` > 0 the smoothed cross-entropy (for training only).
        Returns:
            (B, T) float32 losses.
        """
        if isinstance(self.output, AdaptiveSoftmax):
            if label_smoothing:
                raise ConfigError("label smoothing needs a full softmax (model.adaptive_cutoffs)")
            flat = features.reshape(-1, features.size(-1))  # (B*T, H)
            return -self.output.target_log_prob(flat, targets.flatten()).view_as(targets)
        logits = self.logits(features).float()  # (B, T, V)
        losses = nn.functional.cross_entropy(
            logits.flatten(0, 1),
            targets.flatten(),
            reduction="none",
            label_smoothing=label_smoothing,
        )  # (B*T,)
        return losses.view_as(targets)

    # -- the Decoder protocol ------------------------------------------------------------------
    def empty_source(self, batch: int, state: LMState | None = None) -> Encoded:
        """An `Encoded` with no source positions for `batch` rows, starting from `state`."""
        device = self.embedding.weight.device
        memory = torch.zeros(batch, 0, self.rnn.hidden_size, device=device)  # (B, 0, H)
        mask = torch.zeros(batch, 0, dtype=torch.bool, device=device)  # (B, 0)
        return Encoded(memory, mask, state)

    def prime(self, prefix: Tensor) -> Encoded:
        """The empty source whose state is the one after reading prefix (B, P); P may be 0."""
        state = None if prefix.size(1) == 0 else self.run(prefix)[1]
        return self.empty_source(prefix.size(0), state)

    def init_state(self, encoded: Encoded) -> LMState:
        """`encoded.final` (an `LMState`, e.g. from `prime`) or zeros."""
        if encoded.final is None:
            return self.zero_state(encoded.batch_size, encoded.memory.device)
        if not isinstance(encoded.final, LMState):
            raise TypeError(f"a language model starts from an LMState, got {type(encoded.final)}")
        return encoded.final

    def forward(self, tgt_in: Tensor, encoded: Encoded, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing from `init_state(encoded)`: tgt_in (B, T) -> logits (B, T, V), or
        (N, V) at the flat positions `rows` only."""
        features, _ = self.run(tgt_in, self.init_state(encoded))  # (B, T, H)
        return self.logits(at_rows(features, rows))

    def step(self, tokens: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """tokens (B,) -> (logits (B, V), next state)."""
        features, state = self.run(tokens.unsqueeze(1), state)  # (B, 1, H)
        return self.logits(features.squeeze(1)), state  # (B, V)


def _output_layer(
    hidden: int, vocab_size: int, tied: nn.Embedding | None, cutoffs: tuple[int, int] | None
) -> nn.Module:
    """Linear(H -> V); when tied, the embedding table as the (V, E) weight (after H -> E)."""
    if cutoffs is not None:
        return AdaptiveSoftmax(hidden, vocab_size, list(cutoffs), div_value=4.0)
    if tied is None:
        return nn.Linear(hidden, vocab_size)
    out = nn.Linear(tied.embedding_dim, vocab_size)
    out.weight = tied.weight
    if hidden == tied.embedding_dim:
        return out
    return nn.Sequential(nn.Linear(hidden, tied.embedding_dim), out)


def _validate(config: LMConfig, vocab_size: int) -> None:
    sizes = {
        "model.embed_dim": config.embed_dim,
        "model.hidden_size": config.hidden_size,
        "model.num_layers": config.num_layers,
        "vocabulary size": vocab_size,
    }
    for key, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    rates = {
        "model.dropout": config.dropout,
        "model.dropout_input": config.dropout_input or 0.0,
        "model.dropout_hidden": config.dropout_hidden or 0.0,
        "model.dropout_embedding": config.dropout_embedding,
        "model.weight_drop": config.weight_drop,
    }
    for key, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {rate}")
    for key, weight in (("model.ar_alpha", config.ar_alpha), ("model.tar_beta", config.tar_beta)):
        if weight < 0.0:
            raise ConfigError(f"{key} must be >= 0, got {weight}")
    if config.init_range < 0.0:
        raise ConfigError(f"model.init_range must be >= 0, got {config.init_range}")
    cutoffs = config.adaptive_cutoffs
    if cutoffs is not None:
        if config.tie_embeddings:
            raise ConfigError("model.adaptive_cutoffs cannot be used with model.tie_embeddings")
        if not 0 < cutoffs[0] < cutoffs[1] < vocab_size:
            raise ConfigError(
                f"model.adaptive_cutoffs = {list(cutoffs)} must rise strictly between 0 and the "
                f"vocabulary size {vocab_size}"
            )


def build_language_model(
    config: LMConfig, vocab_size: int, tgt_vocab_size: int | None = None
) -> RNNLanguageModel:
    """Build a recurrent LM over `vocab_size` tokens.

    `tgt_vocab_size` exists so the builder fits `MODELS` (source, target sizes); a language model
    has one vocabulary, so it must equal `vocab_size` when given.

    Raises:
        ConfigError: a non-positive size, a dropout outside [0, 1), or two different vocabularies.
    """
    if tgt_vocab_size is not None and tgt_vocab_size != vocab_size:
        raise ConfigError(
            f"a language model has one vocabulary, got sizes {vocab_size} and {tgt_vocab_size}"
        )
    _validate(config, vocab_size)
    c = config
    embedding = nn.Embedding(vocab_size, c.embed_dim, padding_idx=PAD_ID)
    between = c.dropout if c.dropout_hidden is None else c.dropout_hidden
    if c.variational:
        rnn: nn.Module = VariationalRecurrent(
            c.cell, c.embed_dim, c.hidden_size, c.num_layers, between, c.weight_drop
        )
    else:
        rnn = Recurrent(c.cell, c.embed_dim, c.hidden_size, c.num_layers, False, between)
        if c.weight_drop:
            weight_drop(rnn.rnn, c.weight_drop)
    tied = embedding if c.tie_embeddings else None
    output = _output_layer(c.hidden_size, vocab_size, tied, c.adaptive_cutoffs)
    if c.init_range > 0.0:
        nn.init.uniform_(embedding.weight, -c.init_range, c.init_range)
    if c.init_range > 0.0 and c.adaptive_cutoffs is None:
        final = output[-1] if isinstance(output, nn.Sequential) else output
        nn.init.zeros_(final.bias)
        if not c.tie_embeddings:
            nn.init.uniform_(final.weight, -c.init_range, c.init_range)
    return RNNLanguageModel(
        embedding,
        rnn,
        output,
        c.dropout,
        dropout_input=c.dropout_input,
        variational=c.variational,
        dropout_embedding=c.dropout_embedding,
        ar_alpha=c.ar_alpha,
        tar_beta=c.tar_beta,
    )
