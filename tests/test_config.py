import argparse
from dataclasses import dataclass

import pytest

from seqnlp import config
from seqnlp.errors import SeqnlpError


@dataclass
class Toy:
    cell: str = config.opt("lstm", "recurrent cell", choices=["lstm", "gru"])
    layers: int = config.opt(2, "stacked layers", min=1)
    dropout: float = config.opt(0.1, "dropout", min=0, max=0.9)
    temperature: float = config.opt(1.0, "sampling temperature", gt=0)
    bidirectional: bool = config.opt(True, "run both directions")


def parse(argv):
    parser = argparse.ArgumentParser(prog="toy")
    config.add_flags(parser, Toy)
    return parser.parse_args(argv)


def test_defaults_then_file_values_then_flags():
    assert config.resolve(Toy, parse([])) == Toy()
    from_file = config.resolve(Toy, parse([]), {"layers": 3, "dropout": 0.5})
    assert (from_file.layers, from_file.dropout) == (3, 0.5)
    flags_win = config.resolve(Toy, parse(["--layers", "1", "--no-bidirectional"]), {"layers": 3})
    assert (flags_win.layers, flags_win.bidirectional) == (1, False)
    assert config.resolve(Toy, parse([]), {"dropout": 0}).dropout == 0.0  # ints accepted for floats


@pytest.mark.parametrize("argv,message", [
    (["--layers", "0"], "--layers must be at least 1"),
    (["--dropout", "0.95"], "--dropout must be at most 0.9"),
    (["--temperature", "0"], "--temperature must be greater than 0"),
    (["--dropout", "nan"], "--dropout must be a finite number"),
    (["--temperature", "inf"], "--temperature must be a finite number"),
])
def test_out_of_range_values_name_the_flag(argv, message):
    with pytest.raises(SeqnlpError, match=message):
        config.resolve(Toy, parse(argv))


def test_bad_file_values_are_refused():
    with pytest.raises(SeqnlpError, match="unknown setting 'layerz'"):
        config.resolve(Toy, None, {"layerz": 2})
    with pytest.raises(SeqnlpError, match="--layers must be int"):
        config.resolve(Toy, None, {"layers": "two"})
    with pytest.raises(SeqnlpError, match="--cell must be one of lstm, gru"):
        config.resolve(Toy, None, {"cell": "transformer"})


def test_argparse_rejects_unknown_choices_and_flags(capsys):
    with pytest.raises(SystemExit):
        parse(["--cell", "transformer"])
    with pytest.raises(SystemExit):
        parse(["--nope"])
    assert "usage: toy" in capsys.readouterr().err


def test_booleans_are_not_sizes_and_file_values_are_blamed_on_the_file():
    with pytest.raises(SeqnlpError, match="--layers must be int, not False"):
        config.resolve(Toy, None, {"layers": False})
    with pytest.raises(SeqnlpError, match=r"run/config.json model: layers must be at least 1, not -4"):
        config.resolve(Toy, None, {"layers": -4}, source="run/config.json model")
    with pytest.raises(SeqnlpError, match=r"^--layers must be at least 1"):  # typed on the command line
        config.resolve(Toy, parse(["--layers", "0"]), {"layers": 2}, source="run/config.json model")
