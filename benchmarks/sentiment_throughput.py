"""Training tokens/s: seqnlp's sentiment path vs the standard tutorial recipe, on SST-2, in one run.

    flock /tmp/seqnlp-cpu.lock python benchmarks/sentiment_throughput.py [--seconds 60 --rounds 10]

seqnlp: its real training path, `seqnlp.tasks.sentiment` + `seqnlp.trainer.Trainer` with the benchmark's
preset (length-bucketed batches, RNNEncoder without packing, each part in the precision "auto" measures
fastest on this CPU), for one network: a preset that trains an ensemble of K runs K of these per step.
Reference: the PyTorch tutorial recipe (bentrevett/pytorch-sentiment-analysis, "2 - Recurrent Neural
Networks"): random batches of 64, `pack_padded_sequence` into `nn.LSTM` (bidirectional), last hidden states,
fp32, Adam. Both read the same token ids from the same word vocabulary and use the same embedding and
hidden sizes, so a token is the same unit on both sides. Each side times only training steps (batch
building, forward, backward, optimizer step), after warm-up, and counts real (non-pad) tokens.

The two sides take turns, --rounds times each (--seconds in all per side): this machine is a shared VM
whose speed drifts by up to 1.5x over a minute, and alternating spreads the drift over both sides instead
of handing it to whichever ran second. Each seqnlp round trains a fresh epoch order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqnlp.config import resolve
from seqnlp.data import pad
from seqnlp.device import keep_freed_memory
from seqnlp.summary import describe_precision
from seqnlp.tasks import sentiment
from seqnlp.tasks.runner import SourceConfig, benchmark_of
from seqnlp.tokenization import Tokenizer
from seqnlp.trainer import TrainConfig, Trainer


class TutorialLSTM(nn.Module):
    """The tutorial's classifier: embedding → packed bi-LSTM → concatenated last hidden states → linear."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        self.lstm = nn.LSTM(embedding_size, hidden_size, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden_size, classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(ids))  # (B, T, E)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden (2, B, H)
        hidden = self.dropout(torch.cat([hidden[-2], hidden[-1]], dim=1))  # (B, 2H)
        return self.fc(hidden)  # (B, C)


