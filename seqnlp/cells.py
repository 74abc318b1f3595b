"""Textbook recurrent cells, one time step at a time: what the fused kernels in `RNNEncoder` compute.

These are for reading and for tests, not for speed: `reference_forward` loops over sequences, layers,
directions and steps in Python. They load their weights from any module that uses nn.LSTM's parameter
names and layout (`weight_ih_l{k}[_reverse]` (G*H, In), `weight_hh_l{k}[_reverse]` (G*H, H),
`bias_ih_l{k}[_reverse]`, `bias_hh_l{k}[_reverse]` (G*H,)), i.e. nn.LSTM / nn.GRU / nn.RNN or an
`RNNEncoder`, with the gate blocks stacked in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqnlp.encoders import GATES, State, check_lengths
from seqnlp.errors import SeqnlpError


class _Cell(nn.Module):
    """Holds one layer-direction's weights, copied (detached) from a fused module."""

    def __init__(self, source: nn.Module, layer: int, direction: int) -> None:
        super().__init__()
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        try:
            weights = [getattr(source, name + suffix).detach().clone() for name in names]
        except AttributeError:
            raise SeqnlpError(f"{type(source).__name__} has no nn.LSTM-style weights for layer {layer}") from None
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = (nn.Parameter(w) for w in weights)
        self.hidden_size = self.weight_hh.shape[1]

    def _affine(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(W_ih x + b_ih, W_hh h + b_hh), each (B, G*H): the GRU needs the two halves apart."""
        return x @ self.weight_ih.T + self.bias_ih, h @ self.weight_hh.T + self.bias_hh  # (B, G*H) each


class RNNCell(_Cell):
    """Elman cell: h_t = act(W_xh x_t + b_xh + W_hh h_{t-1} + b_hh), act = tanh or relu."""

    def __init__(self, source: nn.Module, layer: int, direction: int, nonlinearity: str = "tanh") -> None:
        super().__init__(source, layer, direction)
        if nonlinearity not in ("tanh", "relu"):
            raise SeqnlpError(f"nonlinearity must be tanh or relu, not {nonlinearity!r}")
        self.act = torch.tanh if nonlinearity == "tanh" else torch.relu

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        """One step: x (B, In), h (B, H) → h_t (B, H)."""
        from_x, from_h = self._affine(x, h)  # (B, H) each
        return self.act(from_x + from_h)  # (B, H)


class LSTMCell(_Cell):
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)   candidate cell
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)
    """

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step: x (B, In), (h, c) each (B, H) → (h_t, c_t)."""
        h, c = state
        from_x, from_h = self._affine(x, h)  # (B, 4H) each
        i, f, g, o = (from_x + from_h).chunk(4, dim=1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
        h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
        return h, c


class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al. 2014) as PyTorch defines it (reset applied after W_hn).

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)              reset gate
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)              update gate
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))   candidate
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
    """

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        """One step: x (B, In), h (B, H) → h_t (B, H)."""
        from_x, from_h = self._affine(x, h)  # (B, 3H) each
        x_r, x_z, x_n = from_x.chunk(3, dim=1)  # (B, H) each
        h_r, h_z, h_n = from_h.chunk(3, dim=1)  # (B, H) each
        r = torch.sigmoid(x_r + h_r)  # (B, H)
        z = torch.sigmoid(x_z + h_z)  # (B, H)
        n = torch.tanh(x_n + r * h_n)  # (B, H)
        return (1 - z) * n + z * h  # (B, H)


def make_cell(cell: str, source: nn.Module, layer: int, direction: int) -> _Cell:
    """The reference cell for `cell` ("lstm" | "gru" | "rnn_tanh" | "rnn_relu") with `source`'s weights."""
    if cell == "lstm":
        return LSTMCell(source, layer, direction)
    if cell == "gru":
        return GRUCell(source, layer, direction)
    if cell in ("rnn_tanh", "rnn_relu"):
        return RNNCell(source, layer, direction, nonlinearity=cell[4:])
    raise SeqnlpError(f"unknown cell {cell!r}; use one of {', '.join(GATES)}")


@torch.no_grad()
def reference_forward(
    encoder: nn.Module, x: Tensor, lengths: Tensor, state: State | None = None
) -> tuple[Tensor, State]:
    """What `RNNEncoder.forward` returns (eval mode: no dropout), computed one sequence and one step at a time.

    Each row runs alone over its own `lengths[b]` steps: forward direction left to right, backward
    right to left, layer k reading layer k-1's concatenated outputs (plus the layer input when the
    encoder is residual). Returns outputs (B, T, D), zero at padding, and the final state in the
    encoder's layout: (h, c) for LSTM, else h, each (layers * directions, B, H).
    """
    batch, time, _ = x.shape
    check_lengths(lengths, batch, time)
    dirs = encoder.num_directions
    cells = [[make_cell(encoder.cell, encoder, layer, d) for d in range(dirs)] for layer in range(encoder.num_layers)]
    is_lstm = encoder.cell == "lstm"
    outputs = x.new_zeros(batch, time, encoder.output_dim)  # (B, T, D)
    finals = x.new_zeros(
        2 if is_lstm else 1, encoder.num_layers * dirs, batch, encoder.hidden_size
    )  # (S, L*dirs, B, H)
    for b in range(batch):
        length = int(lengths[b])
        layer_input = x[b : b + 1, :length].float()  # (1, L, In)
        for layer, layer_cells in enumerate(cells):
            per_direction = []
            for d, cell in enumerate(layer_cells):
                index = layer * dirs + d
                if state is None:
                    h = c = x.new_zeros(1, encoder.hidden_size)  # (1, H)
                elif is_lstm:
                    h, c = state[0][index, b : b + 1], state[1][index, b : b + 1]  # (1, H) each
                else:
                    h = state[index, b : b + 1]  # (1, H)
                steps = range(length) if d == 0 else range(length - 1, -1, -1)
                out = [None] * length
                for t in steps:
                    if is_lstm:
                        h, c = cell(layer_input[:, t], (h, c))  # (1, H) each
                    else:
                        h = cell(layer_input[:, t], h)  # (1, H)
                    out[t] = h
                finals[0, index, b] = h[0]
                if is_lstm:
                    finals[1, index, b] = c[0]
                per_direction.append(torch.cat(out, dim=0))  # (L, H)
            layer_out = torch.cat(per_direction, dim=1).unsqueeze(0)  # (1, L, D)
            if getattr(encoder, "residual", False) and layer > 0:
                layer_out = layer_out + layer_input  # (1, L, D)
            layer_input = layer_out
        outputs[b, :length] = layer_input[0]
    return outputs, ((finals[0], finals[1]) if is_lstm else finals[0])
