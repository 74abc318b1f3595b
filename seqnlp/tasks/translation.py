"""Translation: a recurrent encoder–decoder with attention, scored by sacreBLEU (`python -m seqnlp.tasks.translation`).

This module is *how* a translation task is trained and scored (code). *Which* dataset, splits, columns and
metrics make a benchmark is data: the top-level tasks/*.toml files (default: tasks/multi30k_de_en.toml).

The path reads straight through:
source/target strings → BPE ids (joint or separate vocabularies) → length-bucketed padded `Batch`
→ bidirectional `RNNEncoder` → bridge (linear + tanh) into the decoder's initial state
→ teacher-forced decoder RNN over the whole target at once → attention over the encoder outputs for all
target steps at once (Luong-style: after the RNN, so training has no per-token Python loop)
→ attentional vector tanh(W[h; context]) → logits through the (tied) target embedding → `Output(logits, loss)`.
Input feeding (the previous attentional vector fed into the next step) is optional; it needs a per-step
loop in training, so it is off by default.

Decoding uses `seqnlp.decoding.greedy` / `beam_search` through the step protocol (`Seq2Seq.step`,
`Seq2Seq.reorder`). BLEU and chrF are sacreBLEU corpus scores of detokenized hypotheses against the raw
references (`seqnlp.metrics`); perplexity is exp(total target-token NLL / real target tokens).

Subcommands: train (default), translate, evaluate, attention (heatmap PNG). Library: `load(run_dir)`
returns a `Translator` with `.translate(texts, beam=5)`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqnlp import baselines, distributed, scoring
from seqnlp.config import opt
from seqnlp.decoding import check_decoding
from seqnlp.data import Batch, BucketBatchSampler, check_texts, deal, pad
from seqnlp.device import resolve_device
from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError, check_finite
from seqnlp.precision import recurrence
from seqnlp.plots import heatmap
from seqnlp.tasks.runner import Command, Prepared, Run, TaskSpec, load_run_of, main as run_main
from seqnlp.tokenization import BOS, EOS, PAD, Tokenizer
from seqnlp.trainer import Output, load_model_weights

TASK = "translation"
DEFAULT_BENCHMARK = "multi30k_de_en"
JOINT_TOKENIZER = "tokenizer.json"
SOURCE_TOKENIZER = "source_tokenizer.json"
TARGET_TOKENIZER = "target_tokenizer.json"
MAX_SOURCE_FACTOR = 4  # translate/evaluate refuse sources longer than this many times the training max_length


# ====================================================================== configuration

@dataclass
class ModelConfig:
    """The network. Sizes follow OpenNMT's `brnn`: the encoder's two directions split `hidden_size`."""

    cell: str = opt("gru", "recurrent cell of encoder and decoder", choices=("gru", "lstm"))
    layers: int = opt(2, "encoder layers (bidirectional)", min=1)
    # The decoder starts from the top `decoder_layers` encoder layers' final states, so it cannot be deeper.
    decoder_layers: int = opt(1, "decoder layers (at most --layers)", min=1)
    hidden_size: int = opt(512, "decoder state size; each encoder direction gets half", min=2)
    embedding_size: int = opt(256, "token embedding size (also the attentional vector's, for tying)", min=1)
    dropout: float = opt(0.3, "dropout on embeddings, between layers and before the output layer", min=0, max=0.95)
    attention: str = opt("multiplicative", "attention score: additive (Bahdanau) or multiplicative (Luong general)",
                         choices=("additive", "multiplicative"))
    input_feeding: bool = opt(False, "feed the previous attentional vector into the decoder (per-step loop: slower)")
    tie_embeddings: bool = opt(True, "share the target embedding matrix with the output projection")
    # With a joint vocabulary the source and target can share one embedding matrix too.
    share_embeddings: bool = opt(False, "share source and target embeddings (joint vocabulary only)")
    label_smoothing: float = opt(0.1, "label smoothing of the training loss (evaluation NLL never smooths)",
                                 min=0, max=0.9)
    # Measured, not fixed: a GRU gains far more from bf16 on an AMD EPYC than on a Xeon, and a CPU without
    # bf16 instructions loses by it (issue 21).
    rnn_precision: str = opt("auto", "encoder recurrence precision: auto = the faster of fp32 and bf16 as measured "
                         "on this machine (seqnlp.precision); --precision fp32 or bf16 fixes it as well",
                         choices=("auto", "fp32", "bf16"))


@dataclass
class DataConfig:
    """Tokenization and batching."""

    tokenizer: str = opt("bpe", "tokenizer level", choices=("bpe", "word", "char"))
    vocab_size: int = opt(8000, "vocabulary size per tokenizer (bpe: merges + 260 byte/special tokens)", min=5)
    joint_vocab: bool = opt(True, "one tokenizer for source and target (else one each)")
    lowercase: bool = opt(False, "lowercase both sides (BLEU is then scored against lowercased output)")
    batch_size: int = opt(128, "most sentence pairs per batch", min=1)
    max_tokens: int = opt(0, "also cap batches at this many padded tokens per side (0 = no cap)", min=0)
    max_length: int = opt(100, "truncate training sequences to this many tokens", min=2)
    eval_batch_size: int = opt(200, "sentences per decoding batch", min=1)


@dataclass
class DecodeConfig:
    """How hypotheses are searched for after training (validation during training is always greedy)."""

    beam: int = opt(5, "beam size for the final test score and translate/evaluate (1 = greedy)", min=1)
    length_penalty: float = opt(1.0, "beam scores are log-prob / length ** this", min=0)
    # max target length = max_len_a * source length + max_len_b (in tokens)
    max_len_a: float = opt(1.5, "max output length per source token", min=0)
    max_len_b: int = opt(10, "max output length added to max_len_a * source length", min=1)


# The reference configuration for the default benchmark, tuned on this project's 2-core CPU; explicit
# flags win over these (seqnlp.config.resolve: defaults < these < flags). 24 epochs take about 50 minutes
# there (results/multi30k_de_en/bigru_attention_60min.json); on a slower machine the 60-minute budget
# stops the run first, and the cosine schedule still ends with it (seqnlp.trainer).
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 24, "time_budget": 60.0, "lr": 2e-3, "schedule": "cosine",
                                  "warmup": 100, "weight_decay": 0.0, "clip_norm": 1.0}


# ====================================================================== model

class Attention(nn.Module):
    """Masked attention of decoder states over encoder outputs, for any number of query steps at once.

    additive (Bahdanau): score = v · tanh(W_q q + W_k k); multiplicative (Luong "general"): score = q · W k.
    Padded source positions get weight exactly 0.
    """

    def __init__(self, kind: str, query_dim: int, memory_dim: int) -> None:
        super().__init__()
        if kind not in ("additive", "multiplicative"):
            raise SeqnlpError(f"unknown attention {kind!r}; use additive or multiplicative")
        self.kind = kind
        self.key = nn.Linear(memory_dim, query_dim, bias=kind == "additive")
        if kind == "additive":
            self.query = nn.Linear(query_dim, query_dim, bias=False)
            self.score = nn.Linear(query_dim, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """Project encoder outputs (B, T, D) once per source: (B, T, H)."""
        return self.key(memory)  # (B, T, H)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, U, H), keys (B, T, H), memory (B, T, D), mask (B, T) bool → context (B, U, D), weights (B, U, T)."""
        if self.kind == "additive":
            q = self.query(query)  # (B, U, H)
            scores = self.score(torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))).squeeze(3)  # (B, U, T)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, U, T)
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))  # (B, U, T)
        weights = scores.softmax(-1)  # (B, U, T)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (B, U, D)
        return context, weights


