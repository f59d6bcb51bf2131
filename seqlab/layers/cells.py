"""Recurrent cells written from their equations: Elman RNN, GRU and LSTM.

Each cell is split in two, as the fused kernels are: the input projection `W_ih x + b_ih` does not
depend on the previous state, so a layer running a whole sequence computes it for every time step at
once (one matmul), and only the recurrent half runs step by step. The pure step functions
(`rnn_step`, `gru_step`, `lstm_step`) take that projection `gi` and the recurrent weights;
`seqlab/layers/recurrent.py` calls them with the parameters of a fused `nn.RNN/GRU/LSTM`.

The modules `RNNCell`, `GRUCell`, `LSTMCell` mirror `torch.nn.RNNCell / GRUCell / LSTMCell`:
same constructor arguments, parameter names (`weight_ih` (G*H, I), `weight_hh` (G*H, H), `bias_ih`,
`bias_hh`), gate order (GRU r, z, n; LSTM i, f, g, o), initialisation (uniform in ±1/sqrt(H)) and
call signature, so `ours.load_state_dict(theirs.state_dict())` gives the same outputs.

Shapes: B batch, I input size, H hidden size, G gates (1 RNN, 3 GRU, 4 LSTM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_step(
    gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh"
) -> Tensor:
    """Elman (1990) RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh).

    Args:
        gi: (B, H) the input projection W_ih x + b_ih.
        h: (B, H) previous hidden state.
        w_hh: (H, H); b_hh: (H,) or None.
        nonlinearity: "tanh" or "relu".

    Returns:
        (B, H) the next hidden state.
    """
    return NONLINEARITIES[nonlinearity](gi + F.linear(h, w_hh, b_hh))


def gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU (Cho et al. 2014, eqs. 5-8, in the form of the torch.nn.GRU docs).

    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 - z) ⊙ n + z ⊙ h

    Args:
        gi: (B, 3H) the input projection, gates in the order r, z, n.
        h: (B, H) previous hidden state.
        w_hh: (3H, H); b_hh: (3H,) or None.

    Returns:
        (B, H) the next hidden state.
    """
    gh = F.linear(h, w_hh, b_hh)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)  # each (B, H)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)  # each (B, H)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def lstm_step(
    gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, b_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    i = σ(W_ii x + b_ii + W_hi h + b_hi),  f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg),  o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')

    Args:
        gi: (B, 4H) the input projection, gates in the order i, f, g, o.
        state: (h, c), each (B, H).
        w_hh: (4H, H); b_hh: (4H,) or None.

    Returns:
        (h', c'), each (B, H).
    """
    h, c = state
    gates = gi + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)  # each (B, H)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


class _Cell(nn.Module):
    """Parameters, initialisation and input checks shared by the three cells."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_gates: int):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(num_gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(num_gates * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(num_gates * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(num_gates * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/sqrt(H) for every weight and bias, as torch's cells."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    def _batched(self, input: Tensor) -> tuple[Tensor, bool]:
        """(B, I) or (I,) -> ((B, I), whether the input was unbatched)."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: expected input (B, I) or (I,), got {input.dim()}-D"
            )
        return (input.unsqueeze(0), True) if input.dim() == 1 else (input, False)

    def _hidden(self, hx: Tensor | None, input: Tensor, unbatched: bool) -> Tensor:
        """The previous state as (B, H): zeros when None, unsqueezed when unbatched."""
        if hx is None:
            return input.new_zeros(input.size(0), self.hidden_size)
        return hx.unsqueeze(0) if unbatched else hx

    def _project(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight_ih, self.bias_ih)  # (B, G*H)


class RNNCell(_Cell):
    """Elman RNN cell, a drop-in for `torch.nn.RNNCell` (see `rnn_step`).

    Args:
        input_size: I. hidden_size: H. bias: use b_ih and b_hh.
        nonlinearity: "tanh" or "relu".
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}: use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, bias, num_gates=1)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """input (B, I) or (I,), hx (B, H) / (H,) or None (zeros) -> h' of hx's shape."""
        x, unbatched = self._batched(input)  # (B, I)
        h = self._hidden(hx, x, unbatched)  # (B, H)
        h_next = rnn_step(self._project(x), h, self.weight_hh, self.bias_hh, self.nonlinearity)
        return h_next.squeeze(0) if unbatched else h_next


class GRUCell(_Cell):
    """GRU cell, a drop-in for `torch.nn.GRUCell` (see `gru_step`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__(input_size, hidden_size, bias, num_gates=3)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """input (B, I) or (I,), hx (B, H) / (H,) or None (zeros) -> h' of hx's shape."""
        x, unbatched = self._batched(input)  # (B, I)
        h = self._hidden(hx, x, unbatched)  # (B, H)
        h_next = gru_step(self._project(x), h, self.weight_hh, self.bias_hh)
        return h_next.squeeze(0) if unbatched else h_next


class LSTMCell(_Cell):
    """LSTM cell, a drop-in for `torch.nn.LSTMCell` (see `lstm_step`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__(input_size, hidden_size, bias, num_gates=4)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """input (B, I) or (I,), hx (h, c) each (B, H) / (H,), or None (zeros) -> (h', c')."""
        x, unbatched = self._batched(input)  # (B, I)
        h = self._hidden(None if hx is None else hx[0], x, unbatched)  # (B, H)
        c = self._hidden(None if hx is None else hx[1], x, unbatched)  # (B, H)
        h_next, c_next = lstm_step(self._project(x), (h, c), self.weight_hh, self.bias_hh)
        if unbatched:
            return h_next.squeeze(0), c_next.squeeze(0)
        return h_next, c_next
