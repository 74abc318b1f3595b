"""Character-level text generation: a deep unidirectional recurrent language model over characters.

This module is *how* a character language model is trained, scored and sampled; *which* dataset and splits
make a benchmark is data, in the top-level tasks/tiny_shakespeare.toml.

    python -m seqnlp.tasks.generation                          # Tiny Shakespeare: train 25 min, score, save
    python -m seqnlp.tasks.generation --dataset my_book.txt --time-budget 5
    python -m seqnlp.tasks.generation generate --model RUN_DIR --prime "ROMEO:" --length 500 --seed 1
    python -m seqnlp.tasks.generation evaluate --model RUN_DIR [--split test] [--results FILE]

The recipe, straight through:
rows of text → char tokenizer trained on the train split → one long id stream, each row preceded by <bos>
→ the stream cut into B contiguous streams → each step takes the next `seq_length` characters of every stream
→ Embedding → RNNEncoder (LSTM, state carried over from the previous window, detached: truncated BPTT)
→ dropout → Linear(V) (optionally tied to the embedding) → Output(logits, loss) → seqnlp.trainer.Trainer
→ scored over the whole split with the state carried from its first character to its last.

Truncated BPTT that survives checkpoints: every training window carries in `Batch.index` the stream position
of each row's first character. The model keeps the final state of the previous window, and the position that
window ended at, as persistent buffers: the trainer saves them with the weights, so a resumed run continues
with exactly the state it stopped with. A window continues the carried state only when it starts where the
last one ended (otherwise, e.g. at an epoch start, the state starts from zero).

Scoring protocol (the same for validation, test and `CharLM.log_prob`, and equal to the leaderboard's
bring-your-own protocol): each row of a split is read from <bos> with a zero state, and every one of its
characters is predicted from all characters before it in the row. nats/char = total NLL / number of
characters; bits/char = nats/char / ln 2; perplexity = exp(nats/char).

Under DDP (torchrun) the trainer deals consecutive windows to different processes, so no window continues
its predecessor there and every window starts from a zero state: correct, without the carry.

Unknown characters: a `--prime` holding characters never seen in training is refused with a message naming
them (the model has no input for them). In scored text they count as the unknown character <unk>, which the
model gives (almost) no probability: scores stay finite but are penalised, as in the n-gram baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqnlp import __version__
from seqnlp.benchmark import Benchmark, load_benchmark
from seqnlp.config import add_flags, opt, resolve, to_dict
from seqnlp.data import Batch, available_splits, check_columns, load_split, mirror_name, pad
from seqnlp.decoding import filter_logits, greedy, sample
from seqnlp.device import autocast, resolve_device, use_bf16
from seqnlp.encoders import _FUSED, CELLS, RNNEncoder, State, detach_state
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.io import atomic_write_json, read_json
from seqnlp.metrics import Score, bits_per_char, nats_per_char, perplexity
from seqnlp.results import build_result, check_results_path, write_result
from seqnlp.summary import count_parameters, summary
from seqnlp.tokenization import Tokenizer
from seqnlp.trainer import Output, TrainConfig, Trainer, check_run_dir, load_model_weights

TASK = "generation"
SUBCOMMANDS = ("train", "generate", "evaluate")
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
EVAL_CHUNK = 4096  # characters per scoring step; the state is carried between chunks, so any size is exact
EVAL_ROWS = 64  # rows scored side by side (datasets with many short rows)
SAMPLE_EVERY_EVAL = 200  # characters sampled at each evaluation (shown on stderr)


# ====================================================================== configuration

@dataclass
class ModelConfig:
    """The language model (saved in config.json; a loaded model rebuilds from it)."""

    cell: str = opt("lstm", "recurrent cell", choices=CELLS)
    layers: int = opt(2, "stacked recurrent layers", min=1)
    hidden_size: int = opt(512, "H, recurrent state size", min=1)
    embedding_size: int = opt(128, "E, character embedding width", min=1)
    dropout: float = opt(0.15, "dropout between recurrent layers and before the output layer", min=0, max=0.95)
    # Tying shares the V x E embedding with the output layer (Press & Wolf 2017); with E != H a
    # projection H → E is added before the output layer.
    tie_weights: bool = opt(False, "share the embedding matrix with the output layer")


@dataclass
class DataConfig:
    """Which text: a benchmark from tasks/ (default Tiny Shakespeare), or any text with --dataset."""

    benchmark: str = opt("tiny_shakespeare", "benchmark name in tasks/ or a .toml path")
    dataset: str = opt("", "any text: hub id, mirror name, folder of <split>.<ext> files, or one file (.txt ...)")
    text_column: str = opt("", "text column (default: the benchmark's, or 'text')")
    # For --dataset without validation/test splits these are cut from the end of train, by characters.
    validation_fraction: float = opt(0.05, "for --dataset without a validation split: share of train characters "
                                     "held out for model selection", gt=0, max=0.5)
    test_fraction: float = opt(0.05, "for --dataset without a test split: share of train characters held out "
                               "for the final score", gt=0, max=0.5)
    batch_size: int = opt(64, "B, contiguous streams trained side by side", min=1)
    seq_length: int = opt(128, "T, characters per training window (backpropagation through time)", min=1)


# Training settings this task starts from (flags still win). Tuned on the project's 2-core CPU for
# tiny_shakespeare (issue 6): the run stops at the time budget, and the schedule decays the learning
# rate to zero exactly there (seqnlp.trainer ends linear/cosine schedules with the budget).
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 100, "time_budget": 25.0, "lr": 3e-3, "weight_decay": 0.0,
                                  "schedule": "cosine", "warmup": 50, "eval_every": 300}


# ====================================================================== the model

class CharRNN(nn.Module):
    """Embedding → RNNEncoder (unidirectional, stateful) → dropout → [projection] → Linear(V).

    forward(batch) -> Output(logits (B, T, V), loss): mean cross-entropy over the batch's real positions
    when `batch.targets` is set. In training, a batch whose `index` (B,) (stream position of each row's first
    character) continues the previous batch starts from that batch's final state (truncated BPTT).
    """

    def __init__(self, config: ModelConfig, vocab_size: int, batch_size: int, pad_id: int = 0,
                 precision: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        between = config.dropout if config.layers > 1 else 0.0
        self.encoder = RNNEncoder(config.cell, config.embedding_size, config.hidden_size,
                                  num_layers=config.layers, dropout=between, precision=precision)
        self.dropout = nn.Dropout(config.dropout)
        width = self.encoder.output_dim
        self.projection = (nn.Linear(width, config.embedding_size)
                           if config.tie_weights and config.embedding_size != width else None)
        self.head = nn.Linear(config.embedding_size if config.tie_weights else width, vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        # The truncated-BPTT carry: persistent, so checkpoints (and resumed runs) keep it.
        parts = 2 if config.cell == "lstm" else 1
        self.register_buffer("carry_state", torch.zeros(parts, config.layers, batch_size, config.hidden_size))
        self.register_buffer("carry_next", torch.full((batch_size,), -1, dtype=torch.long))  # (B,)

    def run(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T), lengths (B,), optional state → logits (B, T, V) and the final state."""
        x = self.embedding(ids)  # (B, T, E)
        outputs, state = self.encoder(x, lengths, state)  # (B, T, H)
        outputs = self.dropout(outputs)  # (B, T, H)
        if self.projection is not None:
            outputs = self.projection(outputs)  # (B, T, E)
        return self.head(outputs), state  # (B, T, V)

    def _carried(self, index: Tensor) -> State | None:
        """The carried state when this window starts where the last one ended, else None (zero state)."""
        if index.shape != self.carry_next.shape or not torch.equal(index.to(self.carry_next.device), self.carry_next):
            return None
        # Copies: the buffer is overwritten after this step, while autograd still holds the state it read.
        if self.config.cell == "lstm":
            return (self.carry_state[0].clone(), self.carry_state[1].clone())
        return self.carry_state[0].clone()

    def forward(self, batch: Batch) -> Output:
        """Next-character scores for every position, and the mean loss when targets are given."""
        carry = self.training and batch.index is not None
        state = self._carried(batch.index) if carry else None
        logits, final = self.run(batch.ids, batch.lengths, state)  # (B, T, V)
        loss = None
        if batch.targets is not None:
            targets = batch.targets.masked_fill(~batch.mask, -100)  # (B, T)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        if carry and batch.index.shape == self.carry_next.shape:
            final = detach_state(final)
            with torch.no_grad():
                self.carry_state.copy_(torch.stack(final) if isinstance(final, tuple) else final[None])
                self.carry_next.copy_(batch.index.to(self.carry_next.device) + batch.lengths.to(self.carry_next.device))
        return Output(logits, loss)


