"""Recurrent layers over padded batches: fused torch RNN/GRU/LSTM, or our cells step by step.

`Recurrent` holds one fused `torch.nn.RNN/GRU/LSTM` (attribute `rnn`, batch-first), so its
state_dict is the fused module's (`rnn.weight_ih_l0`, `rnn.weight_hh_l0_reverse`, ...) whichever
path runs. Two paths compute the same numbers from those parameters:

- default: the fused kernel on `pack_padded_sequence(enforce_sorted=False)`, so padding never
  changes a real position's output (nor the final state); outputs are re-padded with zeros.
- `use_own_cells=True`: the step functions of `seqlab/layers/cells.py`, one time step at a time,
  masked so that padding leaves the state untouched; the reverse direction therefore starts at each
  row's last real token. Slower; it exists to show (and test) what the fused kernel computes.

Final-state layout (batch-first, unlike torch): (B, L*D, H) where index l*D + d is layer l,
direction d (0 forward, 1 backward) — torch's layer-major order with the batch moved first. An LSTM
returns an (h, c) pair of those. `final.view(B, L, D*H)` thus gives [forward; backward] per layer.

`DirectionBridge` merges the two directions' final states into one per layer for a decoder.

Shapes: B batch, S length, I input size, H hidden size, L layers, D directions (1 or 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.layers.cells import gru_step, lstm_step, rnn_step

FUSED = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
State = Tensor | tuple[Tensor, Tensor]  # (B, H) or LSTM (h, c), inside one direction of one layer


def _where(keep: Tensor, new: State, old: State) -> State:
    """Per row: `new` where keep (B, 1) is True, else `old` (padding leaves the state unchanged)."""
    if isinstance(new, tuple):
        return tuple(torch.where(keep, n, o) for n, o in zip(new, old))
    return torch.where(keep, new, old)


class Recurrent(nn.Module):
    """A (multi-layer, optionally bidirectional) RNN, GRU or LSTM over a padded, masked batch.

    Args:
        mode: "rnn" (tanh Elman), "gru" or "lstm".
        input_size: I.
        hidden_size: H, per direction.
        num_layers: L.
        bidirectional: D = 2 when True; outputs are [forward; backward], (B, S, 2H).
        dropout: on each layer's outputs except the last's (training only), as torch.
        use_own_cells: run our cells step by step instead of the fused kernel (same numbers).
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        use_own_cells: bool = False,
    ):
        super().__init__()
        if mode not in FUSED:
            raise ValueError(f"unknown recurrent mode {mode!r}: use one of {sorted(FUSED)}")
        self.mode, self.use_own_cells, self.dropout = mode, use_own_cells, dropout
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        # torch warns about dropout with a single layer, where it has no effect anyway.
        inter_layer = dropout if num_layers > 1 else 0.0
        self.rnn = FUSED[mode](
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=inter_layer,
        )

    @property
    def output_size(self) -> int:
        """D*H, the size of each output vector."""
        return self.num_directions * self.hidden_size

    def forward(
        self, x: Tensor, mask: Tensor | None = None, hx: State | None = None
    ) -> tuple[Tensor, State]:
        """Run the layer over a batch.

        Args:
            x: (B, S, I) inputs.
            mask: (B, S) bool, True at real positions, padding on the right only (as `collate`
                builds it); None when no row is padded. A row with no real position keeps its
                initial state and outputs zeros.
            hx: initial state, batch-first: (B, L*D, H) (an (h, c) pair for LSTM); None = zeros.

        Returns:
            outputs (B, S, D*H), zero at padding, and the final state in the layout of `hx`.
        """
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool (True at real tokens), got {mask.dtype}")
        if self.use_own_cells:
            return self._forward_own(x, mask, hx)
        return self._forward_fused(x, mask, hx)

    def _forward_fused(
        self, x: Tensor, mask: Tensor | None, hx: State | None
    ) -> tuple[Tensor, State]:
        """The fused kernel, on a packed sequence when the batch has padding."""
        h0 = None if hx is None else _to_torch_layout(hx)  # (L*D, B, H)
        if mask is None:
            outputs, final = self.rnn(x, h0)  # (B, S, D*H)
            return outputs, _to_batch_first(final)
        lengths = mask.sum(dim=1)  # (B,)
        if not torch.equal(mask, torch.arange(mask.size(1), device=mask.device) < lengths[:, None]):
            raise ValueError("Recurrent needs right-padded masks (True first, then False)")
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        packed_out, final = self.rnn(packed, h0)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.size(1))
        outputs = outputs.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B, S, D*H)
        final = _to_batch_first(final)  # (B, L*D, H)
        if not bool(lengths.all()):  # empty rows were run on one pad token: restore their state
            empty = (lengths == 0).view(-1, 1, 1)  # (B, 1, 1)
            initial = self._zeros(x) if hx is None else hx
            final = _where(empty, initial, final)
        return outputs, final

    def _zeros(self, x: Tensor) -> State:
        shape = (x.size(0), self.num_layers * self.num_directions, self.hidden_size)
        h = x.new_zeros(shape)  # (B, L*D, H)
        return (h, h.clone()) if self.mode == "lstm" else h

    def _forward_own(
        self, x: Tensor, mask: Tensor | None, hx: State | None
    ) -> tuple[Tensor, State]:
        """Our cells, layer by layer and direction by direction, with the fused parameters."""
        if mask is None:
            mask = x.new_ones(x.shape[:2], dtype=torch.bool)  # (B, S)
        initial = self._zeros(x) if hx is None else hx
        layer_input, finals = x, []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                start = _index_state(initial, index)  # (B, H) or (h, c)
                out, end = self._scan(layer_input, mask, start, layer, reverse=direction == 1)
                outputs.append(out)
                finals.append(end)
            layer_input = torch.cat(outputs, dim=-1)  # (B, S, D*H)
            if layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
        return layer_input, _stack_states(finals)

    def _scan(
        self, x: Tensor, mask: Tensor, state: State, layer: int, reverse: bool
    ) -> tuple[Tensor, State]:
        """One direction of one layer: x (B, S, In) -> (outputs (B, S, H), final state)."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih, w_hh = (
            getattr(self.rnn, "weight_ih" + suffix),
            getattr(self.rnn, "weight_hh" + suffix),
        )
        b_ih, b_hh = getattr(self.rnn, "bias_ih" + suffix), getattr(self.rnn, "bias_hh" + suffix)
        gi = F.linear(x, w_ih, b_ih)  # (B, S, G*H): the input half of every step at once
        steps = range(x.size(1) - 1, -1, -1) if reverse else range(x.size(1))
        outputs: list[Tensor] = [x] * x.size(1)
        for t in steps:
            keep = mask[:, t, None]  # (B, 1)
            state = _where(keep, self._step(gi[:, t], state, w_hh, b_hh), state)
            h = state[0] if isinstance(state, tuple) else state  # (B, H)
            outputs[t] = h.masked_fill(~keep, 0.0)
        return torch.stack(outputs, dim=1), state  # (B, S, H)

    def _step(self, gi: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None) -> State:
        if self.mode == "lstm":
            return lstm_step(gi, state, w_hh, b_hh)
        if self.mode == "gru":
            return gru_step(gi, state, w_hh, b_hh)
        return rnn_step(gi, state, w_hh, b_hh, self.rnn.nonlinearity)


def _to_torch_layout(state: State) -> State:
    """(B, L*D, H) -> (L*D, B, H), contiguous as the fused kernels want it."""
    if isinstance(state, tuple):
        return tuple(s.transpose(0, 1).contiguous() for s in state)
    return state.transpose(0, 1).contiguous()


def _to_batch_first(state: State) -> State:
    """(L*D, B, H) -> (B, L*D, H)."""
    if isinstance(state, tuple):
        return tuple(s.transpose(0, 1) for s in state)
    return state.transpose(0, 1)


def _index_state(state: State, index: int) -> State:
    """Layer-direction `index` of a (B, L*D, H) state -> (B, H) (or an (h, c) pair)."""
    if isinstance(state, tuple):
        return tuple(s[:, index] for s in state)
    return state[:, index]


def _stack_states(states: list[State]) -> State:
    """L*D states of (B, H) -> (B, L*D, H) (or an (h, c) pair)."""
    if isinstance(states[0], tuple):
        return tuple(torch.stack(parts, dim=1) for parts in zip(*states))
    return torch.stack(states, dim=1)


class DirectionBridge(nn.Module):
    """Merge a bidirectional encoder's final states into one state per layer for a decoder.

    For each layer l: h_l = tanh(W_l [h_l^fwd; h_l^bwd] + b_l), a learned Linear(2H -> H) per layer
    (as the bridge of Bahdanau et al. 2015, §A.2.2, which initialises the decoder with
    tanh(W_s h_1^bwd), here on both directions). An LSTM's cell states get their own Linear per
    layer and no tanh: unlike h, a cell state is not bounded to (-1, 1).

    Args:
        num_layers: L.
        hidden_size: H, per direction.
        lstm: also merge cell states (input and output are (h, c) pairs).
    """

    def __init__(self, num_layers: int, hidden_size: int, lstm: bool = False):
        super().__init__()
        self.hidden = nn.ModuleList(
            nn.Linear(2 * hidden_size, hidden_size) for _ in range(num_layers)
        )
        self.cell = (
            nn.ModuleList(nn.Linear(2 * hidden_size, hidden_size) for _ in range(num_layers))
            if lstm
            else None
        )

    @staticmethod
    def _merge(final: Tensor, linears: nn.ModuleList) -> Tensor:
        """(B, L*2, H) -> per layer [fwd; bwd] (B, L, 2H) -> (B, L, H)."""
        per_layer = final.reshape(final.size(0), len(linears), -1)  # (B, L, 2H)
        return torch.stack([lin(per_layer[:, l]) for l, lin in enumerate(linears)], dim=1)

    def forward(self, final: State) -> State:
        """final (B, 2L, H) from a bidirectional `Recurrent` (or an (h, c) pair) -> (B, L, H)."""
        if self.cell is None:
            return torch.tanh(self._merge(final, self.hidden))
        h, c = final
        return torch.tanh(self._merge(h, self.hidden)), self._merge(c, self.cell)
