"""Character-level text generation: a deep unidirectional recurrent language model over characters.

This module is *how* a character language model is trained, scored and sampled; *which* dataset and splits
make a benchmark is data, in the top-level tasks/tiny_shakespeare.toml.

    python -m seqnlp.tasks.generation                          # Tiny Shakespeare: train 25 min, score, save
    python -m seqnlp.tasks.generation --dataset my_book.txt --time-budget 5
    python -m seqnlp.tasks.generation generate --model RUN_DIR --prime "ROMEO:" --length 500 --seed 1
    python -m seqnlp.tasks.generation evaluate --model RUN_DIR [--split test] [--results FILE]
    python -m seqnlp.tasks.generation --benchmark imdb_lm      # a BPE model of IMDB reviews (starts classifiers)

Word and subword models (--level word|bpe, config.json's "tokens"): the same recipe over tokens, with an adaptive
softmax as output layer; scored by the same protocol, per character (the text's total NLL over its characters,
comparable with char models; a word model's <unk> makes it optimistic) and per token (`token_perplexity`). Their
text is read as the classifier reads it: HTML line breaks (IMDB's <br />) become spaces.

The recipe, straight through:
rows of text → char tokenizer trained on the train split → one long id stream, each row preceded by <bos>
→ the stream cut into B contiguous streams → each step takes the next `seq_length` characters of every stream
→ Embedding → RNNEncoder (LSTM, state carried over from the previous window, detached: truncated BPTT)
→ dropout → Linear(V) (optionally tied to the embedding) → Output(logits, loss) → seqnlp.trainer.Trainer
→ scored over the whole split with the state carried from its first character to its last.

Regularisation (AWD-LSTM's, Merity et al. 2018): variational dropout on the embeddings, between layers and
before the output layer, and DropConnect on the hidden-to-hidden weights. Unless set by flags, its strength
follows how many passes over the training text the budget allows at the speed measured on the machine at
hand (`training_speed`, `regularisation`): a book-length `--dataset` or a slower CPU needs no hand tuning.
Training ends early when validation stops improving (`--patience`).

Truncated BPTT that survives checkpoints: every training window carries in `Batch.index` the stream position
of each row's first character. The model keeps the final state of the previous window, and the position that
window ended at, as persistent buffers: the trainer saves them with the weights, so a resumed run continues
with exactly the state it stopped with. A window continues the carried state only when it starts where the
last one ended (otherwise, e.g. at an epoch start, the state starts from zero).

Scoring protocol (the same for validation, test and `CharLM.log_prob`, and equal to the leaderboard's
bring-your-own protocol): each row of a split is read from <bos> with a zero state, and every one of its
characters is predicted from all characters before it in the row. nats/char = total NLL / number of
characters; bits/char = nats/char / ln 2; perplexity = exp(nats/char).

Under torchrun with N processes the text is cut into N x batch_size streams, and process r trains on streams
r*batch_size to (r+1)*batch_size - 1 of every window (`Windows(..., parts=N)`): each process reads its streams
window after window, so the carry continues as in one process with N x batch_size streams. The carried state of
every stream is gathered into every process after each step, so the state saved with the weights (by rank 0)
holds all of them and a resumed run continues exactly.

Unknown characters: a `--prime` holding characters never seen in training is refused with a message naming
them (the model has no input for them). In scored text they count as the unknown character <unk>, which the
model gives (almost) no probability: scores stay finite but are penalised, as in the n-gram baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqnlp import baselines, distributed, scoring
from seqnlp.config import opt
from seqnlp.data import Batch, carve_characters, check_texts, clean, pad  # noqa: F401  (carve_characters: the carve for --dataset)
from seqnlp.decoding import check_decoding, filter_logits, greedy, sample, sample_steps
from seqnlp.device import autocast, resolve_device, use_bf16
from seqnlp.encoders import CELLS, LockedDropout, RNNEncoder, State, detach_state, native_kernels
from seqnlp.errors import SeqnlpError, check_finite
from seqnlp.metrics import Score, bits_per_char, nats_per_char, perplexity
from seqnlp.tasks.runner import Command, Prepared, Run, TaskSpec, load_run_of, main as run_main
from seqnlp.tokenization import LEVELS, Tokenizer
from seqnlp.trainer import Output, load_model_weights

TASK = "generation"
TOKENIZER_FILE = "tokenizer.json"
EVAL_CHUNK = 4096  # characters per scoring step; the state is carried between chunks, so any size is exact
EVAL_ROWS = 64  # rows scored side by side (datasets with many short rows)
SAMPLE_EVERY_EVAL = 200  # characters sampled at each evaluation (shown on stderr)
# Codistillation's share for an ensemble: on Tiny Shakespeare's default pair it took validation from 1.3063 to 1.2922
# at --seed 1 (README, "Character-level generation").
DISTILL = 0.5


# ====================================================================== configuration

@dataclass
class ModelConfig:
    """The language model (saved in config.json; a loaded model rebuilds from it)."""

    cell: str = opt("lstm", "recurrent cell", choices=CELLS)
    layers: int = opt(2, "stacked recurrent layers", min=1)
    # None = scaled to how many passes over the training text the budget allows (see `regularisation`).
    dropout: float | None = opt(None, "variational dropout between recurrent layers and before the output "
                                "layer (default: scaled to the corpus)", min=0, max=0.95)
    embedding_dropout: float | None = opt(None, "variational dropout on the character embeddings "
                                          "(default: scaled to the corpus)", min=0, max=0.95)
    weight_dropout: float | None = opt(None, "DropConnect on the hidden-to-hidden weights "
                                       "(default: scaled to the corpus)", min=0, max=0.95)
    hidden_size: int = opt(768, "H, recurrent state size", min=1)
    embedding_size: int = opt(128, "E, character embedding width", min=1)
    # Tying shares the V x E embedding with the output layer (Press & Wolf 2017); with E != H a
    # projection H → E is added before the output layer.
    tie_weights: bool = opt(False, "share the embedding matrix with the output layer")
    # None = 2 where a time budget would let one network see the text ENSEMBLE_PASSES times or more (see
    # `regularisation`): the run is then bound by the data, not by compute.
    ensemble: int | None = opt(None, "K networks trained side by side on the same windows (each its own "
                               "initialisation and dropout), predicting the mean of their next-token distributions "
                               "(default: 2 where the time budget allows one network 16+ passes over the text, "
                               "else 1)", min=1)
    # Codistillation (Anil et al. 2018): each network also learns the others' predictions, which are free here.
    distill: float | None = opt(None, "with --ensemble: share of each network's loss taken on the mean of the "
                                "other networks' next-token distributions instead of the text, 0 = none "
                                f"(default: {DISTILL} for an ensemble)", min=0, max=1)
    # A backward language model (ELMo's second direction): paired with a forward one, it starts a classifier whose
    # encoder reads both ways (python -m seqnlp.tasks.sentiment --init-from FORWARD_RUN BACKWARD_RUN).
    reverse: bool = opt(False, "a backward language model: read every text from its end, predicting the token "
                        "before; it generates the text that leads up to a prime")


@dataclass
class TokenConfig:
    """What a token is (config.json's "tokens"): a character by default; a word or a byte-level BPE subword for
    a language model that later starts a classifier (python -m seqnlp.tasks.sentiment --init-from RUN_DIR)."""

    level: str = opt("char", "token level: char, word or bpe (byte-level subwords)", choices=LEVELS)
    vocab_size: int = opt(0, "word/bpe: most tokens kept, specials included (0 = 32000 words, 16000 bpe pieces)",
                          min=0)
    min_frequency: int = opt(2, "word/bpe: rarer tokens are left out of the vocabulary", min=1)
    lowercase: bool = opt(False, "word/bpe: lowercase the text before tokenizing")
    # A full softmax costs B*T*H*V per step: at V = 16k-32k it outweighs the recurrence on a CPU, while the
    # adaptive softmax (Grave et al. 2017) computes the rare-token clusters only for the tokens that are in them
    # (benchmarks/lm_output.py). It cannot share its weights with the embedding (--tie-weights).
    softmax: str = opt("auto", "output layer: full, or adaptive (torch.nn.AdaptiveLogSoftmaxWithLoss; "
                       "auto = adaptive for word/bpe, full for char)", choices=("auto", "full", "adaptive"))


DEFAULT_VOCAB = {"word": 32000, "bpe": 16000}


def adaptive(tokens: TokenConfig) -> bool:
    """Whether the model's output layer is the adaptive softmax."""
    return tokens.softmax == "adaptive" or (tokens.softmax == "auto" and tokens.level != "char")


def train_tokenizer(texts: list[str], tokens: TokenConfig) -> Tokenizer:
    """The run's tokenizer, learnt from the training text (char level: every character seen)."""
    if tokens.level == "char":
        return Tokenizer.train(texts, level="char")
    return Tokenizer.train(texts, level=tokens.level, vocab_size=tokens.vocab_size or DEFAULT_VOCAB[tokens.level],
                           min_frequency=tokens.min_frequency, lowercase=tokens.lowercase)


@dataclass
class DataConfig:
    """How the text becomes training windows (where it comes from is the task layer's "source")."""

    batch_size: int = opt(64, "B, contiguous streams trained side by side", min=1)
    seq_length: int = opt(128, "T, characters per training window (backpropagation through time)", min=1)


# The regularisation reached when the budget allows FULL_PASSES or more passes over the training text (Tiny
# Shakespeare's 1M characters in the default 25 minutes); fewer passes scale it down on a log scale, and a text
# seen once or less gets none. Chosen on Tiny Shakespeare's validation split (issue 22).
REGULARISATION = {"dropout": 0.3, "embedding_dropout": 0.1, "weight_dropout": 0.2}
FULL_PASSES = 15
# Where one network would see the text this often in the time budget, two networks (each seeing it half as often)
# are trained side by side instead: on the Xeon one 2x768 LSTM sees Tiny Shakespeare 20 times and its validation
# loss stays flat over the last quarter of the run (issue 22).
ENSEMBLE_PASSES = 16
# Each of an ensemble's networks is regularised at this share of what it would get alone: the mean of their
# predictions already averages away part of the variance dropout fights (README, "Character-level generation").
MEMBER_SHARE = 0.5


def members(config: ModelConfig) -> int:
    """How many networks `config` trains side by side (a config saved before --ensemble existed: one)."""
    return config.ensemble or 1


def regularisation(config: ModelConfig, train_chars: int, train: Any, data: DataConfig,
                   speed: float | None = None) -> tuple[ModelConfig, float]:
    """`config` with its unset ensemble size and dropouts sized to the passes over `train_chars` that the budget
    allows each network, at `speed` training tokens/s of one network (`training_speed`; needed when a time budget
    is set), and an unset --distill resolved (DISTILL for an ensemble, else none); returns it with those passes."""
    passes = float(train.epochs)
    if all(getattr(config, name) is not None for name in REGULARISATION):  # every dropout given: nothing to scale
        return _distilled(replace(config, ensemble=members(config))), passes
    if train.time_budget:
        if speed is None:
            raise SeqnlpError("a time budget needs the measured training speed to size the regularisation")
        alone = train.time_budget * 60 * speed / max(train_chars, 1)  # passes one network would make
        config = replace(config, ensemble=config.ensemble or (2 if alone >= ENSEMBLE_PASSES else 1))
        passes = min(passes, alone / members(config))  # K networks side by side: each at 1/K of the speed
    config = replace(config, ensemble=members(config))
    if train.max_steps:
        passes = min(passes, train.max_steps * data.batch_size * data.seq_length / max(train_chars, 1))
    strength = min(1.0, max(0.0, math.log(max(passes, 1.0)) / math.log(FULL_PASSES)))
    if members(config) > 1:
        strength *= MEMBER_SHARE
    unset = {name: round(p * strength, 3) for name, p in REGULARISATION.items() if getattr(config, name) is None}
    return _distilled(replace(config, **unset)), passes


def _distilled(config: ModelConfig) -> ModelConfig:
    return config if config.distill is not None else replace(config, distill=DISTILL if members(config) > 1 else 0.0)


# On the Xeon the second and third passes of a fresh model can still run at half speed (still warming up), and a
# median of 4 later passes once read 8.9k characters/s where training then ran at 14k: both chose one network where
# the machine trains two. Warm-up and other processes only ever slow a pass down, so the fastest pass is the speed.
PROBE_WARMUP, PROBE_TIMED = 3, 6


def training_speed(config: ModelConfig, vocab_size: int, stream: Tensor, data: DataConfig, precision: str,
                   device: torch.device, adaptive: bool) -> float:
    """Training tokens/s of one network of this model on this machine, summed over the processes of a torchrun:
    forward and backward over the first training window at full regularisation, the fastest of PROBE_TIMED passes
    after PROBE_WARMUP (a few seconds). The machine decides how many passes a time budget buys: the default 2x768
    LSTM trains 14k characters/s on the Xeon with AMX and 4.7k on an AMD EPYC without (7 passes of Tiny
    Shakespeare in 25 minutes, where 2x512 gets 15 but scored worse: 1.3593 against 1.3502). RNG state and the
    real model's weights are untouched."""
    full = replace(config, ensemble=1,
                   **{name: p for name, p in REGULARISATION.items() if getattr(config, name) is None})
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = CharRNN(full, vocab_size, data.batch_size, precision=precision, adaptive=adaptive).to(device).train()
        batch = Windows(stream, data.batch_size, data.seq_length)[0].to(device)
        seconds = []
        for _ in range(PROBE_WARMUP + PROBE_TIMED):
            start = time.perf_counter()
            with autocast(device, use_bf16(precision, device)):
                loss = model(batch).loss
            loss.backward()  # type: ignore[union-attr]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    return distributed.sum_over_processes(batch.ids.numel() / min(seconds[PROBE_WARMUP:]))


def adaptive_cutoffs(vocab_size: int) -> list[int]:
    """Cluster edges of the adaptive softmax: a head of the 2000 most frequent ids (a quarter of a small
    vocabulary), then ids up to 10000 (half), then the rest (vocabularies are sorted by frequency)."""
    return sorted({c for c in (min(2000, vocab_size // 4), min(10000, vocab_size // 2)) if 0 < c < vocab_size - 1})


def adaptive_softmax(width: int, vocab_size: int) -> nn.AdaptiveLogSoftmaxWithLoss:
    """torch's adaptive softmax over `vocab_size` ids (sorted by frequency) reading `width` features.

    Under bf16 autocast its matrix products run in bf16, but on CPU autocast leaves log_softmax in bf16 too,
    which the layer's fp32 output refuses (index_copy_): its head and tail clusters hand back fp32 scores.
    """
    layer = nn.AdaptiveLogSoftmaxWithLoss(width, vocab_size, adaptive_cutoffs(vocab_size), div_value=4.0)
    for part in (layer.head, *layer.tail):
        part.register_forward_hook(lambda module, inputs, output: output.float())
    return layer


# Training settings this task starts from (flags still win). Tuned on the project's 2-core CPU for
# tiny_shakespeare (issue 6): the run stops at the time budget, and the schedule decays the learning
# rate to zero exactly there (seqnlp.trainer ends linear/cosine schedules with the budget).
# A run whose validation stops improving for `patience` evaluations ends there and keeps its best model.
# lr 5e-3: in the default pair's ~1,200 steps it beat 3e-3 on validation, 1.3023 against 1.3057 (seed means).
# Every 400 steps: scoring Tiny Shakespeare's validation text exactly, as one stream, takes the pair 18 s on the
# Xeon, so evaluating every 200 steps spent 8% of the budget on it.
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 100, "time_budget": 25.0, "lr": 5e-3, "weight_decay": 0.0,
                                  "schedule": "cosine", "warmup": 50, "eval_every": 400, "patience": 2}


# ====================================================================== the model

class CharRNN(nn.Module):
    """Embedding → RNNEncoder (unidirectional, stateful) → dropout → [projection] → Linear(V), or with
    `adaptive` an adaptive softmax (for word and subword vocabularies; the tokens need not be characters).

    forward(batch) -> Output(logits (B, T, V), loss): mean cross-entropy over the batch's real positions
    when `batch.targets` is set (with the adaptive softmax and targets, logits are the targets' log-probabilities
    (N,) instead: the full distribution is what that layer avoids computing). In training, a batch whose `index`
    (B,) (stream position of each row's first character) continues the previous batch starts from that batch's
    final state (truncated BPTT).
    """

    def __init__(self, config: ModelConfig, vocab_size: int, batch_size: int, pad_id: int = 0,
                 precision: str = "auto", adaptive: bool = False) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.adaptive = adaptive
        if adaptive and config.tie_weights:
            raise SeqnlpError("--tie-weights shares the embedding with a full softmax; add --softmax full or "
                              "leave out --tie-weights")
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.embedding_dropout = LockedDropout(config.embedding_dropout or 0.0)
        between = (config.dropout or 0.0) if config.layers > 1 else 0.0
        self.encoder = RNNEncoder(config.cell, config.embedding_size, config.hidden_size,
                                  num_layers=config.layers, dropout=between, precision=precision,
                                  weight_dropout=config.weight_dropout or 0.0, variational=True)
        self.dropout = LockedDropout(config.dropout or 0.0)
        width = self.encoder.output_dim
        self.projection = (nn.Linear(width, config.embedding_size)
                           if config.tie_weights and config.embedding_size != width else None)
        if adaptive:
            self.head: nn.Module = adaptive_softmax(width, vocab_size)
        else:
            self.head = nn.Linear(config.embedding_size if config.tie_weights else width, vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        # The truncated-BPTT carry: persistent, so checkpoints (and resumed runs) keep it. `batch_size` counts
        # the streams of all processes under torchrun: each process finds its own rows by their positions.
        parts = 2 if config.cell == "lstm" else 1
        self.register_buffer("carry_state", torch.zeros(parts, config.layers, batch_size, config.hidden_size))
        self.register_buffer("carry_next", torch.full((batch_size,), -1, dtype=torch.long))  # (B,)

    def features(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T), lengths (B,), optional state → what the output layer reads (B, T, F) and the final state."""
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        outputs, state = self.encoder(x, lengths, state)  # (B, T, H)
        outputs = self.dropout(outputs)  # (B, T, H)
        if self.projection is not None:
            outputs = self.projection(outputs)  # (B, T, E)
        return outputs, state

    def scores(self, features: Tensor) -> Tensor:
        """(..., F) → next-token scores (..., V): logits, or log-probabilities from the adaptive softmax."""
        if not self.adaptive:
            return self.head(features)  # (..., V)
        flat = features.reshape(-1, features.shape[-1]).float()  # (N, F)
        return self.head.log_prob(flat).view(*features.shape[:-1], self.vocab_size)  # (..., V)

    def target_nll(self, features: Tensor, targets: Tensor) -> Tensor:
        """Summed NLL (nats) of `targets` (B, T) given `features` (B, T, F); positions holding -100 count 0."""
        if not self.adaptive:
            return F.cross_entropy(self.head(features).float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                                   reduction="sum")
        real = targets != -100  # (B, T)
        return -self.head(features[real].float(), targets[real]).output.sum()

    def run(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T), lengths (B,), optional state → scores (B, T, V) and the final state."""
        features, state = self.features(ids, lengths, state)  # (B, T, F)
        return self.scores(features), state  # (B, T, V)

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One character per row: tokens (N,) and a state (None = zeros) → fp32 logits (N, V) and the new state.

        `RNNEncoder.step` (the fused kernel, fp32, without oneDNN), then the output layer.
        """
        out, state = self.encoder.step(self.embedding(tokens), state)  # (N, H)
        with torch.autocast(device_type=out.device.type, enabled=False):
            if self.projection is not None:
                out = self.projection(out)  # (N, E)
            return self.scores(out).float(), state  # (N, V)

    def _carried(self, index: Tensor) -> State | None:
        """The carried state when every row of this window starts where a carried row ended, else None (zero
        state). Under torchrun a process's rows are some of the carried ones, found by their positions."""
        index = index.to(self.carry_next.device)  # (B,)
        if index.shape == self.carry_next.shape and torch.equal(index, self.carry_next):
            # Copies: the buffer is overwritten after this step, while autograd still holds the state it read.
            state = self.carry_state.clone()  # (P, L, B, H)
        else:
            hit = self.carry_next[:, None] == index[None, :]  # (G, B): carried row g ended where row b starts
            if not bool(hit.any(0).all()):
                return None
            state = self.carry_state.index_select(2, hit.int().argmax(0))  # (P, L, B, H)
        return (state[0], state[1]) if self.config.cell == "lstm" else state[0]

    def forward(self, batch: Batch) -> Output:
        """Next-character scores for every position, and the mean loss when targets are given."""
        carry = self.training and batch.index is not None
        state = self._carried(batch.index) if carry else None
        features, final = self.features(batch.ids, batch.lengths, state)  # (B, T, F)
        loss = None
        if self.adaptive and batch.targets is not None:
            out = self.head(features[batch.mask].float(), batch.targets[batch.mask])  # over the N real positions
            logits, loss = out.output, out.loss  # (N,), mean NLL
        else:
            logits = self.head(features) if not self.adaptive else self.scores(features)  # (B, T, V)
        if batch.targets is not None and not self.adaptive:
            targets = batch.targets.masked_fill(~batch.mask, -100)  # (B, T)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        # (Every process's part of a window has B x T targets, so the mean over processes needs no rescaling.)
        if carry:
            final = detach_state(final)
            ends = batch.index.to(self.carry_next.device) + batch.lengths.to(self.carry_next.device)  # (B,)
            # Every process keeps every stream's state: (P, L, G, H) and (G,), G = B x processes.
            states = distributed.gather_rows(torch.stack(final) if isinstance(final, tuple) else final[None], dim=2)
            ends = distributed.gather_rows(ends, dim=0)
            if ends.shape == self.carry_next.shape:
                with torch.no_grad():
                    self.carry_state.copy_(states)
                    self.carry_next.copy_(ends)
        return Output(logits, loss)


class CharEnsemble(nn.Module):
    """K CharRNNs (`ModelConfig.ensemble`) trained side by side on the same windows, each with its own
    initialisation and dropout draws, predicting the mean of their next-token distributions.

    The training loss is the mean of the members' losses, so each member learns as it would alone. Scores are
    log-probabilities of the mixture, log(mean_k softmax(logits_k)), which sampling reads as logits. The members'
    states are concatenated along the layer axis ((K*L, B, H), h and c for an LSTM), so everything that carries,
    slices or reorders a CharRNN's state handles an ensemble's unchanged.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, batch_size: int, pad_id: int = 0,
                 precision: str = "auto", adaptive: bool = False) -> None:
        super().__init__()
        if adaptive:
            raise SeqnlpError("--ensemble mixes full softmaxes; a word or bpe model (adaptive softmax) trains one "
                              "network: leave out --ensemble, or add --softmax full")
        self.config = config
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.adaptive = False
        one = replace(config, ensemble=1)
        self.members = nn.ModuleList(CharRNN(one, vocab_size, batch_size, pad_id, precision)
                                     for _ in range(config.ensemble))

    def _split(self, state: State | None) -> list[State | None]:
        """The ensemble's state → each member's ((L, B, H) parts)."""
        k, layers = len(self.members), self.config.layers
        if state is None:
            return [None] * k
        if isinstance(state, tuple):
            return [tuple(s[i * layers:(i + 1) * layers] for s in state) for i in range(k)]
        return [state[i * layers:(i + 1) * layers] for i in range(k)]

    @staticmethod
    def _join(states: list[State]) -> State:
        if isinstance(states[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*states))  # type: ignore[arg-type]
        return torch.cat(states)  # type: ignore[arg-type]

    @staticmethod
    def mixture(scores: Sequence[Tensor]) -> Tensor:
        """K score tensors (..., V) → log of the mean of their softmaxes (..., V), in fp32."""
        logp = torch.stack([torch.log_softmax(s.float(), -1) for s in scores])  # (K, ..., V)
        return torch.logsumexp(logp, 0) - math.log(len(scores))

    def _mixed(self, call: Callable[[CharRNN, State | None], tuple[Tensor, State]],
               state: State | None) -> tuple[Tensor, State]:
        """`call(member, its state)` → (scores, state) for every member → the mixture and the joined state."""
        scores, states = zip(*(call(member, part) for member, part in zip(self.members, self._split(state))))
        return self.mixture(scores), self._join(list(states))

    def features(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T), lengths (B,), optional state → the mixture's log-probabilities (B, T, V) and the final state."""
        return self._mixed(lambda member, part: member.run(ids, lengths, part), state)

    def scores(self, features: Tensor) -> Tensor:
        return features  # `features` are already the mixture's log-probabilities

    def target_nll(self, features: Tensor, targets: Tensor) -> Tensor:
        """Summed NLL (nats) of `targets` (B, T) under the mixture; positions holding -100 count 0."""
        return F.nll_loss(features.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")

    def run(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.features(ids, lengths, state)

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One token per row (N,) → the mixture's log-probabilities (N, V) and the new state."""
        return self._mixed(lambda member, part: member.step(tokens, part), state)

    def forward(self, batch: Batch) -> Output:
        """Each member's forward (its own carried state); loss = their mean, logits = the mixture's log-probabilities."""
        outputs = [member(batch) for member in self.members]
        with torch.no_grad():
            logits = self.mixture([o.logits for o in outputs])  # (B, T, V)
        losses = [o.loss for o in outputs if o.loss is not None]
        share = self.config.distill
        if share and self.training and losses:  # losses: the batch has targets
            logp = [torch.log_softmax(o.logits.float(), -1)[batch.mask] for o in outputs]  # (N, V) each
            probs = [p.detach().exp() for p in logp]
            for k in range(len(losses)):
                peers = torch.stack([p for j, p in enumerate(probs) if j != k]).mean(0)  # (N, V)
                losses[k] = (1 - share) * losses[k] - share * (peers * logp[k]).sum(-1).mean()
        return Output(logits, torch.stack(losses).mean() if losses else None)


def build_model(config: ModelConfig, vocab_size: int, batch_size: int, pad_id: int = 0, precision: str = "auto",
                adaptive: bool = False) -> CharRNN | CharEnsemble:
    """The language model `config` describes: one CharRNN, or a CharEnsemble of `config.ensemble` of them."""
    if members(config) > 1:
        return CharEnsemble(config, vocab_size, batch_size, pad_id, precision, adaptive)
    return CharRNN(config, vocab_size, batch_size, pad_id, precision, adaptive)


# ====================================================================== streams and windows

class Windows(Sequence[Batch]):
    """One epoch of training windows over a token stream (what the trainer iterates).

    The stream, shifted by `offset`, is cut into `batch_size` contiguous rows of equal length; window j holds
    characters [j*T, (j+1)*T) of every row, targets shifted by one, and `index` = each row's stream position.
    With `parts` processes (torchrun) the stream is cut into batch_size x parts rows, and item i is part i % parts
    (batch_size rows) of window i // parts: process r, which trains on every parts-th item from r on, reads the
    same rows window after window.
    """

    def __init__(self, stream: Tensor, batch_size: int, seq_length: int, offset: int = 0, parts: int = 1) -> None:
        rows = batch_size * parts
        usable = stream.numel() - 1 - offset
        self.row_length = usable // rows
        n = self.row_length * rows
        self.inputs = stream[offset:offset + n].view(rows, self.row_length)  # (G, N/G)
        self.targets = stream[offset + 1:offset + 1 + n].view(rows, self.row_length)  # (G, N/G)
        self.starts = offset + torch.arange(rows) * self.row_length  # (G,)
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.parts = parts
        self.windows = self.row_length // seq_length

    def __len__(self) -> int:
        return self.windows * self.parts

    def __getitem__(self, i: int | slice) -> Any:  # type: ignore[override]
        if isinstance(i, slice):  # the trainer's per-process share
            return [self[k] for k in range(len(self))[i]]
        if not 0 <= i < len(self):
            raise IndexError(i)
        j, part = divmod(i, self.parts)
        rows = slice(part * self.batch_size, (part + 1) * self.batch_size)
        cut = slice(j * self.seq_length, (j + 1) * self.seq_length)
        lengths = torch.full((self.batch_size,), self.seq_length, dtype=torch.long)  # (B,)
        return Batch(ids=self.inputs[rows, cut], lengths=lengths, targets=self.targets[rows, cut],
                     index=self.starts[rows] + j * self.seq_length)  # ids, targets (B, T); index (B,)


def epoch_offset(epoch: int, seed: int, seq_length: int, slack: int | None = None) -> int:
    """Where epoch `epoch`'s rows start: 0 first (the <bos> is read once), then a seeded shift in [0, T)
    so that window boundaries, where the gradient is cut, move between epochs. `slack` (characters left
    over by epoch 0's windows) caps the shift so every epoch has as many windows as the first."""
    if epoch == 0:
        return 0
    high = seq_length if slack is None else max(1, min(seq_length, slack + 1))
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return int(torch.randint(0, high, (1,), generator=g))


def epoch_windows(stream: Tensor, batch_size: int, seq_length: int, epoch: int, seed: int, parts: int = 1) -> Windows:
    """The training windows of one epoch (deterministic in `seed` and `epoch`, as resuming requires)."""
    first = Windows(stream, batch_size, seq_length, parts=parts)
    slack = stream.numel() - 1 - batch_size * parts * seq_length * first.windows
    return Windows(stream, batch_size, seq_length, epoch_offset(epoch, seed, seq_length, slack), parts)


def encode_rows(tokenizer: Tokenizer, texts: Sequence[str], reverse: bool = False) -> list[list[int]]:
    """The ids of each text, in reading order or (a backward model's) last token first."""
    rows = tokenizer.encode_batch(list(texts))
    return [r[::-1] for r in rows] if reverse else rows


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
                features, state = model.features(x, part.to(device), state)  # (B', C, F)
                real = torch.arange(x.shape[1], device=device)[None, :] < part.to(device)[:, None]  # (B', C)
                nll = model.target_nll(features, y.masked_fill(~real, -100))
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

class _StepDecoder:
    """`seqnlp.decoding.Decoder` over a CharRNN (`step`): one character per step, special tokens never produced."""

    def __init__(self, model: CharRNN, banned: Sequence[int], run_dir: str | Path = "memory") -> None:
        self.model = model
        self.run_dir = run_dir
        self.banned = torch.tensor(list(banned), dtype=torch.long)  # (S,)

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        logits, state = self.model.step(tokens, state)  # (N, V)
        logits = check_finite(logits, f"the model in {self.run_dir}")
        logits[:, self.banned.to(logits.device)] = float("-inf")
        return logits, state

    def reorder(self, state: State, index: Tensor) -> State:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)


def check_sampling(length: int, temperature: float, top_k: int | None, top_p: float | None,
                   num_samples: int = 1) -> None:
    """SeqnlpError naming the flag of a sampling setting outside its range (before any model is loaded)."""
    check_decoding(temperature, top_k, top_p, length=length, flags=True)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise SeqnlpError(f"--num-samples must be >= 1 (an integer), not {num_samples!r}")


class CharLM:
    """A trained language model with its tokenizer: sample text, score text.

        lm = seqnlp.load("runs/generation-...")
        lm.generate(prime="ROMEO:", length=300, temperature=0.8, seed=1)  # the prime and 300 new characters
        lm.log_prob("To be, or not to be")  # total natural-log probability of its characters

    The tokens are characters by default; a word or bpe model generates `length` tokens and scores texts with
    the same protocol (per character = the text's total NLL over its characters; `nll` then also counts tokens).
    """

    def __init__(self, model: CharRNN, tokenizer: Tokenizer, device: str | torch.device = "cpu",
                 precision: str = "auto", run_dir: str | Path = "memory") -> None:
        self.device = resolve_device(str(device))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.bf16 = use_bf16(precision, self.device)
        specials = [tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id]
        self.run_dir = run_dir
        self.reverse = bool(getattr(model.config, "reverse", False))  # a backward model reads and writes end first
        self._decoder = _StepDecoder(self.model, specials, run_dir)
        self._chars = [tokenizer.decode([i], skip_special=False) if i not in specials else ""
                       for i in range(tokenizer.vocab_size)]

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of `text` that the tokenizer maps to <unk> (unseen in training)."""
        if not isinstance(text, str):
            raise SeqnlpError(f"expected a text (str), not {type(text).__name__} {text!r:.60}")
        distinct = sorted(set(text))
        encoded = self.tokenizer.encode_batch(distinct)
        return [c for c, ids in zip(distinct, encoded) if ids == [self.tokenizer.unk_id]]

    def check_prime(self, prime: str) -> None:
        """SeqnlpError naming the characters of `prime` never seen in training (the model has no input for them).

        Word and bpe models read any prime (an unseen word is <unk>; byte-level BPE covers every string)."""
        if self.tokenizer.level != "char":
            check_texts([prime], "the prime", blank_ok=True)
            return
        unknown = self.unknown_characters(prime)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise SeqnlpError(f"the prime holds {len(unknown)} character(s) never seen in training: {shown}; "
                              "remove or replace them")

    def _prime_state(self, prime: str) -> tuple[State | None, Tensor]:
        """State after reading <bos> + prime[:-1], and the last input character (N=1); a backward model reads
        the prime from its end."""
        self.check_prime(prime)
        ids = [self.tokenizer.bos_id] + encode_rows(self.tokenizer, [prime], self.reverse)[0]
        inputs = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)  # (1, P)
        state = None
        if inputs.shape[1] > 0:
            lengths = torch.tensor([inputs.shape[1]], device=self.device)  # (1,)
            _, state = self.model.features(inputs, lengths)
        return state, torch.tensor([ids[-1]], dtype=torch.long, device=self.device)  # (1,)

    @torch.no_grad()
    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, greedy_decoding: bool = False,
                 on_text: Callable[[str], None] | None = None) -> str:
        """The prime followed by `length` sampled characters (most likely ones with greedy_decoding).

        An empty prime starts a new text (from <bos>). The same seed gives the same text. `on_text` receives
        each new character as it is produced (for streaming). A backward model (--reverse) writes the text that
        leads up to the prime, from its end: `on_text` gets the characters last first, the result reads forwards.
        """
        check_decoding(temperature, top_k, top_p, length=length)
        with autocast(self.device, self.bf16):
            state, start = self._prime_state(prime)
            if greedy_decoding:
                with native_kernels():
                    ids = greedy(self._decoder, state, start, length, eos_id=None)[0]
                text = self._written(prime, ids)
                if on_text is not None and text != prime:
                    on_text(text[len(prime):] if not self.reverse else text[:len(text) - len(prime)])
                return text
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())

            def emit(tokens: Tensor) -> None:
                if on_text is not None:  # a word after the first (or after a prime) follows a space
                    on_text(self._text(prime or ("" if not emitted else " "), [int(tokens[0])]))
                emitted.append(int(tokens[0]))

            emitted: list[int] = []
            with native_kernels():  # one switch for the whole loop; the per-step switch inside is then a no-op
                ids_t = sample(self._decoder, state, start, length, temperature=temperature, top_k=top_k,
                               top_p=top_p, generator=generator, on_token=emit)  # (1, L)
        return self._written(prime, ids_t[0].tolist())

    def _written(self, prime: str, ids: list[int]) -> str:
        """The prime and the text of the ids generated from it, in reading order: a backward model's text comes
        before the prime, its ids last first."""
        if not self.reverse:
            return prime + self._text(prime, ids)
        text = self._text("", ids[::-1])
        return text + (" " if self.tokenizer.level == "word" and prime and text else "") + prime

    def _text(self, prime: str, ids: list[int]) -> str:
        """The text of generated ids, to follow `prime`. Characters are joined; words and subwords are decoded
        together (a bpe piece may hold part of a character), words after a space. (Streaming shows word and bpe
        tokens one by one, so the streamed text may differ from the returned one in spacing and in the
        characters split between pieces.)"""
        if self.tokenizer.level == "char":
            return "".join(self._chars[i] for i in ids)
        text = self.tokenizer.decode(ids)
        return (" " if self.tokenizer.level == "word" and prime and text else "") + text

    def stream(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None) -> Iterator[str]:
        """The characters `generate` samples after `prime`, yielded one by one as they are drawn.

        The same seed gives the same characters as `generate`. Nothing is held between characters (no
        autocast or kernel switch), so other work may run on the same thread while the stream waits.
        """
        if self.reverse:
            raise SeqnlpError(f"the model in {self.run_dir} is a backward language model: it writes a text from its "
                              "end, which cannot stream in reading order; use generate()")
        check_decoding(temperature, top_k, top_p, length=length)
        return self._stream(prime, length, temperature, top_k, top_p, seed)

    @torch.no_grad()
    def _stream(self, prime: str, length: int, temperature: float, top_k: int | None, top_p: float | None,
                seed: int | None) -> Iterator[str]:
        with autocast(self.device, self.bf16):
            state, start = self._prime_state(prime)
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        for tokens in sample_steps(self._decoder, state, start, length, temperature=temperature, top_k=top_k,
                                   top_p=top_p, generator=generator):  # (1,) each
            yield self._chars[int(tokens[0])]

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> tuple[float, int] | tuple[float, int, int]:
        """(total NLL in nats, characters) of `texts`, each read from <bos> (the scoring protocol); a word or bpe
        model adds the number of tokens predicted: (nats, characters, tokens)."""
        chars = sum(len(t) for t in texts)  # of the text as given, which the scoring protocol divides by
        rows = encode_rows(self.tokenizer, [clean(t) for t in texts] if self.tokenizer.level != "char" else texts,
                           self.reverse)
        with autocast(self.device, self.bf16):
            total, count = split_nll(self.model, rows, self.tokenizer.bos_id, self.device)
        total = check_finite(total, f"the model in {self.run_dir}")
        if self.tokenizer.level == "char":
            return total, count
        return total, chars, count

    def log_prob(self, text: str) -> float:
        """Total natural-log probability of the characters of `text`, each given the ones before it."""
        check_texts([text], "log_prob()", blank_ok=True)
        return -self.nll([text])[0] if text else 0.0

    def score(self, texts: Sequence[str]) -> list[Score]:
        """nats/char, bits/char and perplexity of `texts`."""
        return lm_scores(*self.nll(texts)[:2])

    def next_char_probabilities(self, prime: str, temperature: float = 1.0, top_k: int | None = None,
                                top_p: float | None = None) -> dict[str, float]:
        """{character: probability} of the character after `prime`, as sampling would draw it."""
        with torch.no_grad(), autocast(self.device, self.bf16):
            state, start = self._prime_state(prime)
            logits, _ = self._decoder.step(start, state)  # (1, V)
            probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)[0]  # (V,)
        return {self._chars[i]: float(p) for i, p in enumerate(probs.tolist()) if p > 0 and self._chars[i]}

    def onnx_parts(self) -> dict[str, dict[str, Any]]:
        """What seqnlp.export writes: "step", tokens (N,) and the state (h, and c for an LSTM: (L, N, H) each) →
        logits (N, V) and the new state (h_out[, c_out])."""
        config = self.model.config
        names = ["h", "c"] if config.cell == "lstm" else ["h"]
        layers = config.layers * members(config)  # an ensemble's members' states, one after another
        state = tuple(torch.randn(layers, 3, config.hidden_size) for _ in names)  # (L, N, H) each
        tokens = torch.tensor([self.tokenizer.bos_id, self.tokenizer.unk_id, self.tokenizer.bos_id])  # (N,)

        def step(tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            logits, new = self.model.step(tokens, state if len(state) == 2 else state[0])
            return (logits, *(new if isinstance(new, tuple) else (new,)))

        return {"step": {"module": step, "inputs": {"tokens": tokens, **dict(zip(names, state))},
                         "outputs": ["logits", *(f"{n}_out" for n in names)],
                         "axes": {"tokens": {0: "rows"}, "logits": {0: "rows"},
                                  **{n + s: {1: "rows"} for n in names for s in ("", "_out")}}}}


class _OnnxCharRNN(nn.Module):
    """An exported "step" in the place of CharLM's model: `step` runs it, `run` steps through each character."""

    def __init__(self, part: Callable[..., tuple[Tensor, ...]], config: ModelConfig, pad_id: int) -> None:
        super().__init__()
        self.part, self.config, self.pad_id = part, config, pad_id

    def step(self, tokens: Tensor, state: State | None) -> tuple[Tensor, State]:
        if state is None:
            zeros = torch.zeros(self.config.layers * members(self.config), tokens.shape[0],
                                self.config.hidden_size)  # (L, N, H)
            state = (zeros, zeros) if self.config.cell == "lstm" else zeros
        logits, *new = self.part(tokens, *(state if isinstance(state, tuple) else (state,)))  # (N, V)
        return logits, (tuple(new) if len(new) == 2 else new[0])

    def features(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.run(ids, lengths, state)  # the exported step ends in the logits: they are its features

    def target_nll(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Summed NLL (nats) of `targets` (B, T) given `logits` (B, T, V); positions holding -100 count 0."""
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")

    def run(self, ids: Tensor, lengths: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """ids (B, T), lengths (B,) → logits (B, T, V) and each row's state after its own last character."""
        logits = []
        for t in range(ids.shape[1]):
            out, new = self.step(ids[:, t], state)  # (B, V)
            real = (lengths > t)[None, :, None]  # (1, B, 1): rows past their length keep their state
            state = new if state is None else (
                tuple(torch.where(real, n, o) for n, o in zip(new, state)) if isinstance(new, tuple)
                else torch.where(real, new, state))
            logits.append(out)
        return torch.stack(logits, dim=1), state  # (B, T, V)


# ====================================================================== the recipe

def encode_stream(tokenizer: Tokenizer, texts: Sequence[str], chunk: int = 4096, reverse: bool = False) -> Tensor:
    """(N,) the <bos>-separated id stream of `texts` (each text's ids backwards with `reverse`), encoded a chunk
    of texts at a time: a list of Python ints per text would take ~36 bytes a token (a gigabyte for IMDB's 75k
    reviews)."""
    parts = [to_stream(encode_rows(tokenizer, texts[i:i + chunk], reverse), tokenizer.bos_id)
             for i in range(0, len(texts), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)  # (N,)


def prepare(run: Run) -> Prepared:
    """Text → tokenizer (char by default) → one <bos>-separated stream → windows of the stateful language model."""
    data: DataConfig = run.settings["data"]
    tokens: TokenConfig = run.settings["tokens"]
    train_cfg = run.settings["train"]
    t0 = time.perf_counter()
    raw = {role: [t for t in check_texts(run.rows(role)[0]["text"], run.where(role), missing_ok=True, blank_ok=True)
                  if t] for role in ("train", "validation", "test")}
    read = (lambda t: t) if tokens.level == "char" else clean  # a char model keeps every character it is given
    texts = {role: [read(t) for t in rows] for role, rows in raw.items()}
    for role, rows in texts.items():
        if not rows:
            raise SeqnlpError(f"{run.where(role)} holds no text")
    tokenizer = run.tokenizer(TOKENIZER_FILE, lambda: train_tokenizer(texts["train"], tokens))
    reverse = run.settings["model"].reverse
    encoded = {role: encode_rows(tokenizer, texts[role], reverse) for role in ("validation", "test")}
    stream = encode_stream(tokenizer, texts["train"], reverse=reverse)  # (N,)
    # Per character of the text as given (a <br /> read as a space still counts its six characters), as scoring counts.
    chars = {role: sum(len(r) for r in rows) for role, rows in raw.items()}
    unit = "character" if tokens.level == "char" else f"{tokens.level} token"
    # Flags that cannot fit the text fail before anything is printed about the data.
    if len(Windows(stream, data.batch_size, data.seq_length, parts=run.world)) == 0:
        processes = f" x {run.world} processes" if run.world > 1 else ""
        raise SeqnlpError(f"the training text ({chars['train']:,} characters) is too short for --batch-size "
                          f"{data.batch_size} x --seq-length {data.seq_length}{processes}; lower them")
    for role in ("validation", "test"):
        unknown = sum(r.count(tokenizer.unk_id) for r in encoded[role])
        if unknown:
            print(f"note: {unknown} {unit}(s) of the {role} split never occur in train; they count as <unk>",
                  file=sys.stderr)
    counted = "" if tokens.level == "char" else (f" ({stream.numel() - len(texts['train']):,} train, "
                                                 f"{sum(map(len, encoded['validation'])):,} validation tokens)")
    print(f"data: {run.bench.name} — train {chars['train']:,}, validation {chars['validation']:,}, "
          f"test ({run.bench.split_name()}) {chars['test']:,} characters{counted}; {tokens.level} vocabulary "
          f"{tokenizer.vocab_size} (4 special); prepared in {time.perf_counter() - t0:.1f}s", flush=True)
    # The passes the budget allows, counted in tokens at the speed measured here.
    config, speed = run.settings["model"], None
    if adaptive(tokens):  # an adaptive softmax gives no full distribution to mix: one network unless asked
        config = replace(config, ensemble=members(config))
    if train_cfg.time_budget and any(getattr(config, name) is None for name in REGULARISATION):
        speed = training_speed(config, tokenizer.vocab_size, stream, data, train_cfg.precision, run.device,
                               adaptive(tokens))
    config, passes = regularisation(config, stream.numel(), train_cfg, data, speed)
    run.settings["model"] = config  # saved in config.json as resolved
    k = members(config)
    pace = "" if speed is None else (f" (measured here: one network trains {speed:,.0f} {tokens.level} tokens/s, "
                                     f"so the budget allows {'each network ' if k > 1 else ''}about {passes:.1f} "
                                     "passes over the training text)")
    print(f"model: {config.layers}x{config.hidden_size} {config.cell}{f', ensemble of {k}' if k > 1 else ''}; "
          f"regularisation: dropout {config.dropout}, embedding dropout {config.embedding_dropout}, weight dropout "
          f"{config.weight_dropout}{pace}"
          + (f"; codistillation {config.distill}" if k > 1 and config.distill else ""), flush=True)
    if config.distill and k == 1:
        print("note: --distill has no effect on one network; it needs --ensemble 2 or more", file=sys.stderr)
    model = build_model(config, tokenizer.vocab_size, data.batch_size * run.world, tokenizer.pad_id,
                        precision=train_cfg.precision, adaptive=adaptive(tokens))
    example = Windows(stream, 1, min(data.seq_length, 32))[0]
    example.index = None

    def validate(m: nn.Module) -> dict[str, float]:
        total, count = split_nll(m, encoded["validation"], tokenizer.bos_id, run.device)  # type: ignore[arg-type]
        text = CharLM(m, tokenizer, device=run.device, precision=train_cfg.precision).generate(  # type: ignore[arg-type]
            "", SAMPLE_EVERY_EVAL, temperature=0.8, seed=train_cfg.seed)
        print(f"--- sample (temperature 0.8) ---\n{text}\n---", file=sys.stderr, flush=True)
        if tokens.level == "char":
            return {s.name: s.value for s in lm_scores(total, count)}
        # Per character over the text itself (comparable with a char model), and per token.
        return {**{s.name: s.value for s in lm_scores(total, chars["validation"])},
                "token_perplexity": math.exp(total / max(count, 1))}

    return Prepared(model=model, validate=validate, example=example, artifacts={TOKENIZER_FILE: tokenizer.to_str()},
                    train_batches=lambda epoch: epoch_windows(stream, data.batch_size, data.seq_length, epoch,
                                                              train_cfg.seed, run.world))


def tune(init: Any, texts: Sequence[str], steps: int, lr: float, device: torch.device, bf16: bool,
         seed: int) -> dict[str, Tensor]:
    """The weights of a saved language model run (`runner.InitRun`) after `steps` more training windows over
    `texts`: ULMFiT's second stage, the language model fine-tuned on the target task's text before it starts the
    classifier. Plain AdamW at a constant `lr`, gradients clipped at 1, state carried across windows."""
    settings, tokenizer = init.settings, init.tokenizer()
    stream = encode_stream(tokenizer, list(texts), reverse=settings["model"].reverse)  # (N,)
    data: DataConfig = settings["data"]
    rows = max(1, min(data.batch_size, (stream.numel() - 1) // (2 * data.seq_length)))  # short texts: fewer rows
    model = CharRNN(settings["model"], tokenizer.vocab_size, rows, tokenizer.pad_id,
                    precision=settings["train"].precision, adaptive=adaptive(settings["tokens"])).to(device)
    model.load_state_dict({k: v for k, v in init.weights().items() if not k.startswith("carry_")}, strict=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    done, epoch = 0, 0
    while done < steps:
        windows = epoch_windows(stream, rows, data.seq_length, epoch, seed)
        if len(windows) == 0:
            raise SeqnlpError(f"the target text ({stream.numel():,} tokens) is too short for one language-model "
                              f"window of {data.seq_length} tokens; leave out --lm-steps")
        for batch in windows:
            if done == steps:
                break
            with autocast(device, bf16):
                loss = model(batch.to(device)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done += 1
        epoch += 1
    print(f"language model tuned on the target text: {steps} windows of {rows} x {data.seq_length} tokens "
          f"({stream.numel():,} tokens in all), last loss {float(loss.detach()):.3f}", flush=True)  # type: ignore[union-attr]
    return {k: v.detach() for k, v in model.state_dict().items()}


def load(run_dir: str | Path, device: str = "cpu") -> CharLM:
    """A saved generation run (config.json, tokenizer.json, model.safetensors) as a CharLM."""
    return load_run_of(SPEC, run_dir, device)


def _load(run_dir: Path, settings: dict[str, Any], device: str) -> CharLM:
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    precision = settings["train"].precision
    streams = settings["data"].batch_size * int(settings.get("world_size", 1))  # the carry of every process's streams
    model = build_model(settings["model"], tokenizer.vocab_size, streams, tokenizer.pad_id, precision=precision,
                        adaptive=adaptive(settings["tokens"]))
    load_model_weights(run_dir, model, "best")
    return CharLM(model, tokenizer, device=device, precision=precision, run_dir=run_dir)


def _from_onnx(folder: Path, settings: dict[str, Any], parts: dict[str, Any]) -> CharLM:
    """A CharLM over an ONNX export of a run (seqnlp.export.load_onnx): generate, log_prob and score step by step."""
    tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    return CharLM(_OnnxCharRNN(parts["step"], settings["model"], tokenizer.pad_id), tokenizer, precision="fp32",
                  run_dir=folder)


def describe(settings: dict[str, Any]) -> str:
    """The model's name in results: '2xlstm 128/512 char', '2xlstm 128/768 char, ensemble of 2, codistilled 0.5'."""
    config: ModelConfig = settings["model"]
    tokens: TokenConfig = settings["tokens"]
    level = "char" if tokens.level == "char" else f"{tokens.level} {tokens.vocab_size or DEFAULT_VOCAB[tokens.level]}" + (
        " adaptive" if adaptive(tokens) else "")
    ensemble = f", ensemble of {members(config)}" + (f", codistilled {config.distill}" if config.distill else "")
    return f"{config.layers}x{config.cell} {config.embedding_size}/{config.hidden_size} {level}" + (
        " tied" if config.tie_weights else "") + (ensemble if members(config) > 1 else "") + (
        ", backward" if config.reverse else "")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prime", default="", help="text to start from (default: a new text, from <bos>)")
    p.add_argument("--length", type=int, default=500, help="characters to generate after the prime (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; below 1 is more conservative (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely characters")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text "
                   "(default: a fresh one)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples; sample i uses seed + i")
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")


def _generate(args: argparse.Namespace, load_model: Callable[[], CharLM]) -> int:
    """Stream sampled text to stdout."""
    check_sampling(args.length, args.temperature, args.top_k, args.top_p, args.num_samples)
    lm = load_model()
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
            # A forward model's text streams as it is written; a backward one's is written from the end, so it
            # is shown whole, in reading order, when done.
            if not lm.reverse:
                write(args.prime)
            text = lm.generate(args.prime, args.length, args.temperature, args.top_k, args.top_p, seed=seed + i,
                               greedy_decoding=args.greedy, on_text=None if lm.reverse else write)
            write((text if lm.reverse else "") + "\n")
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not raise again
    return 0


COMMANDS = {"generate": Command("Sample text from a trained language model, streamed as it is produced.",
                              _generate_arguments, _generate)}

# Per-benchmark settings (flags still win). imdb_lm: the language model that starts IMDB's and SST-2's classifiers
# (python -m seqnlp.tasks.sentiment --recipe pretrained): lowercased byte-level BPE (SST-2 is lowercase), an adaptive
# softmax over 16k pieces (benchmarks/lm_output.py), one LSTM layer of 512 and light dropout. Sized by
# benchmarks/lm_output.py on the Xeon: 1x512/256 trains 9.8k tokens/s (1.5 passes over the 21M tokens in the
# budget), 1x1024/400 4.1k (0.6 passes), and the classifier it starts must fine-tune within 20 minutes.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "imdb_lm": {"tokens": {"level": "bpe", "vocab_size": 16000, "lowercase": True},
                "model": {"layers": 1, "hidden_size": 512, "embedding_size": 256, "dropout": 0.1,
                          "embedding_dropout": 0.05, "weight_dropout": 0.1},
                "data": {"batch_size": 64, "seq_length": 70},
                "train": {"time_budget": 55.0, "lr": 2e-3, "warmup": 200, "eval_every": 500, "patience": 4}},
}

SPEC = TaskSpec(
    name=TASK, summary="Train a character language model (default: 2x768 LSTM on Tiny Shakespeare for 25 "
                       "minutes) and score it in nats/char.",
    sections={"model": ModelConfig, "data": DataConfig, "tokens": TokenConfig}, default_benchmark="tiny_shakespeare",
    train_defaults=TRAIN_DEFAULTS, presets=PRESETS, metric="nats_per_char", higher_is_better=False, prepare=prepare,
    load=_load, score=scoring.language_model, describe=describe, baseline=baselines.fit_char_ngram, onnx=_from_onnx,
    usage=('{module} generate --model {run} --prime "ROMEO:" --length 500',),
    commands=COMMANDS,
)


main = partial(run_main, SPEC)  # python -m seqnlp.tasks.generation [train|evaluate|...] ...

if __name__ == "__main__":
    sys.exit(main())
