"""Character LM speed: seqnlp's training and sampling against a plain hand-written char-rnn loop, one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/generation_throughput.py [--steps 20] [--rounds 2]

Training: the reference is what a user writes by hand (Embedding → nn.LSTM → Linear, fp32, Adam, clip 1.0,
independent windows); seqnlp is `seqnlp.tasks.generation.CharRNN` trained by `seqnlp.trainer.Trainer` with
the task's defaults (precision "auto": each part in whichever of fp32 and bf16 measures faster on this CPU;
state carried across windows). Both use the same
sizes, batch and window. Sampling: characters per second of `CharLM.generate` against a hand-written
step-by-step nn.LSTM sampling loop. Rounds alternate the two sides so that load from other processes on a
shared machine hits both; the median round is reported, with the ratio seqnlp / reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from seqnlp.summary import describe_precision
from seqnlp.tasks.generation import CharLM, CharRNN, ModelConfig, Windows
from seqnlp.tokenization import Tokenizer
from seqnlp.trainer import TrainConfig, Trainer

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n&$3"  # 65 characters, like Shakespeare


class Reference(nn.Module):
    """The plain char-rnn: Embedding → nn.LSTM → Linear."""

    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(self.embedding(x), state)  # (B, T, H)
        return self.head(out), state  # (B, T, V)


def reference_train(stream: torch.Tensor, args: argparse.Namespace, vocab: int) -> float:
    """Characters/s of the hand-written loop over `args.steps` random windows."""
    torch.manual_seed(0)
    model = Reference(vocab, args.embedding_size, args.hidden_size, args.layers)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.steps):
        pos = torch.randint(0, stream.numel() - args.seq_length - 1, (args.batch_size,), generator=g)  # (B,)
        idx = pos[:, None] + torch.arange(args.seq_length + 1)  # (B, T+1)
        chunk = stream[idx]  # (B, T+1)
        logits, _ = model(chunk[:, :-1])  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return args.steps * args.batch_size * args.seq_length / (time.perf_counter() - start)


def seqnlp_train(stream: torch.Tensor, args: argparse.Namespace, vocab: int, folder: Path) -> float:
    """Characters/s of seqnlp's model and Trainer (time inside training steps, as the trainer reports it)."""
    torch.manual_seed(0)
    config = ModelConfig(layers=args.layers, hidden_size=args.hidden_size, embedding_size=args.embedding_size)
    model = CharRNN(config, vocab, args.batch_size)
    windows = Windows(stream, args.batch_size, args.seq_length)
    steps = [windows[j % len(windows)] for j in range(args.steps)]
    train = TrainConfig(epochs=1, lr=2e-3, weight_decay=0.0, optimizer="adam", progress="off", curves=False,
                        overwrite=True, log_every=10**6)
    trainer = Trainer(model, train, folder, train_batches=lambda epoch: steps,
                      evaluate=lambda m: {"loss": 0.0}, metric="loss", higher_is_better=False)
    return trainer.fit().tokens_per_second


def reference_sample(model: Reference, length: int, vocab: int) -> float:
    """Characters/s of a hand-written sampling loop (one nn.LSTM step per character)."""
    g = torch.Generator().manual_seed(0)
    token = torch.zeros(1, 1, dtype=torch.long)  # (1, 1)
    state = None
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(token, state)  # (1, 1, V)
            token = torch.multinomial(logits[0, -1].softmax(-1), 1, generator=g)[None]  # (1, 1)
    return length / (time.perf_counter() - start)


def seqnlp_sample(lm: CharLM, length: int) -> float:
    start = time.perf_counter()
    lm.generate("", length, seed=0)
    return length / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="training steps per side per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--sample-length", type=int, default=1000)
    args = p.parse_args()
    tokenizer = Tokenizer.train([ALPHABET], level="char")
    vocab = tokenizer.vocab_size
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(4, vocab, (args.batch_size * args.seq_length * (args.steps + 2),), generator=g)  # (N,)
    print(f"{args.layers}x{args.hidden_size} LSTM, embedding {args.embedding_size}, vocabulary {vocab}, "
          f"batch {args.batch_size} x {args.seq_length}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    config = ModelConfig(layers=args.layers, hidden_size=args.hidden_size, embedding_size=args.embedding_size)
    where = describe_precision(CharRNN(config, vocab, args.batch_size), "cpu", "auto", args.batch_size)
    print(f"seqnlp precision here: {where}", flush=True)
    ref_rates, ours_rates, ref_samp, ours_samp = [], [], [], []
    reference = Reference(vocab, args.embedding_size, args.hidden_size, args.layers).eval()
    lm = CharLM(CharRNN(ModelConfig(layers=args.layers, hidden_size=args.hidden_size,
                                    embedding_size=args.embedding_size), vocab, 1), tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up, not counted: first calls pay for oneDNN kernel creation and allocator growth on both sides.
        warm = argparse.Namespace(**{**vars(args), "steps": 2})
        reference_train(stream, warm, vocab)
        seqnlp_train(stream, warm, vocab, Path(tmp) / "warm")
        reference_sample(reference, 20, vocab)
        seqnlp_sample(lm, 20)
        for r in range(args.rounds):
            ref_rates.append(reference_train(stream, args, vocab))
            ours_rates.append(seqnlp_train(stream, args, vocab, Path(tmp) / f"run{r}"))
            ref_samp.append(reference_sample(reference, args.sample_length, vocab))
            ours_samp.append(seqnlp_sample(lm, args.sample_length))
            print(f"round {r + 1}: training reference {ref_rates[-1]:,.0f} chars/s, seqnlp {ours_rates[-1]:,.0f} "
                  f"chars/s; sampling reference {ref_samp[-1]:,.0f} chars/s, seqnlp {ours_samp[-1]:,.0f} chars/s",
                  flush=True)
    rt, ot = statistics.median(ref_rates), statistics.median(ours_rates)
    rs, os_ = statistics.median(ref_samp), statistics.median(ours_samp)
    print(f"training:  reference (nn.LSTM fp32, independent windows) {rt:,.0f} chars/s | "
          f"seqnlp {ot:,.0f} chars/s | ratio {ot / rt:.2f}x  [{where}]")
    print(f"sampling:  reference (nn.LSTM step loop) {rs:,.0f} chars/s | seqnlp CharLM.generate {os_:,.0f} chars/s | "
          f"ratio {os_ / rs:.2f}x  [{where}; sampling steps run the recurrence in fp32]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