class Seq2Seq(nn.Module):
    """Bidirectional RNN encoder + attentional RNN decoder; implements seqnlp.decoding's step protocol."""

    def __init__(self, config: ModelConfig, source_vocab: int, target_vocab: int, precision: str = "auto") -> None:
        super().__init__()
        c = self.config = config
        if c.decoder_layers > c.layers:
            raise SeqnlpError(f"--decoder-layers {c.decoder_layers} exceeds --layers {c.layers}; the decoder "
                              "starts from the top encoder layers' final states")
        if c.hidden_size % 2:
            raise SeqnlpError(f"--hidden-size must be even (the two encoder directions split it), not {c.hidden_size}")
        if c.share_embeddings and source_vocab != target_vocab:
            raise SeqnlpError("--share-embeddings needs one joint vocabulary; add --joint-vocab")
        E, H = c.embedding_size, c.hidden_size
        self.target_embed = nn.Embedding(target_vocab, E, padding_idx=PAD)
        self.source_embed = self.target_embed if c.share_embeddings else nn.Embedding(source_vocab, E, padding_idx=PAD)
        self.encoder = RNNEncoder(c.cell, E, H // 2, num_layers=c.layers, bidirectional=True,
                                  dropout=c.dropout, precision=recurrence(c.rnn_precision, precision))
        D = self.encoder.output_dim
        # Per layer: [forward; backward] final states (2 * H/2 = H) → the decoder layer's initial state.
        self.bridge = nn.Linear(D, H)
        if c.cell == "lstm":
            self.bridge_c = nn.Linear(D, H)
        rnn = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn(E * (2 if c.input_feeding else 1), H, num_layers=c.decoder_layers, batch_first=True,
                       dropout=c.dropout if c.decoder_layers > 1 else 0.0)
        self.attention = Attention(c.attention, H, D)
        self.combine = nn.Linear(H + D, E, bias=False)
        self.drop = nn.Dropout(c.dropout)
        if c.tie_embeddings:
            self.out_bias = nn.Parameter(torch.zeros(target_vocab))
        else:
            self.out = nn.Linear(E, target_vocab)
        self.target_vocab = target_vocab
        self._init()

    def _init(self) -> None:
        # Embeddings that double as the output layer want a small scale: N(0, E^-1/2) as in tied-LM practice.
        std = self.config.embedding_size ** -0.5
        # A list, not a set: a set of modules iterates in id order, which changes between processes and with
        # it which table draws its initial values first (same seed, different models).
        tables = [self.source_embed] + ([self.target_embed] if self.target_embed is not self.source_embed else [])
        for emb in tables:
            nn.init.normal_(emb.weight, 0.0, std)
            with torch.no_grad():
                emb.weight[PAD].zero_()

    # ------------------------------------------------------------------ pieces
    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Any]:
        """Source ids (B, T) → memory (B, T, D), mask (B, T), decoder initial state."""
        mask = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        x = self.drop(self.source_embed(ids))  # (B, T, E)
        memory, final = self.encoder(x, lengths)  # (B, T, D)
        return memory, mask, self._bridge(final)

    def _bridge(self, final: Any) -> Any:
        layers = self.config.decoder_layers

        def top(h: Tensor) -> Tensor:
            # (layers*2, B, H/2) → (layers, B, H): concatenate the two directions of each layer, keep the top ones
            n, b, half = h.shape
            h = h.view(n // 2, 2, b, half).permute(0, 2, 1, 3).reshape(n // 2, b, 2 * half)  # (L, B, D)
            return h[-layers:]  # (Ld, B, D)

        if self.config.cell == "lstm":
            h, c = final
            return (torch.tanh(self.bridge(top(h))).contiguous(),  # (Ld, B, H)
                    torch.tanh(self.bridge_c(top(c))).contiguous())  # (Ld, B, H)
        return torch.tanh(self.bridge(top(final))).contiguous()  # (Ld, B, H)

    def _project(self, attentional: Tensor) -> Tensor:
        """Attentional vectors (..., E) → logits (..., V)."""
        x = self.drop(attentional)  # (..., E)
        if self.config.tie_embeddings:
            return F.linear(x, self.target_embed.weight, self.out_bias)  # (..., V)
        return self.out(x)  # (..., V)

    def _attend(self, out: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        context, weights = self.attention(out, keys, memory, mask)  # (B, U, D), (B, U, T)
        attentional = torch.tanh(self.combine(torch.cat([out, context.to(out.dtype)], dim=-1)))  # (B, U, E)
        return attentional, weights

    def decode_teacher(self, inputs: Tensor, memory: Tensor, mask: Tensor, state: Any) -> tuple[Tensor, Tensor]:
        """Teacher-forced decoder over target inputs (B, U) → logits (B, U, V), attention weights (B, U, T)."""
        keys = self.attention.keys(memory)  # (B, T, H)
        emb = self.drop(self.target_embed(inputs))  # (B, U, E)
        if not self.config.input_feeding:
            out, _ = self.rnn(emb, state)  # (B, U, H)
            attentional, weights = self._attend(out, keys, memory, mask)  # (B, U, E), (B, U, T)
            return self._project(attentional), weights  # (B, U, V)
        # Input feeding makes step t depend on step t-1's attention: one step at a time.
        feed = emb.new_zeros(emb.size(0), 1, self.config.embedding_size)  # (B, 1, E)
        steps, all_weights = [], []
        for t in range(emb.size(1)):
            out, state = self.rnn(torch.cat([emb[:, t:t + 1], feed], dim=-1), state)  # (B, 1, H)
            feed, weights = self._attend(out, keys, memory, mask)  # (B, 1, E), (B, 1, T)
            steps.append(feed)
            all_weights.append(weights)
        attentional = torch.cat(steps, dim=1)  # (B, U, E)
        return self._project(attentional), torch.cat(all_weights, dim=1)  # (B, U, V), (B, U, T)

    # ------------------------------------------------------------------ training
    def forward(self, batch: Batch) -> Output:
        """Teacher-forced logits (B, U, V) and the mean token-level cross-entropy over real target tokens."""
        if batch.target_ids is None:
            raise SeqnlpError("translation batches need target_ids")
        memory, mask, state = self.encode(batch.ids, batch.lengths)  # (B, T, D), (B, T)
        inputs, gold = batch.target_ids[:, :-1], batch.target_ids[:, 1:]  # (B, U), (B, U)
        logits, _ = self.decode_teacher(inputs, memory, mask, state)  # (B, U, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), gold.reshape(-1), ignore_index=PAD,
                               label_smoothing=self.config.label_smoothing if self.training else 0.0)
        # The mean over the target tokens of every process's part of the batch (token counts differ between parts).
        return Output(logits, distributed.mean_over_processes(loss, (gold != PAD).sum()))

    def nll(self, batch: Batch) -> tuple[float, int]:
        """Summed target-token NLL (no smoothing) and the number of real target tokens (eos included)."""
        memory, mask, state = self.encode(batch.ids, batch.lengths)  # (B, T, D), (B, T)
        logits, _ = self.decode_teacher(batch.target_ids[:, :-1], memory, mask, state)  # (B, U, V)
        gold = batch.target_ids[:, 1:]  # (B, U)
        total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), gold.reshape(-1), ignore_index=PAD,
                                reduction="sum")
        return float(total), int((gold != PAD).sum())

    # ------------------------------------------------------------------ decoding (seqnlp.decoding protocol)
    def start(self, ids: Tensor, lengths: Tensor) -> tuple:
        """Decoding state for a source batch: (hidden, feed, rows, memory, keys, mask).

        `rows` (N,) maps each decoding row to its source row, so beam search reorders a few small tensors
        per step instead of copying the encoder memory.
        """
        memory, mask, hidden = self.encode(ids, lengths)  # (B, T, D), (B, T)
        keys = self.attention.keys(memory)  # (B, T, H)
        rows = torch.arange(ids.size(0), device=ids.device)  # (B,)
        feed = memory.new_zeros(ids.size(0), 1, self.config.embedding_size) if self.config.input_feeding else None
        return hidden, feed, rows, memory, keys, mask

    def step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """tokens (N,) → next-token logits (N, V) and the new state."""
        logits, state, _ = self._step(tokens, state)
        return logits, state

    def _step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple, Tensor]:
        hidden, feed, rows, memory, keys, mask = state
        x = self.target_embed(tokens).unsqueeze(1)  # (N, 1, E)
        if feed is not None:
            x = torch.cat([x, feed], dim=-1)  # (N, 1, 2E)
        out, hidden = self.rnn(x, hidden)  # (N, 1, H)
        n, k = memory.size(0), tokens.size(0) // max(memory.size(0), 1)
        grouped = not torch.onnx.is_in_onnx_export()  # an exported step must not bake in the example's row layout
        if grouped and n * k == tokens.size(0) and torch.equal(rows, torch.arange(n, device=rows.device).repeat_interleave(k)):
            # Rows come in groups of k per source (beam search keeps each beam within its source): attend
            # with the k rows as k query steps of their source, without copying the memory per row.
            attentional, weights = self._attend(out.reshape(n, k, -1), keys, memory, mask)  # (n, k, E), (n, k, T)
            attentional, weights = attentional.reshape(n * k, 1, -1), weights.reshape(n * k, 1, -1)  # (N, 1, E)
        else:
            attentional, weights = self._attend(out, keys[rows], memory[rows], mask[rows])  # (N, 1, E), (N, 1, T)
        logits = self._project(attentional).squeeze(1)  # (N, V)
        new_feed = attentional if feed is not None else None
        return logits, (hidden, new_feed, rows, memory, keys, mask), weights.squeeze(1)

    def reorder(self, state: tuple, index: Tensor) -> tuple:
        """Rows `index` (N',) of a decoding state."""
        hidden, feed, rows, memory, keys, mask = state
        if isinstance(hidden, tuple):
            hidden = tuple(h.index_select(1, index) for h in hidden)  # (Ld, N', H) each
        else:
            hidden = hidden.index_select(1, index)  # (Ld, N', H)
        feed = feed.index_select(0, index) if feed is not None else None  # (N', 1, E)
        return hidden, feed, rows.index_select(0, index), memory, keys, mask


