"""Forward+backward time of RNNEncoder vs nn.LSTM/nn.GRU with pack_padded_sequence, measured in one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/encoders.py            # B=64 T=128 E=128 H=256, 2-layer bi
    flock /tmp/seqnlp-cpu.lock python benchmarks/encoders.py --layers 1 --batch 256 --time 64

The same random right-padded batch (lengths uniform in [T/8, T], one row of length T) goes through the
packed fp32 reference and through RNNEncoder (default precision, fp32 and bf16) loaded with the same weights.
Each path runs `--warmup` times, then `--repeats` times; the median wall time is reported, with the
speed ratio against packed and the max abs difference of outputs and final states from packed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError, cli_main


def _parts(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _packed(module: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, D)
    return out, state


def _timed(
    step: Callable[[torch.Tensor, torch.Tensor], tuple],
    x: torch.Tensor,
    lengths: torch.Tensor,
    warmup: int,
    repeats: int,
) -> tuple[float, tuple]:
    """Median seconds of one forward+backward; also the last (outputs, state), detached."""
    times = []
    result: tuple = ()
    for i in range(warmup + repeats):
        start = time.perf_counter()
        out, state = step(x, lengths)
        # A loss that reads every output and every final state, so backward covers all of them.
        loss = out.sum() + sum(s.sum() for s in _parts(state))
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        result = (out.detach(), tuple(s.detach() for s in _parts(state)))
    return statistics.median(times), result


def _diff(a: tuple, b: tuple) -> float:
    pairs = [(a[0], b[0]), *zip(a[1], b[1])]
    return max((x.float() - y.float()).abs().max().item() for x, y in pairs)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated: lstm, gru, rnn_tanh, rnn_relu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--unidirectional", action="store_true", help="one direction instead of two")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.batch, args.time, args.embed, args.hidden, args.layers, args.repeats) < 1:
        raise SeqnlpError("sizes and --repeats must be at least 1")
    bidirectional = not args.unidirectional
    torch.manual_seed(args.seed)
    lengths = torch.randint(max(1, args.time // 8), args.time + 1, (args.batch,))  # (B,)
    lengths[0] = args.time
    x = torch.randn(args.batch, args.time, args.embed)  # (B, T, E)
    print(
        f"B={args.batch} T={args.time} E={args.embed} H={args.hidden} layers={args.layers} "
        f"{'bi' if bidirectional else 'uni'}directional, mean length {lengths.float().mean():.1f}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} "
        f"after {args.warmup} warm-up, forward+backward"
    )
    for cell in args.cells.split(","):
        kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
        if cell not in kinds:
            raise SeqnlpError(f"unknown cell {cell!r}; use lstm, gru, rnn_tanh or rnn_relu")
        extra = {"nonlinearity": cell.split("_")[1]} if cell.startswith("rnn") else {}
        module = kinds[cell](
            args.embed, args.hidden, args.layers, batch_first=True, bidirectional=bidirectional, **extra
        )
        auto = RNNEncoder.from_torch(module, precision="auto")
        fp32 = RNNEncoder.from_torch(module, precision="fp32")
        bf16 = RNNEncoder.from_torch(module, precision="bf16")
        packed_s, reference = _timed(functools.partial(_packed, module), x, lengths, args.warmup, args.repeats)
        auto_s, auto_out = _timed(auto, x, lengths, args.warmup, args.repeats)
        fp32_s, fp32_out = _timed(fp32, x, lengths, args.warmup, args.repeats)
        bf16_s, bf16_out = _timed(bf16, x, lengths, args.warmup, args.repeats)
        auto_name = f"auto ({'bf16' if auto.uses_bf16(x.device) else 'fp32'})"
        print(f"{cell}: packed fp32 {packed_s:.3f} s")
        print(
            f"  RNNEncoder {auto_name:11s} {auto_s:.3f} s  {packed_s / auto_s:5.2f}x  "
            f"max diff {_diff(auto_out, reference):.2e}"
        )
        print(
            f"  RNNEncoder {'fp32':11s} {fp32_s:.3f} s  {packed_s / fp32_s:5.2f}x  "
            f"max diff {_diff(fp32_out, reference):.2e}"
        )
        print(
            f"  RNNEncoder {'bf16':11s} {bf16_s:.3f} s  {packed_s / bf16_s:5.2f}x  "
            f"max diff {_diff(bf16_out, reference):.2e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
