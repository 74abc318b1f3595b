"""benchmarks/encoders.py: its FLOP count for the roofline column, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "encoders.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_encoders", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_useful_flops_counts_both_products_forward_and_backward(bench) -> None:
    # One LSTM layer, E=3, H=2: per token forward 2 * 4H * (E + H) = 2 * 8 * 5 = 80, times 3 with backward.
    assert bench.useful_flops("lstm", 3, 2, 1, 1, tokens=1) == 240
    # Two bidirectional GRU layers: layer 1 reads 2H; 10 tokens.
    per_token = 2 * 3 * 2 * 3 * 2 * (3 + 2) + 2 * 3 * 2 * 3 * 2 * (4 + 2)
    assert bench.useful_flops("gru", 3, 2, 2, 2, tokens=10) == 10 * per_token


def test_a_tiny_run_prints_rates_and_shares(bench, capsys) -> None:
    assert bench.main(["--cells", "lstm", "--lengths", "uniform", "--batch", "4", "--time", "6", "--embed", "8",
                       "--hidden", "8", "--layers", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "matrix products here: fp32" in out
    assert out.count("GFLOP/s (") == 3  # auto, fp32, bf16
