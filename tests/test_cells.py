"""Reference step-by-step cells: textbook equations agree with torch's cells and with RNNEncoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seqnlp.cells import GRUCell, LSTMCell, RNNCell, make_cell, reference_forward
from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError

E, H = 4, 5
LENGTHS = torch.tensor([5, 1, 3, 4])


def parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_reference_forward_matches_encoder(cell: str, layers: int, bidirectional: bool) -> None:
    encoder = RNNEncoder(cell, E, H, num_layers=layers, bidirectional=bidirectional, precision="fp32").eval()
    x = torch.randn(4, 6, E)  # (B, T, E)
    out, state = encoder(x, LENGTHS)
    ref_out, ref_state = reference_forward(encoder, x, LENGTHS)
    assert (out - ref_out).abs().max() <= 1e-5
    for a, b in zip(parts(state), parts(ref_state), strict=True):
        assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reference_forward_with_initial_state_and_residual(cell: str) -> None:
    encoder = RNNEncoder(cell, E, H, num_layers=2, precision="fp32", residual=True).eval()
    x = torch.randn(4, 6, E)  # (B, T, E)
    state = torch.randn(2, 4, H)  # (layers, B, H)
    state = (state, torch.randn(2, 4, H)) if cell == "lstm" else state
    out, final = encoder(x, LENGTHS, state)
    ref_out, ref_final = reference_forward(encoder, x, LENGTHS, state)
    assert (out - ref_out).abs().max() <= 1e-5
    for a, b in zip(parts(final), parts(ref_final), strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_cells_match_torch_cells() -> None:
    x, h, c = torch.randn(3, E), torch.randn(3, H), torch.randn(3, H)  # (B, E), (B, H), (B, H)
    lstm = nn.LSTM(E, H)
    ours_h, ours_c = LSTMCell(lstm, 0, 0)(x, (h, c))
    torch_cell = nn.LSTMCell(E, H)
    torch_cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    ref_h, ref_c = torch_cell(x, (h, c))
    assert (ours_h - ref_h).abs().max() <= 1e-6 and (ours_c - ref_c).abs().max() <= 1e-6
    gru = nn.GRU(E, H, bidirectional=True)
    torch_gru = nn.GRUCell(E, H)
    torch_gru.load_state_dict({k[:-11]: v for k, v in gru.state_dict().items() if k.endswith("_reverse")})
    assert (GRUCell(gru, 0, 1)(x, h) - torch_gru(x, h)).abs().max() <= 1e-6
    rnn = nn.RNN(E, H, nonlinearity="relu")
    torch_rnn = nn.RNNCell(E, H, nonlinearity="relu")
    torch_rnn.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items()})
    assert (RNNCell(rnn, 0, 0, "relu")(x, h) - torch_rnn(x, h)).abs().max() <= 1e-6


def test_lstm_cell_known_value() -> None:
    # Zero weights leave only biases: i = σ(0) = 0.5, f = σ(ln 3) = 0.75, g = tanh(0) = 0, o = 0.5.
    lstm = nn.LSTM(1, 1)
    for param in lstm.parameters():
        nn.init.zeros_(param)
    with torch.no_grad():
        lstm.bias_ih_l0[1] = math.log(3.0)
    h, c = LSTMCell(lstm, 0, 0)(torch.ones(1, 1), (torch.zeros(1, 1), torch.full((1, 1), 2.0)))
    assert c.item() == pytest.approx(1.5)  # 0.75 * 2 + 0.5 * 0
    assert h.item() == pytest.approx(0.5 * math.tanh(1.5))


def test_make_cell_errors() -> None:
    with pytest.raises(SeqnlpError, match="unknown cell"):
        make_cell("lstmx", nn.LSTM(E, H), 0, 0)
    with pytest.raises(SeqnlpError, match="layer 1"):
        make_cell("lstm", nn.LSTM(E, H), 1, 0)