# ====================================================================== streams and windows

class Windows(Sequence[Batch]):
    """One epoch of training windows over a token stream (what the trainer iterates).

    The stream, shifted by `offset`, is cut into `batch_size` contiguous rows of equal length; window j holds
    characters [j*T, (j+1)*T) of every row, targets shifted by one, and `index` = each row's stream position.
    """

    def __init__(self, stream: Tensor, batch_size: int, seq_length: int, offset: int = 0) -> None:
        usable = stream.numel() - 1 - offset
        self.row_length = usable // batch_size
        n = self.row_length * batch_size
        self.inputs = stream[offset:offset + n].view(batch_size, self.row_length)  # (B, N/B)
        self.targets = stream[offset + 1:offset + 1 + n].view(batch_size, self.row_length)  # (B, N/B)
        self.starts = offset + torch.arange(batch_size) * self.row_length  # (B,)
        self.seq_length = seq_length
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.row_length // self.seq_length

    def __getitem__(self, j: int) -> Batch:  # type: ignore[override]
        if not 0 <= j < len(self):
            raise IndexError(j)
        cut = slice(j * self.seq_length, (j + 1) * self.seq_length)
        lengths = torch.full((self.batch_size,), self.seq_length, dtype=torch.long)  # (B,)
        return Batch(ids=self.inputs[:, cut], lengths=lengths, targets=self.targets[:, cut],
                     index=self.starts + j * self.seq_length)  # ids, targets (B, T); index (B,)


