"""Forward+backward time of a language model's output layer at large vocabularies, measured in one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/lm_output.py                   # N=64x64 positions, E=400
    flock /tmp/seqnlp-cpu.lock python benchmarks/lm_output.py --vocab 16000 32000 --positions 4096

For each vocabulary size V: a full softmax (Linear(E, V) + cross-entropy, as the char model has) and
torch.nn.AdaptiveLogSoftmaxWithLoss as the generation task builds it (Grave et al. 2017; a head of the most frequent tokens plus smaller tail
clusters), each in fp32 and under bf16 autocast. Targets follow a Zipf law over the ids (ids sorted by
frequency, as trained vocabularies are), which is what makes the adaptive head pay. The median wall time of
`--repeats` runs is reported in ms per step and as positions (tokens) per second, with the ratio to the fp32
full softmax of the same V.

With `--models HxExL ...` it then times whole training steps (forward, backward, clipping, fused AdamW) of
`seqnlp.tasks.generation.CharRNN` at those sizes (hidden x embedding x layers) over a batch of B x T tokens
of V = the last `--vocab`, with each output layer, under `--precision` (auto: bf16 where the CPU has fast bf16):
the language model's training speed in tokens per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from seqnlp.errors import cli_main
from seqnlp.data import Batch
from seqnlp.tasks.generation import CharRNN, ModelConfig, adaptive_softmax
from seqnlp.device import autocast, use_bf16


def _zipf_targets(n: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)  # (V,)
    return torch.multinomial(weights, n, replacement=True, generator=generator)  # (N,)


def _timed(step, warmup: int, repeats: int) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[16000, 32000])
    p.add_argument("--positions", type=int, default=4096, help="N = B x T positions per step")
    p.add_argument("--width", type=int, default=400, help="E, the width of the features the layer reads")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="*", default=[], metavar="HxExL", help="also time training steps of these LMs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=70)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--outputs", nargs="+", default=["full", "adaptive"], choices=("full", "adaptive"),
                   help="the output layers the --models are timed with")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.positions}, E={args.width}")
    for vocab in args.vocab:
        x = torch.randn(args.positions, args.width, generator=g, requires_grad=True)  # (N, E)
        y = _zipf_targets(args.positions, vocab, g)  # (N,)
        full = nn.Linear(args.width, vocab)
        adaptive = adaptive_softmax(args.width, vocab)

        def run_full(bf16: bool, full: nn.Module = full, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(full(x).float(), y)
            loss.backward()

        def run_adaptive(bf16: bool, adaptive: nn.Module = adaptive, x: torch.Tensor = x,
                         y: torch.Tensor = y) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = adaptive(x, y).loss
            loss.backward()

        base = None
        for name, fn in (("full", run_full), ("adaptive", run_adaptive)):
            for bf16 in (False, True):
                seconds = _timed(lambda fn=fn, bf16=bf16: fn(bf16), args.warmup, args.repeats)
                base = base or seconds
                print(f"V={vocab:>6} {name:>8} {'bf16' if bf16 else 'fp32'}: {seconds * 1e3:7.1f} ms/step, "
                      f"{args.positions / seconds:>9,.0f} positions/s, {base / seconds:4.1f}x full fp32", flush=True)
    vocab = args.vocab[-1]
    bf16 = use_bf16(args.precision, torch.device("cpu"))
    for sizes in args.models:
        hidden, embedding, layers = (int(v) for v in sizes.split("x"))
        ids = _zipf_targets(args.batch * (args.time + 1), vocab, g).view(args.batch, args.time + 1)  # (B, T+1)
        batch = Batch(ids=ids[:, :-1], lengths=torch.full((args.batch,), args.time), targets=ids[:, 1:])
        for kind in args.outputs:
            config = ModelConfig(layers=layers, hidden_size=hidden, embedding_size=embedding, dropout=0.1,
                                 embedding_dropout=0.05, weight_dropout=0.1, tie_weights=kind == "full")
            model = CharRNN(config, vocab, args.batch, precision=args.precision, adaptive=kind == "adaptive").train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

            def step(model: CharRNN = model, optimizer: torch.optim.Optimizer = optimizer,
                     batch: Batch = batch) -> None:
                with autocast(torch.device("cpu"), bf16):
                    loss = model(batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()

            seconds = _timed(step, args.warmup, args.repeats)
            params = sum(p.numel() for p in model.parameters())
            print(f"LM {sizes} V={vocab} {kind:>8}{' tied' if kind == 'full' else ''} "
                  f"({'bf16' if bf16 else 'fp32'}, {params / 1e6:.1f}M parameters): {seconds * 1e3:7.1f} ms/step, "
                  f"{args.batch * args.time / seconds:>8,.0f} tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
