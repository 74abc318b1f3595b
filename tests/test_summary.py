"""summary() and count_parameters() on plain and seqnlp modules."""

from __future__ import annotations

import torch
from torch import nn

from seqnlp.encoders import Pooler, RNNEncoder
from seqnlp.summary import count_parameters, summary


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.encoder = RNNEncoder("lstm", 4, 6, num_layers=2, bidirectional=True)
        self.pool = Pooler("attention", 12)
        self.head = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs, state = self.encoder(self.embed(ids), lengths)  # (B, T, D)
        return self.head(self.pool(outputs, lengths, state))  # (B, C)


def test_count_parameters_known_values() -> None:
    model = Tiny()
    model.embed.weight.requires_grad_(False)
    # LSTM layer 0: 2 dirs * (4*6*4 + 4*6*6 + 2*24) = 576; layer 1: 2 * (24*12 + 24*6 + 48) = 960.
    expected = 40 + 576 + 960 + (12 * 12 + 12) + 12 + (12 * 3 + 3)
    assert count_parameters(model) == (expected, expected - 40)
    tied = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight
    assert count_parameters(tied) == (9, 9)  # shared weights count once


def test_summary_lists_layers_shapes_and_totals() -> None:
    model = Tiny()
    model.embed.weight.requires_grad_(False)
    text = summary(model, (torch.randint(0, 10, (2, 5)), torch.tensor([5, 2])))
    lines = text.splitlines()
    row = next(line for line in lines if line.strip().startswith("encoder"))
    assert "RNNEncoder" in row and "(2, 5, 12)" in row and "(4, 2, 6)" in row and row.endswith("1,536")
    assert any(line.strip().startswith("head") and "(2, 3)" in line and line.endswith("39") for line in lines)
    assert any(line.strip().startswith("project") and "(2, 5, 12)" in line for line in lines)
    total, trainable = count_parameters(model)
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {trainable:,}" in text and "Non-trainable params: 40" in text
    assert model.training  # the hooked forward pass leaves the mode as it was


def test_summary_without_batch_and_on_plain_modules() -> None:
    text = summary(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert "Linear" in text and "ReLU" in text and "Total params: 9" in text
    keyword = summary(nn.Linear(2, 3), {"input": torch.zeros(4, 2)})
    assert "(4, 3)" in keyword