def epoch_offset(epoch: int, seed: int, seq_length: int, slack: int | None = None) -> int:
    """Where epoch `epoch`'s rows start: 0 first (the <bos> is read once), then a seeded shift in [0, T)
    so that window boundaries, where the gradient is cut, move between epochs. `slack` (characters left
    over by epoch 0's windows) caps the shift so every epoch has as many windows as the first."""
    if epoch == 0:
        return 0
    high = seq_length if slack is None else max(1, min(seq_length, slack + 1))
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return int(torch.randint(0, high, (1,), generator=g))


def epoch_windows(stream: Tensor, batch_size: int, seq_length: int, epoch: int, seed: int) -> Windows:
    """The training windows of one epoch (deterministic in `seed` and `epoch`, as resuming requires)."""
    first = Windows(stream, batch_size, seq_length)
    slack = stream.numel() - 1 - batch_size * seq_length * len(first)
    return Windows(stream, batch_size, seq_length, epoch_offset(epoch, seed, seq_length, slack))


def to_stream(rows: Sequence[Sequence[int]], bos_id: int) -> Tensor:
    """(N,) one long id stream: <bos> before every row."""
    total = sum(len(r) + 1 for r in rows)
    out = torch.empty(total, dtype=torch.long)  # (N,)
    pos = 0
    for r in rows:
        out[pos] = bos_id
        out[pos + 1:pos + 1 + len(r)] = torch.as_tensor(r, dtype=torch.long)
        pos += len(r) + 1
    return out


@torch.no_grad()
def split_nll(model: CharRNN, rows: Sequence[Sequence[int]], bos_id: int, device: torch.device,
              chunk: int = EVAL_CHUNK, max_rows: int = EVAL_ROWS) -> tuple[float, int]:
    """(total NLL in nats, characters predicted) of `rows`, each read from <bos> with a zero state.

    Rows are scored side by side, longest first, `chunk` characters at a time with the state carried
    between chunks, so the result equals reading every row in one pass.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted((i for i in range(len(rows)) if len(rows[i]) > 0), key=lambda i: -len(rows[i]))
    try:
        for start in range(0, len(order), max_rows):
            group = [list(rows[i]) for i in order[start:start + max_rows]]
            ids, lengths = pad([[bos_id] + r for r in group], model.pad_id)  # (B, L+1), (B,)
            inputs, targets, lengths = ids[:, :-1], ids[:, 1:], lengths - 1  # (B, L), (B, L), (B,)
            state: State | None = None
            for t0 in range(0, int(lengths[0]), chunk):
                active = int((lengths > t0).sum())  # rows are longest first: the active ones are a prefix
                if state is not None:
                    state = tuple(s[:, :active] for s in state) if isinstance(state, tuple) else state[:, :active]
                part = (lengths[:active] - t0).clamp(max=chunk)  # (B',)
                x = inputs[:active, t0:t0 + chunk].to(device)  # (B', C)
                y = targets[:active, t0:t0 + chunk].to(device)  # (B', C)
                logits, state = model.run(x, part.to(device), state)  # (B', C, V)
                real = torch.arange(x.shape[1], device=device)[None, :] < part.to(device)[:, None]  # (B', C)
                nll = F.cross_entropy(logits.float().flatten(0, 1), y.masked_fill(~real, -100).flatten(),
                                      ignore_index=-100, reduction="sum")
                total += float(nll)
                count += int(real.sum())
    finally:
        model.train(was_training)
    return total, count


def lm_scores(total_nll: float, count: int) -> list[Score]:
    """nats/char, bits/char and perplexity from a split's total NLL and character count (seqnlp.metrics)."""
    return [nats_per_char(total_nll, count), bits_per_char(total_nll, count),
            perplexity(total_nll, count, unit="char")]


# ====================================================================== sampling

@contextlib.contextmanager
def _native_rnn() -> Iterator[None]:
    """oneDNN off (see _StepDecoder), quietly: torch warns about an Intel-GPU-only setting when it is toggled."""
    if not torch.backends.mkldnn.enabled:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False):
            yield


