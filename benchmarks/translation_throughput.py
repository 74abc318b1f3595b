"""Translation training speed: seqnlp's Seq2Seq (the task's defaults) trained by the Trainer, tokens/s.

    flock /tmp/seqnlp-cpu.lock python benchmarks/translation_throughput.py [--steps 30] [--rounds 3]

Synthetic pairs: random BPE ids with the source and target lengths of Multi30k's train split (whitespace words,
from SEQNLP_DATA_DIR when it holds multi30k, else uniform in 8..24), batched by the task's own bucketing.
Reports the trainer's source tokens/s per round and the median, with the CPU and the precision of each part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from seqnlp.config import resolve
from seqnlp.summary import describe_precision
from seqnlp.tasks import translation as tr
from seqnlp.trainer import TrainConfig, Trainer


def lengths(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(os.environ.get("SEQNLP_DATA_DIR", "")) / "multi30k" / "train.parquet"
    if folder.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(folder, columns=["de", "en"])
        de = np.array([len(s.split()) for s in table.column("de").to_pylist()])
        en = np.array([len(s.split()) for s in table.column("en").to_pylist()])
        pick = rng.integers(0, len(de), n)
        return np.maximum(de[pick], 1), np.maximum(en[pick], 1)
    return rng.integers(8, 25, n), rng.integers(8, 25, n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--vocab", type=int, default=8000)
    args = p.parse_args()
    model_cfg, data_cfg = tr.ModelConfig(), tr.DataConfig()
    rng = np.random.default_rng(0)
    n = data_cfg.batch_size * (args.steps + 4)
    src_len, tgt_len = lengths(n, rng)
    source = [rng.integers(4, args.vocab, k).tolist() for k in src_len]
    target = [[tr.BOS] + rng.integers(4, args.vocab, k).tolist() + [tr.EOS] for k in tgt_len]
    corpus = tr.Corpus([""] * n, [""] * n, source, target)
    batches = tr.training_batches(corpus, data_cfg, seed=0)
    train = resolve(TrainConfig, None, {**tr.TRAIN_DEFAULTS, "time_budget": 0.0, "epochs": 1, "progress": "off",
                                        "curves": False, "overwrite": True, "log_every": 10**6})
    print(f"Seq2Seq defaults ({model_cfg.cell}, {model_cfg.layers} layers, hidden {model_cfg.hidden_size}, "
          f"embedding {model_cfg.embedding_size}), vocabulary {args.vocab}, batch {data_cfg.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    model = tr.Seq2Seq(model_cfg, args.vocab, args.vocab)
    where = describe_precision(model, "cpu", train.precision, data_cfg.batch_size)
    print(f"seqnlp precision here: {where}", flush=True)
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0 warms up (kernel creation, allocator growth)
            torch.manual_seed(0)
            model = tr.Seq2Seq(model_cfg, args.vocab, args.vocab)
            epoch = batches(r)
            steps = epoch[:2] if r == 0 else epoch[:args.steps]
            trainer = Trainer(model, train, Path(tmp) / f"run{r}", train_batches=lambda e, s=steps: s,
                              evaluate=lambda m: {"bleu": 0.0}, metric="bleu", higher_is_better=True)
            rate = trainer.fit().tokens_per_second
            if r:
                rates.append(rate)
                print(f"round {r}: {rate:,.0f} source tokens/s", flush=True)
    print(f"training: median {statistics.median(rates):,.0f} source tokens/s  [{where}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