# ====================================================================== data

@dataclass
class Corpus:
    """Token ids of one split and its raw strings (references are scored as given)."""

    sources: list[str]
    targets: list[str] | None
    source_ids: list[list[int]]
    target_ids: list[list[int]] | None  # bos + ids + eos


def check_pairs(sources: Sequence[Any], targets: Sequence[Any] | None, where: str) -> None:
    """Refuse missing sides and empty sources with a message naming the first bad row."""
    check_texts(sources, where, what="source", column="source")
    if targets is not None:
        if len(targets) != len(sources):
            raise SeqnlpError(f"{where}: {len(sources)} sources but {len(targets)} targets; the corpus must be parallel")
        check_texts(targets, where, what="target", column="target", blank_ok=True)


def encode_corpus(sources: Sequence[str], targets: Sequence[str] | None, source_tok: Tokenizer,
                  target_tok: Tokenizer, max_length: int | None, where: str) -> Corpus:
    """Check and tokenize a split (targets get bos/eos; both sides are truncated to max_length tokens)."""
    check_pairs(sources, targets, where)
    src = source_tok.encode_batch(list(sources), max_length=max_length)
    for i, ids in enumerate(src):
        if not ids:
            raise SeqnlpError(f"{where}: row {i} source tokenizes to nothing; remove it")
    tgt = None
    if targets is not None:
        tgt = target_tok.encode_batch(list(targets), add_bos=True, add_eos=True, max_length=max_length)
    return Corpus(list(sources), list(targets) if targets is not None else None, src, tgt)