class _StepDecoder:
    """`seqnlp.decoding.Decoder` over a CharRNN: one character per step, special tokens never produced.

    A step runs all layers in one fused call (torch.lstm / torch.gru, what RNNEncoder runs per layer), in fp32
    and without oneDNN: oneDNN's RNN kernel re-lays out the weights on every call, which costs ~10 ms per
    layer for a single step on the project CPU, against ~0.5 ms for the native kernel. The result is the same
    function of the weights as `CharRNN.run` on a length-1 input (checked in tests).
    """

    def __init__(self, model: CharRNN, banned: Sequence[int]) -> None:
        self.model = model
        self.banned = torch.tensor(list(banned), dtype=torch.long)  # (S,)
        enc = model.encoder
        self.weights = [getattr(enc, f"{name}_l{layer}") for layer in range(enc.num_layers)
                        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        enc = self.model.encoder
        x = self.model.embedding(tokens[:, None]).float()  # (N, 1, E)
        if state is None:
            zeros = x.new_zeros(enc.num_layers, x.shape[0], enc.hidden_size)  # (L, N, H)
            state = (zeros, zeros) if enc.cell == "lstm" else zeros
        with torch.autocast(device_type=x.device.type, enabled=False), _native_rnn():
            if enc.cell == "lstm":
                out, h, c = torch.lstm(x, tuple(s.float() for s in state), self.weights, True, enc.num_layers,
                                       0.0, False, False, True)  # out (N, 1, H)
                state = (h, c)
            else:
                out, state = _FUSED[enc.cell](x, state.float(), self.weights, True, enc.num_layers,
                                              0.0, False, False, True)  # out (N, 1, H)
            if self.model.projection is not None:
                out = self.model.projection(out)  # (N, 1, E)
            logits = self.model.head(out)[:, 0].float()  # (N, V)
        logits[:, self.banned.to(logits.device)] = float("-inf")
        return logits, state

    def reorder(self, state: State, index: Tensor) -> State:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)


