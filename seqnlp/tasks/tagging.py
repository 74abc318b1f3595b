"""Sequence tagging (one label per token; named entities by default): words + characters → bi-LSTM → CRF.

This module is *how* a tagger is trained and scored; *which* dataset, columns, splits and metric make a
benchmark is data, in the top-level tasks/conll2002_es.toml.

    python -m seqnlp.tasks.tagging                                    # CoNLL-2002 Spanish NER, scored on test
    python -m seqnlp.tasks.tagging --dataset my_folder --tokens-column words --tags-column labels
    python -m seqnlp.tasks.tagging predict --model RUN_DIR "El presidente de Francia visitó Madrid ayer."

The recipe, straight through: token and tag lists → tags read as names (ClassLabel ids or strings) in IOB1,
IOB2 or BIOES and converted to IOB2 → word ids (lowercased, digits folded to 0) and the characters of each word
as written → length-bucketed `TaggedBatch` → word embedding ⊕ character CNN (casing, affixes) → dropout →
bidirectional `RNNEncoder` → dropout → per-token tag scores → a linear-chain CRF constrained to valid IOB2
(`seqnlp.crf`; or a per-token softmax) → Output(logits, loss) → Trainer (epoch chosen on validation F1)
→ entity-level F1, precision, recall (conlleval's reading, seqeval) and token accuracy on the scored split.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqnlp import baselines, distributed, scoring
from seqnlp.config import opt
from seqnlp.crf import CRF, viterbi
from seqnlp.data import Batch, BucketBatchSampler, check_texts, deal, pad
from seqnlp.device import resolve_device
from seqnlp.encoders import CELLS, Dropout, RNNEncoder
from seqnlp.errors import SeqnlpError, check_finite
from seqnlp.precision import recurrence
from seqnlp.spans import SCHEMES, allowed_starts, allowed_transitions, check_sentences, read_tags, spans
from seqnlp.tasks.runner import Command, Prepared, Run, TaskSpec, load_run_of, main as run_main
from seqnlp.trainer import Output, load_model_weights

TASK = "tagging"
VOCAB_FILE = "vocab.json"  # the word, character and tag lists the ids index
PAD, UNK, IGNORE = 0, 1, -100  # vocabulary ids; the padding of tag targets (cross_entropy's ignore_index)
_DIGIT = re.compile(r"\d")


@dataclass
class ModelConfig:
    """The tagger and its input pipeline (saved in config.json; a loaded model rebuilds from it)."""

    word_dim: int = opt(100, "E, word embedding width (0 = characters only)", min=0)
    # Capitalisation, affixes and digits carry names; the words' own spelling goes to a CNN over characters.
    char_dim: int = opt(50, "character embedding width", min=1)
    char_channels: int = opt(50, "character CNN filters (0 = no characters)", min=0)
    char_kernel: int = opt(3, "character CNN window", min=1)
    max_chars: int = opt(20, "characters kept per word (the first and last halves of a longer one)", min=2)
    cell: str = opt("lstm", "recurrent cell", choices=CELLS)
    hidden_size: int = opt(200, "H, state size per direction", min=1)
    layers: int = opt(1, "stacked bidirectional layers", min=1)
    dropout: float = opt(0.5, "dropout on the embeddings and the encoder outputs", min=0, max=0.95)
    # A name seen once in train is unknown at test time more often than not: training on some <unk> words
    # teaches the tagger to read such words from their characters and context.
    word_dropout: float = opt(0.05, "in training, replace this share of words by <unk>", min=0, max=0.95)
    head: str = opt("crf", "crf (constrained to valid IOB2) or a per-token softmax", choices=("crf", "softmax"))
    min_count: int = opt(1, "words seen fewer times in train are <unk>", min=1)
    scheme: str = opt("auto", "tag scheme of the data (converted to IOB2)", choices=("auto", *SCHEMES))
    batch_size: int = opt(32, "training batch size (sentences)", min=1)
    rnn_precision: str = opt("auto", "encoder recurrence precision: auto = the faster of fp32 and bf16 as measured "
                         "on this machine (seqnlp.precision); --precision fp32 or bf16 fixes it as well",
                         choices=("auto", "fp32", "bf16"))


# Measured (results/conll2002_es/bilstm-char-crf.json); the trainer runs fp32 outside the bf16 encoder.
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 25, "lr": 2e-3, "optimizer": "adam", "weight_decay": 0.0,
                                  "schedule": "linear", "clip_norm": 5.0, "precision": "fp32", "time_budget": 19.0}


# ====================================================================== tags, words, batches

def word_key(word: str) -> str:
    """The word-embedding key of a token: lowercased, every digit folded to 0 (casing goes to the characters)."""
    return _DIGIT.sub("0", word.lower())


def vocabulary(items: Iterable[str], min_count: int = 1) -> list[str]:
    """<pad>, <unk>, then the items seen at least `min_count` times, most frequent first."""
    counts = Counter(items)
    return ["<pad>", "<unk>", *sorted((s for s, c in counts.items() if c >= min_count), key=lambda s: (-counts[s], s))]


@dataclass
class TaggedBatch(Batch):
    """A `Batch` with the characters of each word, chars (B, T, W); tags (when known) in `targets` (B, T)."""

    chars: Tensor | None = None


class Encoder:
    """Sentences → TaggedBatches, with the run's word, character and tag lists."""

    def __init__(self, words: list[str], chars: list[str], tags: list[str], max_chars: int) -> None:
        self.words, self.chars, self.tags, self.max_chars = words, chars, tags, max_chars
        self._word, self._char = {w: i for i, w in enumerate(words)}, {c: i for i, c in enumerate(chars)}
        self._tag = {t: i for i, t in enumerate(tags)}

    def _spell(self, word: str) -> list[int]:
        ids = [self._char.get(c, UNK) for c in word]
        half = self.max_chars // 2  # a long word keeps its prefix and its suffix
        return ids if len(ids) <= self.max_chars else ids[:self.max_chars - half] + ids[len(ids) - half:]

    def batch(self, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None,
              index: Sequence[int] | None = None) -> TaggedBatch:
        ids, lengths = pad([[self._word.get(word_key(w), UNK) for w in s] for s in sentences], PAD)  # (B, T), (B,)
        spelled, _ = pad([self._spell(w) for s in sentences for w in s], PAD)  # (N, W) the real words
        chars = torch.zeros(*ids.shape, spelled.shape[1], dtype=torch.long)  # (B, T, W)
        chars[torch.arange(ids.shape[1])[None, :] < lengths[:, None]] = spelled  # filled row by row
        targets = pad([[self._tag[t] for t in row] for row in tags], IGNORE)[0] if tags is not None else None  # (B, T)
        return TaggedBatch(ids=ids, lengths=lengths, targets=targets, chars=chars,
                           index=None if index is None else torch.as_tensor(list(index)))  # index (B,)