def make_batch(corpus: Corpus, index: Sequence[int]) -> Batch:
    """A padded Batch of the given examples (targets included when the corpus has them)."""
    ids, lengths = pad([corpus.source_ids[i] for i in index], PAD)  # (B, T), (B,)
    batch = Batch(ids=ids, lengths=lengths, index=torch.as_tensor(list(index), dtype=torch.long))  # (B,)
    if corpus.target_ids is not None:
        batch.target_ids, batch.target_lengths = pad([corpus.target_ids[i] for i in index], PAD)  # (B, U), (B,)
    return batch


def training_batches(corpus: Corpus, config: DataConfig, seed: int, world: int = 1) -> Callable[[int], list[Batch]]:
    """epoch → that epoch's bucketed batches (deterministic per (seed, epoch)); with `world` processes, global
    batches of `world` times the sizes, each dealt out in `world` parts (`seqnlp.data.deal`)."""
    assert corpus.target_ids is not None
    lengths = np.maximum([len(s) for s in corpus.source_ids], [len(t) for t in corpus.target_ids])  # (N,)
    sampler = BucketBatchSampler(lengths, config.batch_size * world,
                                 max_tokens=config.max_tokens * world if config.max_tokens else None,
                                 shuffle=True, seed=seed)
    return lambda epoch: [make_batch(corpus, b) for b in deal(sampler.batches(epoch), world)]


