"""Forward+backward time of RNNEncoder vs nn.LSTM/nn.GRU with pack_padded_sequence, measured in one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/encoders.py            # B=64 T=128 E=128 H=256, 2-layer bi
    flock /tmp/seqnlp-cpu.lock python benchmarks/encoders.py --layers 1 --batch 256 --time 64 --lengths uniform

Each length mix gives one random right-padded batch: "uniform" draws lengths uniformly from 1..T; "imdb" draws
them from IMDB's train reviews (whitespace words, clipped at T; read from SEQNLP_DATA_DIR's imdb/train.parquet).
The batch goes through the packed fp32 reference and through RNNEncoder (default precision, fp32 and bf16)
loaded with the same weights. Each path runs `--warmup` times, then `--repeats` times, the paths taking turns;
the median wall time is reported, with the speed ratio against packed and the max abs difference of outputs and
final states from packed. Every line names the CPU and the precision the default ("auto") chose.

Each path's useful work is also given in GFLOP/s: the multiply-adds of the cell's two matrix products over the
real (non-pad) tokens, forward and backward (3x forward), per second; beside it, the share of this CPU's own
matrix-product rate in that path's precision, measured (best of 5) in the same run on a (B*T, E) x (E, G*H)
product: how much a faster recurrence could still gain here.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqnlp.encoders import GATES, RNNEncoder
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.results import cpu_model


def _parts(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _packed(module: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, D)
    return out, state


def _fb(step: Callable[[torch.Tensor, torch.Tensor], tuple], x: torch.Tensor, lengths: torch.Tensor) -> tuple:
    """One forward+backward; the (outputs, state) it computed, detached."""
    out, state = step(x, lengths)
    # A loss that reads every output and every final state, so backward covers all of them.
    loss = out.sum() + sum(s.sum() for s in _parts(state))
    loss.backward()
    return out.detach(), tuple(s.detach() for s in _parts(state))


def _timed(steps: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple]], x: torch.Tensor, lengths: torch.Tensor,
           warmup: int, repeats: int) -> dict[str, tuple[float, tuple]]:
    """Median seconds of one forward+backward per path, the paths taking turns; also each one's last result.

    The order rotates every repetition: whichever path ran right after packed was up to 35% slower than the
    same configuration run later in the turn.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    results: dict[str, tuple] = {}
    names = list(steps)
    for i in range(warmup + repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            step = steps[name]
            start = time.perf_counter()
            results[name] = _fb(step, x, lengths)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in steps}