# ====================================================================== the model

class CharCNN(nn.Module):
    """Word vectors from characters: embedding → 1-d convolution → max over the word's real characters."""

    def __init__(self, num_chars: int, char_dim: int, channels: int, kernel: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=PAD)
        self.conv = nn.Conv1d(char_dim, channels, kernel, padding=kernel // 2)

    def forward(self, chars: Tensor, mask: Tensor) -> Tensor:
        words = chars[mask]  # (N, W): the real words only
        h = self.conv(self.embedding(words).transpose(1, 2))  # (N, F, W)
        h = h.masked_fill((words == PAD).unsqueeze(1), float("-inf")).amax(dim=2)  # (N, F)
        out = h.new_zeros(*mask.shape, h.shape[1])  # (B, T, F)
        out[mask] = h
        return out


class Tagger(nn.Module):
    """Word ⊕ char-CNN embeddings → dropout → bi-RNNEncoder → dropout → Linear(C) → CRF or softmax."""

    def __init__(self, config: ModelConfig, tags: Sequence[str], num_words: int, num_chars: int,
                 precision: str = "auto") -> None:
        super().__init__()
        c = self.config = config
        if c.word_dim == 0 and c.char_channels == 0:
            raise SeqnlpError("a tagger needs word embeddings, characters or both (--word-dim, --char-channels)")
        self.embedding = nn.Embedding(num_words, c.word_dim, padding_idx=PAD) if c.word_dim else None
        self.chars = CharCNN(num_chars, c.char_dim, c.char_channels, c.char_kernel) if c.char_channels else None
        self.dropout = Dropout(c.dropout)
        self.encoder = RNNEncoder(c.cell, c.word_dim + c.char_channels, c.hidden_size, num_layers=c.layers,
                                  bidirectional=True, dropout=c.dropout if c.layers > 1 else 0.0,
                                  precision=recurrence(c.rnn_precision, precision))
        self.project = nn.Linear(self.encoder.output_dim, len(tags))
        self.crf = CRF(len(tags), allowed_transitions(tags), allowed_starts(tags)) if c.head == "crf" else None

    def forward(self, batch: TaggedBatch) -> Output:
        """Tag scores (B, T, C), and the loss (CRF: mean sentence NLL; softmax: mean token NLL) given tags."""
        mask, parts = batch.mask, []  # (B, T)
        if self.embedding is not None:
            ids = batch.ids  # (B, T)
            if self.training and self.config.word_dropout > 0:
                ids = ids.masked_fill((torch.rand(ids.shape, device=ids.device) < self.config.word_dropout) & mask,
                                      UNK)  # (B, T)
            parts.append(self.embedding(ids))  # (B, T, E)
        if self.chars is not None:
            parts.append(self.chars(batch.chars, mask))  # (B, T, F)
        h, _ = self.encoder(self.dropout(torch.cat(parts, dim=2)), batch.lengths)  # (B, T, D)
        scores = self.project(self.dropout(h))  # (B, T, C)
        if batch.targets is None:
            return Output(scores, None)
        # The mean over the tokens (softmax) or sentences (CRF) of every process's part of the batch.
        if self.crf is None:
            loss = F.cross_entropy(scores.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE)
            return Output(scores, distributed.mean_over_processes(loss, (batch.targets != IGNORE).sum()))
        loss = self.crf.nll(scores, batch.targets, mask, batch.lengths).mean()
        return Output(scores, distributed.mean_over_processes(loss, len(batch.lengths)))

    @torch.no_grad()
    def decode(self, batch: TaggedBatch, what: str = "the tagger") -> list[list[int]]:
        """The best tag ids of each sentence (Viterbi with the CRF, else per-token argmax)."""
        scores = check_finite(self(replace(batch, targets=None)).logits.float(), what)  # (B, T, C)
        path = scores.argmax(2) if self.crf is None else self.crf.viterbi(scores, batch.mask, batch.lengths)  # (B, T)
        return [row[:n] for row, n in zip(path.tolist(), batch.lengths.tolist())]


# ====================================================================== a trained tagger

class EntityTagger:
    """A trained tagger: token lists → tags, or raw text → tokens, tags and entities with character offsets.

        tagger = seqnlp.load("runs/tagging-...")
        tagger.tag(["El presidente de Francia visitó Madrid ayer."])  # [{"tokens": [...], "entities": [...]}]
    """

    def __init__(self, model: Tagger, encoder: Encoder, device: str | torch.device = "cpu",
                 run_dir: str | Path = "memory") -> None:
        self.device = resolve_device(str(device))
        self.model, self.encoder, self.run_dir = model.to(self.device).eval(), encoder, run_dir
        self.tags = encoder.tags

    def predict_tags(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[list[str]]:
        """IOB2 tags of each token list (the scorer's protocol)."""
        sentences = check_sentences(sentences, None, "predict_tags()")
        out: list[list[str]] = [[] for _ in sentences]
        sampler = BucketBatchSampler([len(s) for s in sentences], batch_size, shuffle=False)
        for rows in sampler.batches(0):
            batch = self.encoder.batch([sentences[r] for r in rows]).to(self.device)
            for r, ids in zip(rows, self.model.decode(batch, f"the model in {self.run_dir}")):
                out[r] = [self.tags[i] for i in ids]
        return out

    def tag(self, texts: Sequence[str] | str) -> list[dict[str, Any]]:
        """Per text: {"text", "tokens": [{"text", "start", "end", "tag"}], "entities": [{"type", "text", "start",
        "end"}]}, offsets in characters of the text; words and punctuation are split as in CoNLL data."""
        from tokenizers.pre_tokenizers import BertPreTokenizer

        texts = check_texts([texts] if isinstance(texts, str) else texts, "tag()")
        pieces = [BertPreTokenizer().pre_tokenize_str(t) for t in texts]  # [(word, (start, end))] per text
        if any(not p for p in pieces):
            raise SeqnlpError("tag(): a text holds no words")
        tags = self.predict_tags([[w for w, _ in p] for p in pieces])
        return [{"text": text, "tokens": [{"text": w, "start": a, "end": b, "tag": t} for (w, (a, b)), t in zip(p, row)],
                 "entities": [{"type": kind, "text": text[p[i][1][0]:p[j - 1][1][1]], "start": p[i][1][0],
                               "end": p[j - 1][1][1]} for kind, i, j in spans(row)]}
                for text, p, row in zip(texts, pieces, tags)]

    def onnx_parts(self) -> dict[str, dict[str, Any]]:
        """What seqnlp.export writes: "tagger", ids (B, T), chars (B, T, W) and lengths (B,) → scores (B, T, C), with a
        CRF head also its transitions (C, C), start (C,) and end (C,) scores (Viterbi stays in Python)."""
        batch = self.encoder.batch([["Ana", "vive", "en", "Lima", "."], ["Hola"]])  # one row padded

        def tagger(ids: Tensor, chars: Tensor, lengths: Tensor) -> Any:
            scores = self.model(TaggedBatch(ids=ids, lengths=lengths, chars=chars)).logits  # (B, T, C)
            return scores if self.model.crf is None else (scores, *self.model.crf.scores())

        return {"tagger": {"module": tagger, "inputs": {"ids": batch.ids, "chars": batch.chars, "lengths": batch.lengths},
                           "outputs": ["scores", *(["transitions", "start", "end"] if self.model.crf is not None else [])],
                           "axes": {"ids": {0: "batch", 1: "length"}, "chars": {0: "batch", 1: "length", 2: "characters"},
                                    "lengths": {0: "batch"}, "scores": {0: "batch", 1: "length"}}}}


class _OnnxTagger(nn.Module):
    """An exported "tagger" in the place of EntityTagger's model: `decode` runs it, then Viterbi (or argmax)."""

    def __init__(self, part: Callable[..., tuple[Tensor, ...]]) -> None:
        super().__init__()
        self.part = part

    def decode(self, batch: TaggedBatch, what: str = "the tagger") -> list[list[int]]:
        scores, *crf = self.part(batch.ids, batch.chars, batch.lengths)  # (B, T, C), CRF scores
        scores = check_finite(scores, what)
        path = viterbi(scores, batch.mask, *crf) if crf else scores.argmax(2)  # (B, T)
        return [row[:n] for row, n in zip(path.tolist(), batch.lengths.tolist())]


# ====================================================================== the recipe

def prepare(run: Run) -> Prepared:
    """Token/tag rows → vocabularies → bucketed TaggedBatches → Tagger; validation scores entity F1."""
    from seqnlp.metrics import span_scores

    config: ModelConfig = run.settings["model"]
    data = {}
    for role in ("train", "validation", "test"):
        cols, features = run.rows(role)
        tags = read_tags(cols["tags"], features["tags"], run.where(role), config.scheme)
        data[role] = (check_sentences(cols["tokens"], tags, run.where(role)), tags)
    (words, tags), valid = data["train"], data["validation"]
    tag_names = sorted({t for row in tags for t in row}, key=lambda t: (t != "O", t[2:], t))
    read_tags(valid[1], None, run.where("validation"), "IOB2", known=tag_names)  # tags train never shows
    if run.resume:
        encoder = _read_encoder(run.run_dir, config)
    else:
        encoder = Encoder(vocabulary((word_key(w) for s in words for w in s), config.min_count),
                          vocabulary(c for s in words for w in s for c in w), tag_names, config.max_chars)
    print(f"data: {run.bench.name} — train {len(words)}, validation {len(valid[0])}, {run.bench.split_name()} "
          f"{len(data['test'][0])} sentences; {len(encoder.words):,} words, {len(encoder.chars)} characters, tags "
          f"{', '.join(encoder.tags)}", flush=True)
    model = Tagger(config, encoder.tags, len(encoder.words), len(encoder.chars), run.settings["train"].precision)
    sampler = BucketBatchSampler([len(s) for s in words], config.batch_size * run.world, shuffle=True,
                                 seed=run.settings["train"].seed)

    def validate(m: nn.Module) -> dict[str, float]:
        scores, _ = span_scores(valid[1], EntityTagger(m, encoder, run.device).predict_tags(valid[0]))  # type: ignore[arg-type]
        return {s.name: s.value for s in scores}

    vocab = json.dumps({"words": encoder.words, "chars": encoder.chars, "tags": encoder.tags}, ensure_ascii=False)
    return Prepared(model=model, validate=validate, artifacts={VOCAB_FILE: vocab},
                    train_batches=lambda epoch: [encoder.batch([words[r] for r in rows], [tags[r] for r in rows], rows)
                                                 for rows in deal(sampler.batches(epoch), run.world)],
                    example=encoder.batch(words[:2], tags[:2]))


def load(run_dir: str | Path, device: str = "cpu") -> EntityTagger:
    """A saved tagging run (config.json, vocab.json, model.safetensors) as an EntityTagger."""
    return load_run_of(SPEC, run_dir, device)


def _read_encoder(run_dir: Path, config: ModelConfig) -> Encoder:
    from seqnlp.io import read_json

    vocab = read_json(run_dir / VOCAB_FILE)
    if not isinstance(vocab, dict) or not all(isinstance(vocab.get(k), list) for k in ("words", "chars", "tags")):
        raise SeqnlpError(f"{run_dir / VOCAB_FILE} is not a tagging vocabulary (words, chars, tags)")
    return Encoder(vocab["words"], vocab["chars"], vocab["tags"], config.max_chars)


def _load(run_dir: Path, settings: dict[str, Any], device: str) -> EntityTagger:
    encoder = _read_encoder(run_dir, settings["model"])
    model = Tagger(settings["model"], encoder.tags, len(encoder.words), len(encoder.chars),
                   settings["train"].precision)
    load_model_weights(run_dir, model, "best")
    return EntityTagger(model, encoder, device, run_dir)


def _from_onnx(folder: Path, settings: dict[str, Any], parts: dict[str, Any]) -> EntityTagger:
    """An EntityTagger over an ONNX export of a run (seqnlp.export.load_onnx)."""
    return EntityTagger(_OnnxTagger(parts["tagger"]), _read_encoder(folder, settings["model"]), run_dir=folder)


def describe(settings: dict[str, Any]) -> str:
    """The model's name in results, e.g. '1xbi-lstm 200 + char-cnn 50, crf'."""
    c: ModelConfig = settings["model"]
    chars = f" + char-cnn {c.char_channels}" if c.char_channels else ""
    return f"{c.layers}xbi-{c.cell} {c.hidden_size}, words {c.word_dim}{chars}, {c.head}"


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to tag (default: lines of stdin)")


def _predict(args: argparse.Namespace, load_model: Callable[[], EntityTagger]) -> int:
    """JSON lines {"text", "tokens", "entities"} for texts given as arguments or on stdin."""
    tagger = load_model()
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise SeqnlpError("nothing to tag: give texts as arguments or on stdin")
    for row in tagger.tag(texts):
        print(json.dumps(row, ensure_ascii=False))
    return 0


SPEC = TaskSpec(
    name=TASK, summary="Train a named-entity tagger (default: bi-LSTM + character CNN + CRF on CoNLL-2002 Spanish).",
    sections={"model": ModelConfig}, default_benchmark="conll2002_es", train_defaults=TRAIN_DEFAULTS, presets={},
    metric="f1", higher_is_better=True, prepare=prepare, load=_load, score=scoring.tagging, describe=describe,
    baseline=baselines.fit_feature_crf, onnx=_from_onnx, usage=('{module} predict --model {run} "El presidente visitó Madrid."',),
    commands={"predict": Command("Tag texts given as arguments, or one per line on stdin.", _predict_arguments,
                                 _predict)},
)
main = partial(run_main, SPEC)  # python -m seqnlp.tasks.tagging [train|evaluate|predict] ...

if __name__ == "__main__":
    sys.exit(main())