def eval_batches(corpus: Corpus, batch_size: int) -> list[Batch]:
    """Length-sorted batches (restore order with `Batch.index`)."""
    sampler = BucketBatchSampler([len(s) for s in corpus.source_ids], batch_size, shuffle=False)
    return [make_batch(corpus, b) for b in sampler.batches(0)]


# ====================================================================== decoding and scoring

def decode_ids(model: Seq2Seq, corpus: Corpus, decode: DecodeConfig, beam: int, batch_size: int,
               device: torch.device, what: str = "the model") -> list[list[int]]:
    """Hypothesis ids (no bos/eos) for every source of `corpus`, in corpus order."""
    from seqnlp.decoding import beam_search, greedy

    out: list[list[int]] = [[] for _ in corpus.source_ids]
    model.eval()
    with torch.no_grad():
        for batch in eval_batches(corpus, batch_size):
            batch = batch.to(device)
            state = model.start(batch.ids, batch.lengths)
            check_finite(state[3], what)  # the encoder's memory (B, T, D)
            start = torch.full((len(batch),), BOS, dtype=torch.long, device=device)  # (B,)
            limits = (batch.lengths.float() * decode.max_len_a + decode.max_len_b).long()  # (B,)
            if beam == 1:
                hyps = greedy(model, state, start, limits, EOS)
            else:
                hyps = beam_search(model, state, start, beam, limits, EOS, length_penalty=decode.length_penalty)
            for i, hyp in zip(batch.index.tolist(), hyps):
                out[i] = hyp
    return out


