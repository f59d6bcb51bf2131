"""Regularisers of recurrent language models: AWD-LSTM's (Merity et al. 2018, "Regularizing and
Optimizing LSTM Language Models", §4).

- `LockedDropout`: variational dropout (Gal & Ghahramani 2016), one mask per sequence and unit
  shared by every time step, on the embeddings, between layers and on the outputs.
- `embedding_dropout`: drops whole words, the same ones at every occurrence in a batch.
- `weight_drop`: DropConnect (Wan et al. 2013) on the hidden-to-hidden matrices of a fused RNN,
  one dropped matrix per forward, so the recurrence itself is regularised without leaving the
  fused kernel. Built on `torch.nn.utils.parametrize`; run the forward inside
  `parametrize.cached()` so that every access in it sees the same mask.
- `activation_penalty`: activation and temporal activation regularisation (AR, TAR), §4.6.
- `VariationalRecurrent`: a unidirectional stack run layer by layer with `LockedDropout` between
  the layers (a fused multi-layer RNN can only apply ordinary dropout there).

Each is the identity (or zero) in eval mode, so evaluation and generation are deterministic.
Shapes: x (B, T, H) batch-first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from seqlab.layers.recurrent import Recurrent, State


def _check_rate(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")


class LockedDropout(nn.Module):
    """Dropout whose mask is drawn once per (row, unit) and shared by all T time steps.

    Args:
        p: probability of zeroing a unit; kept units are scaled by 1 / (1 - p).
    """

    def __init__(self, p: float):
        super().__init__()
        _check_rate("LockedDropout p", p)
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, H) -> (B, T, H)."""
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - self.p)  # (B, 1, H)
        return x * keep / (1.0 - self.p)


def embedding_dropout(embedding: nn.Embedding, ids: Tensor, p: float, training: bool) -> Tensor:
    """Embed ids (B, T) with each vocabulary row zeroed with probability p (every occurrence of a
    dropped word is zero), the kept rows scaled by 1 / (1 - p) -> (B, T, E)."""
    _check_rate("embedding dropout", p)
    if not training or p == 0.0:
        return embedding(ids)
    weight = embedding.weight
    keep = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p) / (1.0 - p)  # (V, 1)
    return F.embedding(ids, weight * keep, embedding.padding_idx)


class DropConnect(nn.Module):
    """A parametrization: in training, the weight with each entry zeroed with probability p and
    the rest scaled by 1 / (1 - p); in eval, the weight itself."""

    def __init__(self, p: float):
        super().__init__()
        _check_rate("weight drop", p)
        self.p = p

    def forward(self, weight: Tensor) -> Tensor:
        return F.dropout(weight, self.p, self.training)


def weight_drop(rnn: nn.RNNBase, p: float) -> nn.RNNBase:
    """Register `DropConnect(p)` on every hidden-to-hidden weight of `rnn` (in place).

    The parameters move to `rnn.parametrizations.<name>.original` (so do their state-dict keys);
    a model built with the same setting loads such a checkpoint.
    """
    names = [name for name, _ in rnn.named_parameters() if name.startswith("weight_hh")]
    for name in names:
        parametrize.register_parametrization(rnn, name, DropConnect(p))
    return rnn


def activation_penalty(dropped: Tensor, raw: Tensor, alpha: float, beta: float) -> Tensor:
    """AR + TAR of the last layer's outputs (Merity et al. 2018, §4.6), a scalar.

    AR = alpha * mean(dropped^2) keeps the (dropped-out) outputs small; TAR = beta *
    mean((raw_t - raw_{t-1})^2) keeps the raw outputs from changing fast between steps.

    Args:
        dropped: (B, T, H) outputs after dropout.
        raw: (B, T, H) the same outputs before dropout.
    """
    penalty = dropped.new_zeros(())
    if alpha:
        penalty = penalty + alpha * dropped.pow(2).mean()
    if beta and raw.size(1) > 1:
        penalty = penalty + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    return penalty


class VariationalRecurrent(nn.Module):
    """A unidirectional L-layer RNN/GRU/LSTM with `LockedDropout` between layers and optional
    `weight_drop`; the interface of a unidirectional `Recurrent` without padding masks.

    Each layer is a one-layer `Recurrent` (`layers.<l>.rnn`), so the fused kernel runs per layer.

    Args:
        mode: "rnn", "gru" or "lstm".
        input_size, hidden_size: I and H (every layer H wide).
        num_layers: L.
        dropout: locked dropout on each layer's outputs except the last's.
        weight_drop_p: DropConnect on the hidden-to-hidden weights (0: none).
    """

    num_directions = 1

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float = 0.0,
        weight_drop_p: float = 0.0,
    ):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(Recurrent(mode, size, hidden_size) for size in sizes)
        if weight_drop_p:
            for layer in self.layers:
                weight_drop(layer.rnn, weight_drop_p)
        self.between = LockedDropout(dropout)
        self.mode, self.hidden_size, self.num_layers = mode, hidden_size, num_layers

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(
        self, x: Tensor, mask: Tensor | None = None, hx: State | None = None
    ) -> tuple[Tensor, State]:
        """x (B, T, I), hx (B, L, H) (an (h, c) pair for LSTM) or None -> (outputs (B, T, H),
        final state like hx)."""
        if mask is not None:
            raise ValueError("VariationalRecurrent takes no padding mask (LM batches have none)")
        finals = []
        for index, layer in enumerate(self.layers):
            own = None if hx is None else _layer_state(hx, index)  # (B, 1, H)
            x, final = layer(x, None, own)  # (B, T, H)
            finals.append(final)
            if index < self.num_layers - 1:
                x = self.between(x)
        if isinstance(finals[0], tuple):
            return x, (torch.cat([f[0] for f in finals], 1), torch.cat([f[1] for f in finals], 1))
        return x, torch.cat(finals, dim=1)  # (B, L, H)


def _layer_state(state: State, index: int) -> State:
    """Layer `index`'s slice (B, 1, H) of a (B, L, H) state or (h, c) pair."""
    if isinstance(state, tuple):
        return tuple(part[:, index : index + 1] for part in state)
    return state[:, index : index + 1]
