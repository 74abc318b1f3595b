"""A tiny standalone training program for the trainer's tests: kill-and-resume and DDP in subprocesses.

    python tests/trainer_prog.py RUN_DIR [--resume] [--kill forward:5] ...
    python -m torch.distributed.run --nproc_per_node 2 tests/trainer_prog.py RUN_DIR ...

A one-layer LSTM classifier on fixed random data (seconds on a CPU). `--kill KIND:N` makes the
process SIGKILL itself at the N-th event of KIND, so tests can kill it at chosen points:
forward (inside a training forward pass), eval (inside evaluation), save (right after a weights file
is written, before the checkpoint is committed), commit (right after trainer_state.json is committed,
before last.safetensors is linked and old files are removed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqnlp import checkpoint as ckpt
from seqnlp.config import resolve
from seqnlp.data import Batch
from seqnlp.trainer import Output, Trainer, TrainConfig, seed_everything

VOCAB = 30
NUM_TRAIN = 96
NUM_VALID = 32


class TinyClassifier(nn.Module):
    """Embedding → LSTM → masked mean → dropout → linear; label 1 when most tokens are < VOCAB / 2."""

    def __init__(self, dropout: float = 0.2, nan_at: int = 0, on_forward=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 12, padding_idx=0)
        self.rnn = nn.LSTM(12, 16, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(16, 2)
        self.nan_at = nan_at  # training forward number at which the loss turns NaN (0 = never)
        self.on_forward = on_forward
        self.calls = 0

    def forward(self, batch: Batch) -> Output:
        if self.training:
            self.calls += 1
            if self.on_forward is not None:
                self.on_forward(self.calls)
        x = self.embed(batch.ids)  # (B, T, E)
        out, _ = self.rnn(x)  # (B, T, H); right padding does not reach real positions of a forward LSTM
        mask = batch.mask.unsqueeze(-1).to(out.dtype)  # (B, T, 1)
        pooled = (out * mask).sum(1) / batch.lengths.unsqueeze(-1).to(out.dtype)  # (B, H)
        logits = self.head(self.drop(pooled))  # (B, C)
        loss = nn.functional.cross_entropy(logits.float(), batch.labels) if batch.labels is not None else None
        if loss is not None and self.training and self.nan_at and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return Output(logits, loss)


def make_data(n: int, seed: int) -> list[tuple[list[int], int]]:
    """`n` random sequences (lengths 3..12) with labels, the same for a given seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ids = rng.integers(1, VOCAB, size=int(rng.integers(3, 13))).tolist()
        rows.append((ids, int(sum(i < VOCAB // 2 for i in ids) * 2 > len(ids))))
    return rows


def to_batch(rows: list[tuple[list[int], int]]) -> Batch:
    """Right-pad `rows` into a Batch."""
    longest = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([ids + [0] * (longest - len(ids)) for ids, _ in rows])  # (B, T)
    lengths = torch.tensor([len(ids) for ids, _ in rows])  # (B,)
    labels = torch.tensor([label for _, label in rows])  # (B,)
    return Batch(ids=ids, lengths=lengths, labels=labels)


TRAIN = make_data(NUM_TRAIN, 1)
VALID = make_data(NUM_VALID, 2)


def train_batches(batch_size: int, merge: int = 1, seed: int = 0):  # type: ignore[no-untyped-def]
    """epoch → batches in a fixed order per (seed, epoch); `merge` joins consecutive batches into one
    (a single process with merge=2 sees the same global batches as 2 DDP ranks with merge=1)."""

    def batches(epoch: int) -> list[Batch]:
        order = np.random.default_rng([seed, epoch]).permutation(len(TRAIN)).tolist()
        groups = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        groups = [sum(groups[i:i + merge], []) for i in range(0, len(groups), merge)]
        return [to_batch([TRAIN[i] for i in g]) for g in groups]

    return batches


def evaluate(model: nn.Module) -> dict[str, float]:
    """Validation accuracy and mean loss."""
    batch = to_batch(VALID)
    out = model(batch)
    accuracy = (out.logits.argmax(-1) == batch.labels).float().mean().item()
    return {"accuracy": accuracy, "loss": out.loss.item()}


def _killer(kind: str, n: int):  # type: ignore[no-untyped-def]
    count = {"n": 0}

    def hit(*_: object) -> None:
        count["n"] += 1
        if count["n"] == n:
            print(f"KILLED {kind}:{n}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


def install_kill(spec: str, model: TinyClassifier, evaluate_fn):  # type: ignore[no-untyped-def]
    """Arrange for SIGKILL at the event named by `spec` ("kind:N"); returns the (maybe wrapped) evaluate."""
    kind, n = spec.split(":")
    hit = _killer(kind, int(n))
    if kind == "forward":
        model.on_forward = hit
    elif kind == "eval":
        def evaluate_and_die(m: nn.Module) -> dict[str, float]:
            evaluate_fn(m)
            hit()
            return evaluate_fn(m)
        return evaluate_and_die
    elif kind == "save":
        original = ckpt.save_weights

        def save_and_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            original(*args, **kwargs)
            hit()
        ckpt.save_weights = save_and_die
    elif kind == "commit":
        original_json = ckpt.atomic_write_json

        def commit_and_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            original_json(*args, **kwargs)
            hit()
        ckpt.atomic_write_json = commit_and_die
    else:
        raise SystemExit(f"unknown kill kind {kind}")
    return evaluate_fn


def build(run_dir: str | Path, settings: dict, *, dropout: float = 0.2, batch_size: int = 8, merge: int = 1,
          nan_at: int = 0, artifacts: dict | None = None) -> tuple[Trainer, TinyClassifier]:
    """The Trainer of this program: a fresh seeded model, settings as TrainConfig file values."""
    config = resolve(TrainConfig, {}, {"progress": "off", "curves": False, **settings})
    seed_everything(config.seed)
    model = TinyClassifier(dropout=dropout, nan_at=nan_at)
    trainer = Trainer(model, config, run_dir, train_batches=train_batches(batch_size, merge, config.seed),
                      evaluate=evaluate, metric="accuracy", higher_is_better=True,
                      artifacts=artifacts if artifacts is not None else
                      {"config.json": json.dumps({"task": "test", "model": {"dropout": dropout}})})
    return trainer, model


def chain(ref_dir: str, run_dir: str, kills: list[str], settings: dict, dropout: float) -> None:
    """Train `ref_dir` uninterrupted; train `run_dir` in forked children SIGKILLed at each of `kills` in
    turn (each resuming the previous one), then resume it to the end. Imports are paid once, so many
    kill points cost about a second each. One thread, so forking after torch has run is safe."""
    torch.set_num_threads(1)
    build(ref_dir, settings, dropout=dropout)[0].fit()
    for i, spec in enumerate(kills):
        pid = os.fork()
        if pid == 0:  # child: train until the kill point SIGKILLs it
            code = 3
            try:
                trainer, model = build(run_dir, settings, dropout=dropout)
                trainer.evaluate_fn = install_kill(spec, model, trainer.evaluate_fn)
                trainer.fit(resume=i > 0)
            except BaseException as err:  # reported through the exit status
                print(f"child failed: {err!r}", file=sys.stderr, flush=True)
                code = 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise SystemExit(f"kill point {spec} (#{i + 1}) was not reached: wait status {status}")
    build(run_dir, settings, dropout=dropout)[0].fit(resume=True)
    print(f"CHAIN {len(kills)} kill points", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill", default="", help="KIND:N, see the module docstring")
    parser.add_argument("--chain", default="", help="REF_DIR: run chain() with --kill as a comma list")
    parser.add_argument("--settings", default="{}", help="TrainConfig values as JSON")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--merge", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slow-rank", type=float, default=0.0,
                        help="SECONDS: rank 1 sleeps this long in every training forward (a slower process)")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    if args.chain:
        chain(args.chain, args.run_dir, args.kill.split(","), settings, args.dropout)
        return 0
    torch.set_num_threads(args.threads)
    trainer, model = build(args.run_dir, settings, dropout=args.dropout,
                           batch_size=args.batch_size, merge=args.merge)
    if args.kill:
        trainer.evaluate_fn = install_kill(args.kill, model, trainer.evaluate_fn)
    rank = int(os.environ.get("RANK", "0"))
    if args.slow_rank and rank == 1:
        model.on_forward = lambda calls: time.sleep(args.slow_rank)
    result = trainer.fit(resume=args.resume)
    if os.environ.get("WORLD_SIZE"):  # every rank's weights, to show they stayed the same
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
        print(f"WEIGHTS {rank} {digest.hexdigest()}", flush=True)
    if rank == 0:
        print("RESULT " + json.dumps({"best": result.best_metric, "steps": result.steps,
                                      "history": result.history}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