def imdb_lengths(count: int, time_steps: int, seed: int) -> torch.Tensor:
    """(count,) lengths drawn from IMDB's train reviews (whitespace words, clipped at time_steps)."""
    path = Path(os.environ.get("SEQNLP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = path / "imdb" / "train.parquet"
    if not path.is_file():
        raise SeqnlpError(f"--lengths imdb reads {path}, which does not exist; set SEQNLP_DATA_DIR or use "
                          "--lengths uniform")
    import pyarrow.parquet as pq

    words = [len(text.split()) for text in pq.read_table(path, columns=["text"]).column("text").to_pylist()]
    pool = torch.tensor(words).clamp(1, time_steps)  # (N,)
    pick = torch.randint(len(pool), (count,), generator=torch.Generator().manual_seed(seed))  # (B,)
    return pool[pick]


def useful_flops(cell: str, embed: int, hidden: int, layers: int, directions: int, tokens: int) -> int:
    """Floating-point operations of forward+backward over `tokens` real tokens: per layer and direction, the
    input and recurrent products 2*G*H*(In + H) per token forward, and twice that backward."""
    total = 0
    for layer in range(layers):
        width = embed if layer == 0 else directions * hidden
        total += directions * 3 * 2 * GATES[cell] * hidden * (width + hidden)
    return total * tokens


@functools.cache  # one per cell and precision: the length mixes share it
def matmul_rate(rows: int, inner: int, cols: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of one (rows, inner) x (inner, cols) product in `dtype` on this CPU: the best of `repeats`, as the
    roof is what the CPU can do, and this VM's speed drifts."""
    a, b = torch.randn(rows, inner).to(dtype), torch.randn(inner, cols).to(dtype)
    a @ b  # oneDNN builds its kernel on first use
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * rows * inner * cols / min(times)


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
    parser.add_argument("--lengths", default="uniform,imdb",
                        help="comma-separated length mixes: uniform (1..T) and/or imdb (IMDB's reviews, clipped at T)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.batch, args.time, args.embed, args.hidden, args.layers, args.repeats) < 1:
        raise SeqnlpError("sizes and --repeats must be at least 1")
    mixes = args.lengths.split(",")
    if not set(mixes) <= {"uniform", "imdb"}:
        raise SeqnlpError(f"--lengths takes uniform and/or imdb, not {args.lengths!r}")
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
    cells = args.cells.split(",")
    for cell in cells:
        if cell not in kinds:
            raise SeqnlpError(f"unknown cell {cell!r}; use lstm, gru, rnn_tanh or rnn_relu")
    bidirectional = not args.unidirectional
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, args.time, args.embed)  # (B, T, E)
    cpu = cpu_model()
    print(
        f"B={args.batch} T={args.time} E={args.embed} H={args.hidden} layers={args.layers} "
        f"{'bi' if bidirectional else 'uni'}directional; {cpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats} after {args.warmup} warm-up, forward+backward",
        flush=True,
    )
    for mix in mixes:
        if mix == "uniform":
            lengths = torch.randint(1, args.time + 1, (args.batch,), generator=torch.Generator().manual_seed(args.seed))
        else:
            lengths = imdb_lengths(args.batch, args.time, args.seed)
        lengths[0] = args.time  # (B,); the batch spans its padded width
        for cell in cells:
            extra = {"nonlinearity": cell.split("_")[1]} if cell.startswith("rnn") else {}
            module = kinds[cell](
                args.embed, args.hidden, args.layers, batch_first=True, bidirectional=bidirectional, **extra
            )
            auto = RNNEncoder.from_torch(module, precision="auto")
            chosen = "bf16" if auto.uses_bf16(x.device, args.batch) else "fp32"  # measured here on first use
            paths = {"packed": functools.partial(_packed, module), f"auto ({chosen})": auto,
                     "fp32": RNNEncoder.from_torch(module, precision="fp32"),
                     "bf16": RNNEncoder.from_torch(module, precision="bf16")}
            precision = {f"auto ({chosen})": chosen, "fp32": "fp32", "bf16": "bf16"}
            timed = _timed(paths, x, lengths, args.warmup, args.repeats)
            packed_s, reference = timed.pop("packed")
            flops = useful_flops(cell, args.embed, args.hidden, args.layers, 2 if bidirectional else 1,
                                 int(lengths.sum()))
            shape = (args.batch * args.time, args.embed, GATES[cell] * args.hidden)
            roof = {"fp32": matmul_rate(*shape, torch.float32), "bf16": matmul_rate(*shape, torch.bfloat16)}
            print(f"{cell}, {mix} lengths (mean {lengths.float().mean():.1f}), {cpu}: packed fp32 {packed_s:.3f} s, "
                  f"{flops / packed_s / 1e9:.0f} GFLOP/s; matrix products here: fp32 {roof['fp32'] / 1e9:.0f}, "
                  f"bf16 {roof['bf16'] / 1e9:.0f} GFLOP/s", flush=True)
            for name, (seconds, out) in timed.items():
                rate = flops / seconds
                share = rate / roof[precision[name]]
                print(f"  RNNEncoder {name:11s} {seconds:.3f} s  {packed_s / seconds:5.2f}x packed  "
                      f"{rate / 1e9:4.0f} GFLOP/s ({share:4.0%} of products)  "
                      f"max diff {_diff(out, reference):.2e}   [{cell}, {mix}, {cpu}, default precision {chosen}]",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