def check_sampling(length: int, temperature: float, top_k: int | None, top_p: float | None,
                   num_samples: int = 1) -> None:
    """SeqnlpError for sampling settings outside their ranges (before any model is loaded)."""
    if length < 0:
        raise SeqnlpError(f"--length must be >= 0, not {length}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise SeqnlpError(f"--temperature must be > 0, not {temperature} (use --greedy for the most likely text)")
    if top_k is not None and top_k < 1:
        raise SeqnlpError(f"--top-k must be >= 1, not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise SeqnlpError(f"--top-p must be in (0, 1], not {top_p}")
    if num_samples < 1:
        raise SeqnlpError(f"--num-samples must be >= 1, not {num_samples}")


class CharLM:
    """A trained character language model with its tokenizer: sample text, score text.

        lm = seqnlp.load("runs/generation-...")
        lm.generate(prime="ROMEO:", length=300, temperature=0.8, seed=1)  # the prime and 300 new characters
        lm.log_prob("To be, or not to be")  # total natural-log probability of its characters
    """

    def __init__(self, model: CharRNN, tokenizer: Tokenizer, device: str | torch.device = "cpu",
                 precision: str = "auto") -> None:
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.bf16 = use_bf16(precision, self.device)
        specials = [tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id]
        self._decoder = _StepDecoder(self.model, specials)
        self._chars = [tokenizer.decode([i], skip_special=False) if i not in specials else ""
                       for i in range(tokenizer.vocab_size)]

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of `text` that the tokenizer maps to <unk> (unseen in training)."""
        distinct = sorted(set(text))
        encoded = self.tokenizer.encode_batch(distinct)
        return [c for c, ids in zip(distinct, encoded) if ids == [self.tokenizer.unk_id]]

    def check_prime(self, prime: str) -> None:
        """SeqnlpError naming the characters of `prime` never seen in training (the model has no input for them)."""
        unknown = self.unknown_characters(prime)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise SeqnlpError(f"the prime holds {len(unknown)} character(s) never seen in training: {shown}; "
                              "remove or replace them")

    def _prime_state(self, prime: str) -> tuple[State | None, Tensor]:
        """State after reading <bos> + prime[:-1], and the last input character (N=1)."""
        self.check_prime(prime)
        ids = [self.tokenizer.bos_id] + self.tokenizer.encode(prime)
        inputs = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)  # (1, P)
        state = None
        if inputs.shape[1] > 0:
            lengths = torch.tensor([inputs.shape[1]], device=self.device)  # (1,)
            _, state = self.model.run(inputs, lengths)
        return state, torch.tensor([ids[-1]], dtype=torch.long, device=self.device)  # (1,)

    @torch.no_grad()
    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, greedy_decoding: bool = False,
                 on_text: Callable[[str], None] | None = None) -> str:
        """The prime followed by `length` sampled characters (most likely ones with greedy_decoding).

        An empty prime starts a new text (from <bos>). The same seed gives the same text. `on_text` receives
        each new character as it is produced (for streaming).
        """
        check_sampling(length, temperature, top_k, top_p)
        with autocast(self.device, self.bf16):
            state, start = self._prime_state(prime)
            if greedy_decoding:
                with _native_rnn():
                    ids = greedy(self._decoder, state, start, length, eos_id=None)[0]
                text = "".join(self._chars[i] for i in ids)
                if on_text is not None and text:
                    on_text(text)
                return prime + text
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())

            def emit(tokens: Tensor) -> None:
                if on_text is not None:
                    on_text(self._chars[int(tokens[0])])

            with _native_rnn():  # one switch for the whole loop; the per-step switch inside is then a no-op
                ids_t = sample(self._decoder, state, start, length, temperature=temperature, top_k=top_k,
                               top_p=top_p, generator=generator, on_token=emit)  # (1, L)
        return prime + "".join(self._chars[i] for i in ids_t[0].tolist())

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> tuple[float, int]:
        """(total NLL in nats, characters) of `texts`, each read from <bos> (the scoring protocol)."""
        rows = self.tokenizer.encode_batch(list(texts))
        with autocast(self.device, self.bf16):
            return split_nll(self.model, rows, self.tokenizer.bos_id, self.device)

    def log_prob(self, text: str) -> float:
        """Total natural-log probability of the characters of `text`, each given the ones before it."""
        return -self.nll([text])[0] if text else 0.0

    def score(self, texts: Sequence[str]) -> list[Score]:
        """nats/char, bits/char and perplexity of `texts`."""
        return lm_scores(*self.nll(texts))

    def next_char_probabilities(self, prime: str, temperature: float = 1.0, top_k: int | None = None,
                                top_p: float | None = None) -> dict[str, float]:
        """{character: probability} of the character after `prime`, as sampling would draw it."""
        with torch.no_grad(), autocast(self.device, self.bf16):
            state, start = self._prime_state(prime)
            logits, _ = self._decoder.step(start, state)  # (1, V)
            probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)[0]  # (V,)
        return {self._chars[i]: float(p) for i, p in enumerate(probs.tolist()) if p > 0 and self._chars[i]}


# ====================================================================== where the text comes from

@dataclass
class Corpus:
    """The three splits as lists of rows, and where they came from."""

    name: str
    version: int
    splits: dict[str, list[str]]  # role (train | validation | test) → rows
    names: dict[str, str]  # role → split name as recorded in results


def _texts(ds: Any, column: str, where: str, source: str) -> list[str]:
    check_columns(ds, [column], source=source)
    rows = []
    for i, text in enumerate(ds[column]):
        if text is None:
            continue
        if not isinstance(text, str):
            raise SeqnlpError(f"{where}: row {i} has a {type(text).__name__} ({text!r}), not a string; "
                              "choose the text column with --text-column")
        if text:
            rows.append(text)
    if not rows:
        raise SeqnlpError(f"{where} holds no text in column {column!r}")
    return rows


def carve_characters(rows: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Split rows at `1 - fraction` of their characters: (head rows, tail rows); a row at the cut is split."""
    total = sum(len(r) for r in rows)
    cut = int(round(total * (1 - fraction)))
    head: list[str] = []
    tail: list[str] = []
    pos = 0
    for r in rows:
        if pos + len(r) <= cut:
            head.append(r)
        elif pos >= cut:
            tail.append(r)
        else:
            head.append(r[:cut - pos])
            tail.append(r[cut - pos:])
        pos += len(r)
    return head, tail


def load_corpus(data: DataConfig, roles: Sequence[str] = ("train", "validation", "test"),
                test_split: str | None = None) -> Corpus:
    """The text of each role: from the benchmark, or from --dataset (missing splits cut from train's end)."""
    if not data.dataset:
        bench: Benchmark = load_benchmark(data.benchmark)
        if bench.task != TASK:
            raise SeqnlpError(f"benchmark {bench.name!r} is a {bench.task} benchmark, not {TASK}; "
                              f"run it with python -m seqnlp.tasks.{bench.task}")
        column = data.text_column or bench.columns.get("text", "text")
        source = bench.source()
        names = {"train": bench.train_split, "validation": bench.validation_split or
                 f"{bench.train_split}[carved {bench.validation_fraction:g}]", "test": test_split or bench.test_split}
        splits = {}
        for role in roles:
            if role == "test" and test_split:
                ds = load_split(source, test_split)
            else:
                ds = bench.load_split(role)
            splits[role] = _texts(ds, column, f"{bench.name} {role} split ({names[role]})", source)
        return Corpus(bench.name, bench.version, splits, names)
    available = available_splits(data.dataset)
    column = data.text_column or "text"
    name = re.sub(r"[^a-z0-9_]+", "_", Path(mirror_name(data.dataset)).stem.lower()).strip("_") or "dataset"
    train_name = "train" if "train" in available else available[0]
    val_name = next((s for s in ("validation", "valid", "dev") if s in available and s != train_name), None)
    test_name = test_split or next((s for s in ("test",) if s in available and s != train_name), None)
    if test_name and test_name not in available:
        raise SeqnlpError(f"dataset {data.dataset!r} has no split {test_name!r}; its splits are {', '.join(available)}")

    def rows_of(split: str) -> list[str]:
        return _texts(load_split(data.dataset, split), column, f"{data.dataset} split {split!r}", data.dataset)

    train = rows_of(train_name)
    splits: dict[str, list[str]] = {}
    names = {"train": train_name}
    if test_name is None:  # cut from the end of train: test last, validation before it
        train, splits["test"] = carve_characters(train, data.test_fraction)
        names["test"] = f"{train_name}[last {data.test_fraction:g} of characters]"
    if val_name is None:
        share = data.validation_fraction / (1 - (data.test_fraction if test_name is None else 0.0))
        train, splits["validation"] = carve_characters(train, share)
        names["validation"] = f"{train_name}[{data.validation_fraction:g} of characters before the test part]"
    splits["train"] = train
    for role, split in (("validation", val_name), ("test", test_name)):
        if split is not None and role in roles:
            splits[role] = rows_of(split)
            names[role] = split
    for role in roles:
        if not splits.get(role) or not any(splits[role]):
            raise SeqnlpError(f"{data.dataset}: the {role} part is empty; use a longer text")
    return Corpus(name, 1, {r: splits[r] for r in roles}, names)


# ====================================================================== run folder

def run_config(model: ModelConfig, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
    """What config.json holds: everything needed to rebuild the model and redo the run."""
    return {"task": TASK, "model": to_dict(model), "data": to_dict(data), "train": to_dict(train),
            "seqnlp_version": __version__}


def read_run(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The run folder and its config.json, checked to be a generation run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise SeqnlpError(f"model folder {run} does not exist; pass the run folder that training printed")
    config = read_json(run / CONFIG_FILE)
    if not isinstance(config, dict) or "task" not in config:
        raise SeqnlpError(f"{run / CONFIG_FILE} has no 'task' entry; is {run} a seqnlp run folder?")
    if config["task"] != TASK:
        raise SeqnlpError(f"{run} holds a {config['task']} model, not a {TASK} model; "
                          f"use python -m seqnlp.tasks.{config['task']}")
    return run, config


def load(run_dir: str | Path, device: str = "cpu") -> CharLM:
    """Load a saved generation run (config.json, tokenizer.json, model.safetensors) as a CharLM."""
    run, config = read_run(run_dir)
    model_cfg = resolve(ModelConfig, None, config.get("model") or {})
    data_cfg = resolve(DataConfig, None, config.get("data") or {})
    tokenizer = Tokenizer.load(run / TOKENIZER_FILE)
    precision = str((config.get("train") or {}).get("precision", "auto"))
    model = CharRNN(model_cfg, tokenizer.vocab_size, data_cfg.batch_size, tokenizer.pad_id, precision=precision)
    load_model_weights(run, model, "best")
    return CharLM(model, tokenizer, device=device, precision=precision)


def _model_description(config: ModelConfig) -> str:
    tied = " tied" if config.tie_weights else ""
    return f"{config.layers}x{config.cell} {config.embedding_size}/{config.hidden_size} char{tied}"


# ====================================================================== command line

def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m seqnlp.tasks.generation [train]",
                                description="Train a character language model (default: 2x512 LSTM on Tiny "
                                            "Shakespeare for 25 minutes) and score it in nats/char.")
    add_flags(p, ModelConfig, group="model")
    add_flags(p, DataConfig, group="data")
    add_flags(p, TrainConfig, group="training")
    p.add_argument("--output", help="run folder (default: runs/generation-<UTC time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    p.add_argument("--results", metavar="FILE", help="write the scored split's metrics as a results JSON")
    return p


def _show(label: str, scores: Sequence[Score], count: int) -> str:
    values = {s.name: s.value for s in scores}
    return (f"{label}: {values['nats_per_char']:.4f} nats/char, {values['bits_per_char']:.4f} bits/char, "
            f"perplexity {values['perplexity']:.3f} ({count:,} characters)")


def train(argv: list[str]) -> int:
    """The `train` subcommand."""
    args = _train_parser().parse_args(argv)
    saved: dict[str, Any] = {}
    if args.resume:
        if args.output and Path(args.output) != Path(args.resume):
            raise SeqnlpError("--resume continues RUN_DIR in place; leave out --output (or give the same folder)")
        _, saved = read_run(args.resume)
    data_cfg = resolve(DataConfig, args, saved.get("data"))
    model_cfg = resolve(ModelConfig, args, saved.get("model"))
    train_cfg = resolve(TrainConfig, args, saved.get("train") or TRAIN_DEFAULTS)
    run_dir = Path(args.resume or args.output or
                   f"runs/{TASK}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    check_run_dir(run_dir, resume=bool(args.resume), overwrite=train_cfg.overwrite)  # before any data is read
    check_results_path(args.results)
    wall0 = time.perf_counter()
    torch.manual_seed(train_cfg.seed)

    t0 = time.perf_counter()
    corpus = load_corpus(data_cfg)
    if args.resume and (run_dir / TOKENIZER_FILE).exists():
        tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    else:
        tokenizer = Tokenizer.train(corpus.splits["train"], level="char")
    encoded = {role: tokenizer.encode_batch(rows) for role, rows in corpus.splits.items()}
    stream = to_stream(encoded["train"], tokenizer.bos_id)  # (N,)
    chars = {role: sum(len(r) for r in rows) for role, rows in corpus.splits.items()}
    # Flags that cannot fit the text fail before anything is printed about the data.
    if len(Windows(stream, data_cfg.batch_size, data_cfg.seq_length)) == 0:
        raise SeqnlpError(f"the training text ({chars['train']:,} characters) is too short for --batch-size "
                          f"{data_cfg.batch_size} x --seq-length {data_cfg.seq_length}; lower them")
    for role in ("validation", "test"):
        unknown = sum(r.count(tokenizer.unk_id) for r in encoded[role])
        if unknown:
            print(f"note: {unknown} character(s) of the {role} split never occur in train; they count as <unk>",
                  file=sys.stderr)
    print(f"data: {corpus.name} — train {chars['train']:,}, validation {chars['validation']:,}, "
          f"test ({corpus.names['test']}) {chars['test']:,} characters; vocabulary {tokenizer.vocab_size} "
          f"(4 special); prepared in {time.perf_counter() - t0:.1f}s", flush=True)

    model = CharRNN(model_cfg, tokenizer.vocab_size, data_cfg.batch_size, tokenizer.pad_id,
                    precision=train_cfg.precision)
    example = Windows(stream, 1, min(data_cfg.seq_length, 32))[0]
    example.index = None
    print(summary(model, example), flush=True)
    device = resolve_device(train_cfg.device)
    bf16 = use_bf16(train_cfg.precision, device)
    sampler_seed = train_cfg.seed

    def evaluate(m: nn.Module) -> dict[str, float]:
        total, count = split_nll(m, encoded["validation"], tokenizer.bos_id, device)  # type: ignore[arg-type]
        text = CharLM(m, tokenizer, device=device, precision=train_cfg.precision).generate("", SAMPLE_EVERY_EVAL, temperature=0.8,
                                                            seed=sampler_seed)
        print(f"--- sample (temperature 0.8) ---\n{text}\n---", file=sys.stderr, flush=True)
        return {s.name: s.value for s in lm_scores(total, count)}

    config = run_config(model_cfg, data_cfg, train_cfg)
    trainer = Trainer(
        model, train_cfg, run_dir,
        train_batches=lambda epoch: epoch_windows(stream, data_cfg.batch_size, data_cfg.seq_length, epoch,
                                                  train_cfg.seed),
        evaluate=evaluate, metric="nats_per_char", higher_is_better=False,
        artifacts={CONFIG_FILE: json.dumps(config, indent=2) + "\n", TOKENIZER_FILE: tokenizer.to_str()})
    result = trainer.fit(resume=bool(args.resume))

    load_model_weights(run_dir, model, "best")
    model.to(device)
    with autocast(device, bf16):
        valid = split_nll(model, encoded["validation"], tokenizer.bos_id, device)
        test = split_nll(model, encoded["test"], tokenizer.bos_id, device)
    valid_scores, test_scores = lm_scores(*valid), lm_scores(*test)
    print(_show(f"{corpus.name} validation ({corpus.names['validation']})", valid_scores, valid[1]))
    print(_show(f"{corpus.name} test ({corpus.names['test']})", test_scores, test[1]))
    evaluation = {"benchmark": corpus.name, "split": corpus.names["test"],
                  **{s.name: s.value for s in test_scores},
                  "validation": {s.name: s.value for s in valid_scores}, "best_step": result.best_step}
    atomic_write_json(run_dir / "evaluation_test.json", evaluation)
    params = count_parameters(model)[0]
    print(f"training: {result.steps} steps, {result.epochs:g} epochs in {result.train_seconds / 60:.1f} min "
          f"({result.stopped}), {result.tokens_per_second:,.0f} characters/s; best validation nats/char "
          f"{result.best_metric:.4f} at step {result.best_step}; wall time {(time.perf_counter() - wall0) / 60:.1f} min")
    if args.results:
        out = build_result(benchmark=corpus.name, version=corpus.version, task=TASK, split=corpus.names["test"],
                           scores=test_scores, model=_model_description(model_cfg), params=params,
                           train_seconds=result.train_seconds, tokens_per_second=result.tokens_per_second,
                           seed=train_cfg.seed, config=config,
                           extra={"validation": {s.name: s.value for s in valid_scores},
                                  "validation_split": corpus.names["validation"], "best_step": result.best_step,
                                  "steps": result.steps, "epochs": result.epochs, "stopped": result.stopped,
                                  "wall_seconds": round(time.perf_counter() - wall0, 1)})
        print(f"results: {write_result(args.results, out)}")
    _usage(run_dir)
    return 0


def _usage(run_dir: Path) -> None:
    print(f"\nmodel saved in {run_dir}. Use it:\n"
          f"  python -m seqnlp.tasks.generation generate --model {run_dir} --prime \"ROMEO:\" --length 500\n"
          f"  python -m seqnlp.tasks.generation evaluate --model {run_dir}\n"
          f"or in Python:\n"
          f"  import seqnlp\n"
          f"  lm = seqnlp.load(\"{run_dir}\")\n"
          f"  lm.generate(prime=\"ROMEO:\", length=500, temperature=0.8, seed=1)")


def generate_cmd(argv: list[str]) -> int:
    """The `generate` subcommand: stream sampled text to stdout."""
    p = argparse.ArgumentParser(prog="python -m seqnlp.tasks.generation generate",
                                description="Sample text from a trained character model, streamed as it is produced.")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run folder written by training")
    p.add_argument("--prime", default="", help="text to start from (default: a new text, from <bos>)")
    p.add_argument("--length", type=int, default=500, help="characters to generate after the prime (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; below 1 is more conservative (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely characters")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text "
                   "(default: a fresh one)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples; sample i uses seed + i")
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    args = p.parse_args(argv)
    check_sampling(args.length, args.temperature, args.top_k, args.top_p, args.num_samples)
    lm = load(args.model)
    lm.check_prime(args.prime)  # before anything is written
    seed = args.seed if args.seed is not None else int(torch.seed() % 2**31)
    if args.seed is None and not args.greedy:
        print(f"seed {seed} (pass --seed {seed} to get this text again)", file=sys.stderr, flush=True)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        for i in range(args.num_samples):
            if args.num_samples > 1:
                write(f"=== sample {i + 1} (seed {seed + i}) ===\n")
            write(args.prime)
            lm.generate(args.prime, args.length, args.temperature, args.top_k, args.top_p, seed=seed + i,
                        greedy_decoding=args.greedy, on_text=write)
            write("\n")
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not raise again
    return 0


def evaluate_cmd(argv: list[str]) -> int:
    """The `evaluate` subcommand: nats/char, bits/char and perplexity of a saved model on a split."""
    p = argparse.ArgumentParser(prog="python -m seqnlp.tasks.generation evaluate",
                                description="Score a saved character model on a split (nats/char, bits/char, perplexity).")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run folder written by training")
    p.add_argument("--split", default="test", help="test (default), validation, train, or a split name of the data")
    p.add_argument("--benchmark", help="benchmark name or .toml (default: the one the model was trained on)")
    p.add_argument("--dataset", help="any text instead of the benchmark's")
    p.add_argument("--text-column", help="text column (default: the training run's)")
    p.add_argument("--results", metavar="FILE", help="write the metrics as a results JSON")
    args = p.parse_args(argv)
    lm = load(args.model)
    run, config = read_run(args.model)
    saved = dict(config.get("data") or {})
    if args.dataset:
        saved.update(dataset=args.dataset, text_column="")
    elif args.benchmark:
        saved.update(benchmark=args.benchmark, dataset="", text_column="")
    if args.text_column:
        saved["text_column"] = args.text_column
    data_cfg = resolve(DataConfig, None, saved)
    role = args.split if args.split in ("train", "validation", "test") else "test"
    corpus = load_corpus(data_cfg, roles=(role,), test_split=None if role == args.split else args.split)
    rows = corpus.splits[role]
    unknown = lm.unknown_characters("".join(rows))
    if unknown:
        print(f"note: {len(unknown)} distinct character(s) never seen in training count as <unk>: "
              + " ".join(repr(c) for c in unknown[:20]), file=sys.stderr)
    total, count = lm.nll(rows)
    scores = lm_scores(total, count)
    print(_show(f"{corpus.name} {corpus.names[role]}", scores, count))
    if args.results:
        out = build_result(benchmark=corpus.name, version=corpus.version, task=TASK, split=corpus.names[role],
                           scores=scores, model=_model_description(lm.model.config),
                           params=count_parameters(lm.model)[0], train_seconds=None, tokens_per_second=None,
                           seed=(config.get("train") or {}).get("seed"), config=config,
                           extra={"model_dir": str(run)})
        print(f"results: {write_result(args.results, out)}")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    """`python -m seqnlp.tasks.generation [train|generate|evaluate] ...`; train is the default."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "train"
    if command == "generate":
        return generate_cmd(argv)
    if command == "evaluate":
        return evaluate_cmd(argv)
    return train(argv)


if __name__ == "__main__":
    sys.exit(main())