def corpus_nll(model: Seq2Seq, corpus: Corpus, batch_size: int, device: torch.device) -> tuple[float, int]:
    """Total target NLL and real target-token count over a corpus (teacher-forced)."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in eval_batches(corpus, batch_size):
            nll, n = model.nll(batch.to(device))
            total += nll
            count += n
    return total, count


# ====================================================================== library

class Translator:
    """A trained model with its tokenizers: `translate(texts, beam=5) -> list[str]`."""

    def __init__(self, model: Seq2Seq, source_tok: Tokenizer, target_tok: Tokenizer, decode: DecodeConfig,
                 data: DataConfig, device: torch.device | str = "cpu", run_dir: Path | None = None) -> None:
        self.model = model.to(device).eval()
        self.source_tokenizer = source_tok
        self.target_tokenizer = target_tok
        self.decode_config = decode
        self.data_config = data
        self.device = torch.device(device)
        self.run_dir = run_dir

    def _corpus(self, texts: Sequence[str], targets: Sequence[str] | None = None, where: str = "input") -> Corpus:
        texts = check_texts([texts] if isinstance(texts, str) else texts, where, what="source", column="source")
        corpus = encode_corpus(texts, targets, self.source_tokenizer, self.target_tokenizer, None, where)
        # Far past the training length attention has never been trained and decoding time and memory grow
        # with the length: refuse, and say how to get a translation, rather than run for minutes.
        cap = MAX_SOURCE_FACTOR * self.data_config.max_length
        for i, ids in enumerate(corpus.source_ids):
            if len(ids) > cap:
                raise SeqnlpError(f"{where}: text {i} has {len(ids)} tokens, over {cap} ({MAX_SOURCE_FACTOR} x the "
                                  f"training length {self.data_config.max_length}); split it into sentences")
        return corpus

    @property
    def beam(self) -> int:
        """The beam size `translate` uses by default (the run's; set it to change it)."""
        return self.decode_config.beam

    @beam.setter
    def beam(self, size: int) -> None:
        self.decode_config = replace(self.decode_config, beam=size)

    @property
    def lowercase(self) -> bool:
        """Whether outputs are lowercased (they are then scored against lowercased references)."""
        return self.target_tokenizer.lowercase

    def translate(self, texts: Sequence[str] | str, beam: int | None = None, batch_size: int | None = None) -> list[str]:
        """Translate source sentences (beam 1 = greedy; default: the run's beam size)."""
        beam = self.decode_config.beam if beam is None else beam
        check_decoding(beam=beam)
        corpus = self._corpus(texts)
        ids = decode_ids(self.model, corpus, self.decode_config, beam, batch_size or self.data_config.eval_batch_size,
                         self.device, f"the model in {self.run_dir}")
        return self.target_tokenizer.decode_batch(ids)

    def target_nll(self, sources: Sequence[str], references: Sequence[str]) -> tuple[float, int]:
        """(total NLL in nats, target tokens incl. eos) of the references given their sources (teacher-forced)."""
        corpus = self._corpus(sources, references, "evaluation data")
        return corpus_nll(self.model, corpus, self.data_config.eval_batch_size, self.device)

    def attention(self, text: str, beam: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """(source tokens, output tokens incl. eos, weights (U, T)) of the translation of one sentence."""
        (row,) = self.translate_with_attention([text], beam, batch_size=1)
        return row["source_tokens"], row["target_tokens"], row["weights"]

    def translate_with_attention(self, texts: Sequence[str], beam: int | None = None,
                                 batch_size: int | None = None) -> list[dict[str, Any]]:
        """Per text: {"translation", "source_tokens", "target_tokens" (incl. eos), "weights" (U, T) array}.

        Decodes the batch as `translate` does, then reads the attention of each output token with one
        teacher-forced pass over the batch.
        """
        beam = self.decode_config.beam if beam is None else beam
        check_decoding(beam=beam)
        if not hasattr(self.model, "decode_teacher"):  # an ONNX export holds the decoder step only
            raise SeqnlpError(f"{self.run_dir} is an ONNX export, which translates but has no attention weights; "
                              "load the run folder it was exported from for those")
        corpus = self._corpus(texts)
        hyps = decode_ids(self.model, corpus, self.decode_config, beam, batch_size or self.data_config.eval_batch_size,
                          self.device, f"the model in {self.run_dir}")
        ids, lengths = pad(corpus.source_ids, PAD)  # (B, T), (B,)
        targets, _ = pad([[BOS, *h] for h in hyps], PAD)  # (B, U)
        with torch.no_grad():
            memory, mask, state = self.model.encode(ids.to(self.device), lengths.to(self.device))
            _, weights = self.model.decode_teacher(targets.to(self.device), memory, mask, state)  # (B, U, T)
        weights = weights.float().cpu().numpy()

        def pieces(tok: Tokenizer, seq: list[int]) -> list[str]:
            return [tok.decode([i], skip_special=False) for i in seq]

        return [{"translation": text, "source_tokens": pieces(self.source_tokenizer, src),
                 "target_tokens": pieces(self.target_tokenizer, [*hyp, EOS]), "weights": w[:len(hyp) + 1, :len(src)]}
                for text, src, hyp, w in zip(self.target_tokenizer.decode_batch(hyps), corpus.source_ids, hyps, weights)]

    def onnx_parts(self) -> dict[str, dict[str, Any]]:
        """What seqnlp.export writes: "encoder", ids (B, T) and lengths (B,) → memory (B, T, D), keys (B, T, H), mask
        (B, T) and the decoder's initial state (h[, c]: (Ld, B, H)); "decoder", one step: tokens (N,), rows (N,: the
        source row of each decoding row), memory, keys, mask, the state [and the fed attentional vector (N, 1, E)]
        → logits (N, V) and the new state."""
        model, lstm = self.model, self.model.config.cell == "lstm"
        ids, lengths = pad(self.source_tokenizer.encode_batch(["ein Beispiel zum Verfolgen", "ja"]), PAD)  # (B, T), (B,)
        hidden, feed, _, memory, keys, mask = model.start(ids, lengths)
        rows = torch.arange(2).repeat_interleave(2)  # (N,): two rows per source, as in a beam
        hidden = tuple(h[:, rows] for h in hidden) if lstm else hidden[:, rows]  # (Ld, N, H)
        states = {"h": hidden[0], "c": hidden[1]} if lstm else {"h": hidden}
        if feed is not None:
            states["feed"] = feed[rows]  # (N, 1, E)

        def encoder(ids: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
            hidden, _, _, memory, keys, mask = model.start(ids, lengths)
            return memory, keys, mask, *(hidden if lstm else (hidden,))

        def decoder(tokens: Tensor, rows: Tensor, memory: Tensor, keys: Tensor, mask: Tensor, *state: Tensor) -> Any:
            hidden = (state[0], state[1]) if lstm else state[0]
            feed = state[-1] if model.config.input_feeding else None
            logits, (hidden, feed, *_) = model.step(tokens, (hidden, feed, rows, memory, keys, mask))  # (N, V)
            return logits, *(hidden if lstm else (hidden,)), *(() if feed is None else (feed,))

        source = {"memory": {0: "batch", 1: "length"}, "keys": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}}
        state_axes = {n + s: {0 if n == "feed" else 1: "rows"} for n in states for s in ("", "_out")}
        return {"encoder": {"module": encoder, "inputs": {"ids": ids, "lengths": lengths},
                            "outputs": ["memory", "keys", "mask", *(n for n in states if n != "feed")],
                            "axes": {"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, **source,
                                     **{n: {1: "batch"} for n in states if n != "feed"}}},
                "decoder": {"module": decoder, "inputs": {"tokens": torch.full((4,), BOS), "rows": rows, "memory": memory,
                                                          "keys": keys, "mask": mask, **states},
                            "outputs": ["logits", *(f"{n}_out" for n in states)],
                            "axes": {"tokens": {0: "rows"}, "rows": {0: "rows"}, "logits": {0: "rows"}, **source,
                                     **state_axes}}}


class _OnnxSeq2Seq(nn.Module):
    """An exported "encoder" and "decoder" step in the place of Translator's model: greedy and beam search run
    through `start` / `step` / `reorder`, and teacher-forced scoring (`nll`) one step per target token."""

    reorder = Seq2Seq.reorder  # selects rows of the decoding state; it reads no weights

    def __init__(self, encoder: Callable[..., tuple[Tensor, ...]], decoder: Callable[..., tuple[Tensor, ...]],
                 config: ModelConfig) -> None:
        super().__init__()
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.lstm = config.cell == "lstm"

    def start(self, ids: Tensor, lengths: Tensor) -> tuple:
        memory, keys, mask, *hidden = self.encoder(ids, lengths)  # (B, T, D), (B, T, H), (B, T)
        feed = memory.new_zeros(ids.size(0), 1, self.config.embedding_size) if self.config.input_feeding else None
        return tuple(hidden) if self.lstm else hidden[0], feed, torch.arange(ids.size(0)), memory, keys, mask

    def step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        hidden, feed, rows, memory, keys, mask = state
        logits, *out = self.decoder(tokens, rows, memory, keys, mask, *(hidden if self.lstm else (hidden,)),
                                    *(() if feed is None else (feed,)))  # (N, V)
        hidden = (out[0], out[1]) if self.lstm else out[0]
        return logits, (hidden, out[-1] if feed is not None else None, rows, memory, keys, mask)

    def nll(self, batch: Batch) -> tuple[float, int]:
        """Summed target-token NLL and the number of real target tokens, as `Seq2Seq.nll`, one step at a time."""
        state, total = self.start(batch.ids, batch.lengths), 0.0
        for u in range(batch.target_ids.size(1) - 1):
            logits, state = self.step(batch.target_ids[:, u], state)  # (B, V)
            total += float(F.cross_entropy(logits.float(), batch.target_ids[:, u + 1], ignore_index=PAD, reduction="sum"))
        return total, int((batch.target_ids[:, 1:] != PAD).sum())


def _tokenizers(run_dir: Path) -> tuple[Tokenizer, Tokenizer]:
    if (run_dir / JOINT_TOKENIZER).exists():
        tok = Tokenizer.load(run_dir / JOINT_TOKENIZER)
        return tok, tok
    if not (run_dir / SOURCE_TOKENIZER).exists():
        raise SeqnlpError(f"{run_dir} has neither {JOINT_TOKENIZER} nor {SOURCE_TOKENIZER}; is it a translation run?")
    return Tokenizer.load(run_dir / SOURCE_TOKENIZER), Tokenizer.load(run_dir / TARGET_TOKENIZER)


def _train_tokenizers(sources: list[str], targets: list[str], cfg: DataConfig) -> tuple[Tokenizer, Tokenizer]:
    size = cfg.vocab_size
    if cfg.joint_vocab:
        tok = Tokenizer.train(sources + targets, level=cfg.tokenizer, vocab_size=size, lowercase=cfg.lowercase)
        return tok, tok
    return (Tokenizer.train(sources, level=cfg.tokenizer, vocab_size=size, lowercase=cfg.lowercase),
            Tokenizer.train(targets, level=cfg.tokenizer, vocab_size=size, lowercase=cfg.lowercase))


# ====================================================================== the recipe

def prepare(run: Run) -> Prepared:
    """Pairs → BPE tokenizer(s) → bucketed batches → Seq2Seq; validation scores greedy BLEU."""
    from seqnlp import metrics

    data: DataConfig = run.settings["data"]
    rows = {role: run.rows(role)[0] for role in ("train", "validation", "test")}
    train_src, train_tgt = rows["train"]["source"], rows["train"]["target"]
    check_pairs(train_src, train_tgt, run.where("train"))
    if run.resume:
        source_tok, target_tok = _tokenizers(run.run_dir)
    else:
        source_tok, target_tok = _train_tokenizers(train_src, train_tgt, data)
    train = encode_corpus(train_src, train_tgt, source_tok, target_tok, data.max_length, run.where("train"))
    val, test = (encode_corpus(rows[r]["source"], rows[r]["target"], source_tok, target_tok, None, run.where(r))
                 for r in ("validation", "test"))
    print(f"data: {len(train.sources)} train / {len(val.sources)} validation / {len(test.sources)} test pairs; "
          f"vocabulary {source_tok.vocab_size} source, {target_tok.vocab_size} target "
          f"({'joint' if data.joint_vocab else 'separate'} {data.tokenizer})", flush=True)
    model = Seq2Seq(run.settings["model"], source_tok.vocab_size, target_tok.vocab_size,
                    run.settings["train"].precision)
    batches = training_batches(train, data, run.settings["train"].seed, run.world)
    refs = [t.lower() for t in val.targets] if target_tok.lowercase else val.targets  # type: ignore[union-attr]

    def validate(m: nn.Module) -> dict[str, float]:
        # Greedy validation BLEU for model selection; beam search is kept for the final score.
        hyps = target_tok.decode_batch(decode_ids(m, val, run.settings["decode"], 1, data.eval_batch_size,  # type: ignore[arg-type]
                                                  run.device))
        total, count = corpus_nll(m, val, data.eval_batch_size, run.device)  # type: ignore[arg-type]
        return {"bleu": metrics.bleu(hyps, refs).value, "chrf": metrics.chrf(hyps, refs).value,
                "perplexity": metrics.perplexity(total, count).value}

    artifacts: dict[str, str | bytes] = ({JOINT_TOKENIZER: source_tok.to_str() + "\n"} if data.joint_vocab else
                                         {SOURCE_TOKENIZER: source_tok.to_str() + "\n",
                                          TARGET_TOKENIZER: target_tok.to_str() + "\n"})
    return Prepared(model=model, train_batches=batches, validate=validate, artifacts=artifacts,
                    example=batches(0)[0])


def load(run_dir: str | Path, device: str = "cpu") -> Translator:
    """A saved translation run as a `Translator` (weights: the best on validation)."""
    return load_run_of(SPEC, run_dir, device)


def _load(run_dir: Path, settings: dict[str, Any], device: str) -> Translator:
    source_tok, target_tok = _tokenizers(run_dir)
    model = Seq2Seq(settings["model"], source_tok.vocab_size, target_tok.vocab_size, settings["train"].precision)
    load_model_weights(run_dir, model, "best")
    return Translator(model, source_tok, target_tok, settings["decode"], settings["data"], resolve_device(device),
                      run_dir)


def _from_onnx(folder: Path, settings: dict[str, Any], parts: dict[str, Any]) -> Translator:
    """A Translator over an ONNX export of a run (seqnlp.export.load_onnx): translate and scoring, not `attention`."""
    source_tok, target_tok = _tokenizers(folder)
    return Translator(_OnnxSeq2Seq(parts["encoder"], parts["decoder"], settings["model"]), source_tok, target_tok,
                      settings["decode"], settings["data"], run_dir=folder)


def describe(settings: dict[str, Any]) -> str:
    """The model's name in results, e.g. 'bi-gru 2x512 + multiplicative attention, bpe 8000, beam 5'."""
    m, d = settings["model"], settings["data"]
    return (f"bi-{m.cell} {m.layers}x{m.hidden_size} + {m.attention} attention, {d.tokenizer} {d.vocab_size}, "
            f"beam {settings['decode'].beam}")


def _beam_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")


def _set_beam(translator: Translator, args: argparse.Namespace) -> None:
    if args.beam is not None:
        check_decoding(beam=args.beam)
        translator.beam = args.beam


def _translate_arguments(p: argparse.ArgumentParser) -> None:
    _beam_flag(p)
    p.add_argument("text", nargs="*", help="sentences (default: read stdin)")


def _translate(args: argparse.Namespace, load_model: Callable[[], Translator]) -> int:
    """Translate sentences given as arguments or on stdin, one per line."""
    translator = load_model()
    _set_beam(translator, args)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise SeqnlpError("nothing to translate: give sentences as arguments or on stdin")
    for line in translator.translate(texts):
        print(line)
    return 0


def _attention_arguments(p: argparse.ArgumentParser) -> None:
    _beam_flag(p)
    p.add_argument("--text", required=True, help="the source sentence")
    p.add_argument("--out", required=True, help="PNG file to write")


def _attention(args: argparse.Namespace, load_model: Callable[[], Translator]) -> int:
    """Save the attention heatmap of one sentence's translation as a PNG."""
    translator = load_model()
    _set_beam(translator, args)
    src, out, weights = translator.attention(args.text)
    if not heatmap(args.out, weights, [s.strip() or "␣" for s in src], [s.strip() or "␣" for s in out],
                   xlabel="source", ylabel="output", vmin=0, vmax=1, dpi=120):
        raise SeqnlpError("the attention heatmap needs matplotlib: pip install matplotlib")
    print("".join(out[:-1]))
    print(f"attention heatmap written to {args.out}", file=sys.stderr)
    return 0


COMMANDS = {"translate": Command("Translate sentences given as arguments or on stdin (one per line).",
                               _translate_arguments, _translate),
          "attention": Command("Save an attention heatmap PNG for one sentence.", _attention_arguments,
                               _attention)}

SPEC = TaskSpec(
    name=TASK, summary="Train a recurrent encoder-decoder translator with attention (default: Multi30k de→en).",
    sections={"model": ModelConfig, "data": DataConfig, "decode": DecodeConfig}, default_benchmark=DEFAULT_BENCHMARK,
    train_defaults=TRAIN_DEFAULTS, presets={}, metric="bleu", higher_is_better=True, prepare=prepare, load=_load,
    score=scoring.translation, describe=describe, baseline=baselines.fit_copy_source, evaluate_options=(_beam_flag, _set_beam),
    onnx=_from_onnx,
    usage=('{module} translate --model {run} --beam 5 "Ein Hund läuft im Schnee."',
           '{module} attention --model {run} --text "Zwei Männer spielen Fußball." --out attention.png'),
    commands=COMMANDS,
)


main = partial(run_main, SPEC)  # python -m seqnlp.tasks.translation [train|evaluate|...] ...

if __name__ == "__main__":
    sys.exit(main())