class Reference:
    """The tutorial model and its Adam, trained on random batches of `batch_size` in timed slices."""

    def __init__(self, split: sentiment.Split, config: sentiment.ModelConfig, vocab_size: int, classes: int,
                 batch_size: int, warmup: int = 5) -> None:
        torch.manual_seed(0)
        self.split, self.batch_size = split, batch_size
        self.model = TutorialLSTM(vocab_size, config.embedding_size, config.hidden_size, classes, config.dropout)
        self.optimizer = torch.optim.Adam(self.model.parameters())
        self.order = np.random.default_rng(0).permutation(len(split.ids))  # (N,)
        self.step = 0
        for _ in range(warmup):
            self._train_step()

    def _train_step(self) -> int:
        start = (self.step * self.batch_size) % len(self.order)
        rows = self.order[start:start + self.batch_size].tolist()
        ids, lengths = pad([self.split.ids[r] for r in rows], 0)  # (B, T), (B,)
        labels = torch.from_numpy(self.split.labels[rows])  # (B,)
        loss = F.cross_entropy(self.model(ids, lengths), labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return int(lengths.sum())

    def tokens_per_second(self, seconds: float) -> float:
        """Train for `seconds` of timed steps; real tokens per second over them."""
        tokens, spent = 0, 0.0
        while spent < seconds:
            t0 = time.perf_counter()
            tokens += self._train_step()
            spent += time.perf_counter() - t0
        return tokens / spent


class Seqnlp:
    """seqnlp's classifier trained by seqnlp's Trainer on bucketed batches, one Trainer run per timed slice."""

    def __init__(self, split: sentiment.Split, config: sentiment.ModelConfig, train: TrainConfig,
                 tokenizer: Tokenizer, classes: int, warmup: int = 5) -> None:
        from seqnlp.data import BucketBatchSampler

        torch.manual_seed(0)
        self.split, self.train, self.pad_id = split, train, tokenizer.pad_id
        self.model = sentiment.SentimentClassifier(config, tokenizer.vocab_size, classes, tokenizer.pad_id)
        self.sampler = BucketBatchSampler(split.lengths, config.batch_size, shuffle=True, seed=0)
        self.round = 0
        self._warm_up()
        self._fit({"max_steps": warmup})

    def _warm_up(self) -> None:
        """Forward and backward once per distinct batch shape: oneDNN builds its kernels per shape, once.

        A real run pays this in its first epoch only; the timed slices here are a few epochs' worth, so
        without it they would mostly time kernel set-up. (The reference's packed kernels have none.)
        """
        from seqnlp.device import autocast, use_bf16

        batches = sentiment.Batches(self.split, self.sampler.batches(0), self.pad_id)
        seen = {}
        for i, rows in enumerate(batches.batches):
            seen.setdefault((len(rows), int(self.split.lengths[rows].max())), i)
        self.model.train()
        for i in seen.values():
            with autocast(torch.device("cpu"), use_bf16(self.train.precision, torch.device("cpu"))):
                loss = self.model(batches[i]).loss
            loss.backward()
        self.model.zero_grad(set_to_none=True)

    def _fit(self, limit: dict[str, float]) -> float:
        self.round += 1
        epoch = self.round  # each slice trains its own epoch order, not the first batches of epoch 0 again
        cfg = resolve(TrainConfig, {**vars(self.train), "epochs": 100, "progress": "off", "curves": False,
                                    "eval_every": 0, **limit})
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(self.model, cfg, Path(tmp) / "run",
                              train_batches=lambda e: sentiment.Batches(self.split, self.sampler.batches(epoch + e),
                                                                        self.pad_id),
                              evaluate=lambda m: {"accuracy": 0.0}, metric="accuracy", higher_is_better=True)
            return trainer.fit().tokens_per_second

    def tokens_per_second(self, seconds: float) -> float:
        """Train for `seconds` (the Trainer's time budget); the trainer's own tokens/s."""
        return self._fit({"time_budget": seconds / 60.0})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--benchmark", default="sst2", help="benchmark whose train split and preset are used")
    # 10 turns of 6 s per side: single turns on this VM ranged from 6.4x to 10.5x, and 5 turns gave 7.4x-9.1x.
    p.add_argument("--seconds", type=float, default=60.0, help="timed training per side, in all")
    p.add_argument("--rounds", type=int, default=10, help="turns each side takes (the sides alternate)")
    p.add_argument("--reference-batch-size", type=int, default=64)
    for flag in ("embedding-size", "hidden-size", "batch-size"):
        p.add_argument(f"--{flag}", type=int, default=None, help="override the preset's (both sides' sizes)")
    p.add_argument("--frozen-table", action="store_true",
                   help="seqnlp keeps its embedding table fixed, as the SST-2 preset does (the reference still "
                        "trains its own, so the two sides no longer do the same work)")
    args = p.parse_args(argv)
    os.environ.setdefault("SEQNLP_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

    preset = sentiment.PRESETS.get(args.benchmark, {})
    sizes = {k: v for k, v in (("embedding_size", args.embedding_size), ("hidden_size", args.hidden_size),
                               ("batch_size", args.batch_size)) if v is not None}
    # By default the same work on both sides: a trained embedding table. The SST-2 preset freezes its word2vec
    # table, which spares it the table's gradient and optimizer step: a recipe difference, not a faster kernel,
    # measured only with --frozen-table.
    config = resolve(sentiment.ModelConfig, None, {**preset.get("model", {}), **sizes,
                                                   "pretrain": "", "freeze_embedding": args.frozen_table})
    train = resolve(TrainConfig, None, {**sentiment.TRAIN_DEFAULTS, **preset.get("train", {})})
    bench = benchmark_of("sentiment", SourceConfig(benchmark=args.benchmark), "imdb")
    ds = bench.load_split("train")
    cols = {role: list(ds[column]) for role, column in bench.columns.items()}
    feature = ds.features[bench.columns["label"]]
    names = sentiment.label_names(cols["label"], feature, bench.name)
    tokenizer = Tokenizer.train((sentiment.clean(t) for t in cols["text"]), level=config.tokenizer,
                                vocab_size=config.vocab_size or None, min_frequency=config.min_frequency,
                                lowercase=config.lowercase)
    split = sentiment.make_split(cols, feature, f"{bench.name} train", names, tokenizer, config)
    print(f"{bench.name} train: {len(split.ids)} texts, {int(split.lengths.sum())} tokens "
          f"({config.tokenizer} vocabulary {tokenizer.vocab_size}); embedding {config.embedding_size}, "
          f"hidden {config.hidden_size}, bi-LSTM; torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    ours_side = Seqnlp(split, config, train, tokenizer, len(names))
    ref_side = Reference(split, config, tokenizer.vocab_size, len(names), args.reference_batch_size)
    where = describe_precision(ours_side.model, "cpu", train.precision, config.batch_size)  # "<CPU>: autocast bf16, ..."
    print(f"seqnlp precision here: {where}", flush=True)
    # Process-wide from seqnlp's first Trainer.fit on, so the reference's steps reuse freed memory too.
    print(f"freed memory kept for reuse (seqnlp.device.keep_freed_memory): {keep_freed_memory()}", flush=True)
    slice_seconds = args.seconds / args.rounds
    ours_rates, ref_rates = [], []
    for r in range(args.rounds):
        ours_rates.append(ours_side.tokens_per_second(slice_seconds))
        ref_rates.append(ref_side.tokens_per_second(slice_seconds))
        print(f"  round {r + 1}/{args.rounds}: seqnlp {ours_rates[-1]:9,.0f}  reference {ref_rates[-1]:8,.0f}  "
              f"ratio {ours_rates[-1] / ref_rates[-1]:.2f}x  [{where}]", flush=True)
    ours, ref = sum(ours_rates) / args.rounds, sum(ref_rates) / args.rounds
    print(f"seqnlp    (bucketed, batch {config.batch_size}, unpacked exact bi-LSTM, precision {train.precision}"
          f"{', frozen table' if config.freeze_embedding else ''}): "
          f"{ours:10,.0f} tokens/s", flush=True)
    print(f"reference (random, batch {args.reference_batch_size}, pack_padded_sequence nn.LSTM, fp32):       "
          f"{ref:10,.0f} tokens/s", flush=True)
    rounds = sorted(o / r for o, r in zip(ours_rates, ref_rates))
    print(f"ratio: {ours / ref:.2f}x (mean rates; median round {statistics.median(rounds):.2f}x, rounds "
          f"{rounds[0]:.2f}x-{rounds[-1]:.2f}x)  [{where}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
