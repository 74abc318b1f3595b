"""One `Tokenizer` over Hugging Face `tokenizers`, at three levels: char, word and bpe.

Special tokens have fixed ids at every level: PAD=0 "<pad>", UNK=1 "<unk>", BOS=2 "<bos>", EOS=3 "<eos>".

- char: every Unicode code point is a token (spaces, newlines and tabs included), so
  `decode(encode(s)) == s` whenever every character of `s` was seen in training (unseen ones become <unk>,
  which decoding drops).
- word: split on whitespace and punctuation (BERT's pre-tokenizer); `decode` joins words with spaces and
  re-attaches punctuation and English clitics ("don ' t" → "don't"). Not exact: the original spacing is lost.
- bpe: byte-level BPE (GPT-2 style), so any string round-trips exactly and nothing is ever <unk>.

The same texts give the same ids on every run: the trainers break frequency ties by the token's string,
and the byte alphabet is fixed. `lowercase=True` adds a lowercasing normalizer (then round trips are exact
only for lowercase text).

Input policy (each a one-line SeqnlpError): texts must be str (None, bytes, numbers and strings holding lone
surrogates are named by position); training texts must hold something besides whitespace; `decode` refuses
ids outside 0..vocab_size-1 (Hugging Face would drop them silently, hiding a tokenizer that does not belong
to the model). `max_length` keeps the head: a text longer than 16 characters per kept token is tokenized
from its head only, cut where a non-space meets a space, which gives exactly the ids of the whole encoding.

Saved as one JSON file: {"format": "seqnlp-tokenizer", "version": 1, "level", "lowercase",
"tokenizer": <the Hugging Face tokenizer.json object>}. `Tokenizer.load` also accepts a plain
Hugging Face tokenizer.json written by this class's `hf` object.
"""

from __future__ import annotations

import json
import operator
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from seqnlp.errors import SeqnlpError
from seqnlp.io import atomic_write_bytes, read_json

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]  # list position = fixed id
LEVELS = ("char", "word", "bpe")
FORMAT = "seqnlp-tokenizer"
FORMAT_VERSION = 1
DEFAULT_BPE_VOCAB = 8000
MAX_TOKENIZER_BYTES = 256 * 1024 * 1024  # refuse larger tokenizer files: they are not ours
_CHUNK = 1 << 16  # char-level texts longer than this are encoded in parallel chunks
_LONG = 16  # texts longer than this many characters per max_length token are tokenized from their head only
_HEAD_MIN = 256  # characters tried first beyond 4 per token; the tests lower it to reach every branch
# Where a prefix can be cut without changing how its start is tokenized: a non-space then a space, by the
# Unicode White_Space property that Rust's regex \s and char::is_whitespace use (Python's \s also takes
# \x1c-\x1f, which the byte-level pre-tokenizer treats as punctuation).
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CUT = re.compile(f"(?<=[^{_WS}])[{_WS}]")
_UNLIMITED = 2**31 - 1  # the word-level trainer's vocab_size is required; this means "keep every token"

# Word-level detokenization: rules applied, in order, to the space-joined tokens.
_DETOK_RULES = [
    (re.compile(r"(?<=\d) ([.,:]) (?=\d)"), r"\1"),  # 3 . 5 → 3.5 (before the next rule eats the space)
    (re.compile(r" ([.,!?;:%)\]}»”…])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{«„$£€¿¡]) "), r"\1"),  # none after opening punctuation
    (re.compile(r"(?<=\w) ' (?=(?:s|t|re|ve|m|ll|d)\b)", re.IGNORECASE), "'"),  # don ' t → don't
    (re.compile(r"(?<=\w) (?=n't\b)", re.IGNORECASE), ""),
    (re.compile(r"(?<=\w) ([-/]) (?=\w)"), r"\1"),  # port - a - potty → port-a-potty
    (re.compile(r'" ([^"]*?) "'), r'"\1"'),  # " quoted " → "quoted"
]


def _detokenize_words(text: str) -> str:
    for pattern, repl in _DETOK_RULES:
        text = pattern.sub(repl, text)
    return text


def _build(level: str, lowercase: bool) -> HFTokenizer:
    """An untrained HF tokenizer for `level`."""
    if level == "char":
        tok = HFTokenizer(models.WordLevel(unk_token="<unk>"))
        # One piece per code point, whitespace included; Fuse concatenates them back without spaces.
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
    elif level == "word":
        tok = HFTokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # No decoder: tokens are joined with spaces, then _detokenize_words tidies punctuation.
    elif level == "bpe":
        tok = HFTokenizer(models.BPE())  # byte-level: every string is covered, so no unk token is needed
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
    else:
        raise SeqnlpError(f"unknown tokenizer level {level!r}; choose one of {', '.join(LEVELS)}")
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    return tok


def _prepare(tok: HFTokenizer) -> HFTokenizer:
    # Text that happens to contain "<pad>" etc. is tokenized as ordinary characters, never as a special id.
    tok.encode_special_tokens = True
    tok.no_truncation()
    tok.no_padding()
    return tok


class Tokenizer:
    """Text ↔ ids at char, word or bpe level; wraps a Hugging Face `tokenizers.Tokenizer` (`.hf`)."""

    pad_id = PAD
    unk_id = UNK
    bos_id = BOS
    eos_id = EOS

    def __init__(self, hf: HFTokenizer, level: str, lowercase: bool = False) -> None:
        if level not in LEVELS:
            raise SeqnlpError(f"unknown tokenizer level {level!r}; choose one of {', '.join(LEVELS)}")
        for i, name in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(name) != i:
                raise SeqnlpError(f"tokenizer has {name!r} at id {hf.token_to_id(name)}, expected {i}; "
                                  "it was not made by seqnlp.Tokenizer.train")
        self.hf = _prepare(hf)
        self.level = level
        self.lowercase = lowercase
        self._fast = hasattr(hf, "encode_batch_fast")  # tokenizers >= 0.21: batch encode without offsets

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, texts: Iterable[str], level: str = "char", vocab_size: int | None = None,
              min_frequency: int = 1, lowercase: bool = False) -> Tokenizer:
        """Learn a vocabulary from `texts` (any iterable of strings, e.g. a dataset column).

        vocab_size: the most tokens kept, specials included (None: every token for char/word, 8000 for bpe;
            bpe needs at least 4 + 256 for its byte alphabet). min_frequency: rarer tokens/merges are dropped.
        """
        if level not in LEVELS:
            raise SeqnlpError(f"unknown tokenizer level {level!r}; choose one of {', '.join(LEVELS)}")
        if vocab_size is not None and vocab_size <= len(SPECIAL_TOKENS):
            raise SeqnlpError(f"vocab_size={vocab_size} leaves no room beside the 4 special tokens; use a larger one")
        if min_frequency < 1:
            raise SeqnlpError(f"min_frequency must be >= 1, got {min_frequency}")
        hf = _build(level, lowercase)
        if level == "bpe":
            alphabet = pre_tokenizers.ByteLevel.alphabet()
            size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
            if size < len(SPECIAL_TOKENS) + len(alphabet):
                raise SeqnlpError(f"bpe vocab_size={size} is below the 260 needed for the byte alphabet and "
                                  "the special tokens; use at least 260 (or level='char')")
            trainer = trainers.BpeTrainer(vocab_size=size, min_frequency=min_frequency,
                                          special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet,
                                          show_progress=False)
        else:
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size or _UNLIMITED, min_frequency=min_frequency,
                                                special_tokens=SPECIAL_TOKENS, show_progress=False)
        if isinstance(texts, str):
            texts = [texts]  # a bare string would otherwise be iterated character by character
        seen: dict[str, Any] = {"content": False}
        recent: deque[tuple[int, str]] = deque(maxlen=4096)  # Rust reads ahead in buffers of a few hundred

        def checked() -> Iterator[str]:
            # Rust only says "'NoneType' object is not iterable"; name the text instead. Per text, not per token.
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise _bad_text([text], f"training text {i}")
                if not seen["content"] and text.strip():
                    seen["content"] = True
                recent.append((i, text))
                yield text

        try:
            hf.train_from_iterator(checked(), trainer=trainer)
        except (TypeError, UnicodeEncodeError):  # a str Rust cannot take: one with a lone surrogate
            for i, text in recent:
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise _bad_text([text], f"training text {i}") from None
            raise
        if not seen["content"]:
            raise SeqnlpError("the training texts are empty (or only whitespace), so there is nothing to learn a "
                              "vocabulary from; check the dataset and its text column")
        return cls(hf, level, lowercase)

    # ---------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids (specials included); embedding tables need this many rows."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        """Id of `token`, or None when it is not in the vocabulary."""
        return self.hf.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        """Token string of `id` (bpe tokens are shown in byte-level form, e.g. 'Ġthe'), or None."""
        return self.hf.id_to_token(id)

    def __repr__(self) -> str:
        return f"Tokenizer(level={self.level!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    # ---------------------------------------------------------------- encoding
    def _finish(self, ids: list[int], add_bos: bool, add_eos: bool, max_length: int | None) -> list[int]:
        if max_length is not None:
            room = max_length - add_bos - add_eos
            if room < 0:
                raise SeqnlpError(f"max_length={max_length} is too small to hold bos/eos")
            ids = ids[:room]
        if add_bos:
            ids = [BOS, *ids]
        if add_eos:
            ids.append(EOS)
        return ids

    def _encodings(self, texts: list[str]) -> list[Any]:
        try:
            if self._fast:
                return self.hf.encode_batch_fast(texts, add_special_tokens=False)
            return self.hf.encode_batch(texts, add_special_tokens=False)  # pragma: no cover - tokenizers < 0.21
        except TypeError:
            raise _bad_text(texts) from None

    def _ids(self, text: str) -> list[int]:
        if self.level == "char" and len(text) > _CHUNK:
            # Characters are tokenized independently, so long texts can be cut anywhere and encoded in
            # parallel: 2x faster than one call on a 1M-character text, whose offsets bookkeeping is serial.
            chunks = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)]
            return list(chain.from_iterable(e.ids for e in self._encodings(chunks)))
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        except TypeError:
            raise _bad_text([text]) from None

    def _head_ids(self, text: str, room: int) -> list[int]:
        """The ids of `text` from its start, at least `room` of them when it has that many (all of them when it
        is short), without tokenizing all of a very long text.

        A prefix cut where a non-space meets a space is tokenized exactly like the start of the whole text:
        the word and byte-level pre-tokenizers never join pieces across that boundary, and tokens never span
        pieces. Every character gives at least one token, so char level cuts at `room` characters.
        """
        if self.level == "char":
            return self._ids(text[:room])
        size = 4 * room + _HEAD_MIN
        while size < len(text):
            cuts = list(_CUT.finditer(text, size // 2, size))
            if cuts:
                ids = self._ids(text[:cuts[-1].start()])
                if len(ids) >= room:
                    return ids
            size *= 2
        return self._ids(text)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False,
               max_length: int | None = None) -> list[int]:
        """Ids of `text`; `max_length` truncates so that the result, bos/eos included, is at most that long
        (the head of the text is kept; only that part of a very long text is tokenized)."""
        if not isinstance(text, str):
            raise _bad_text([text])
        if max_length is not None and len(text) > _LONG * max(max_length, 1):
            ids = self._head_ids(text, max_length)
        else:
            ids = self._ids(text)
        return self._finish(ids, add_bos, add_eos, max_length)

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False,
                     max_length: int | None = None) -> list[list[int]]:
        """Ids of many texts at once; the Rust side tokenizes them in parallel."""
        texts = list(texts)
        if max_length is not None:
            limit = _LONG * max(max_length, 1)
            long = {i for i, t in enumerate(texts) if isinstance(t, str) and len(t) > limit}
            if long:  # rare: encode those alone, from their heads, and the rest in parallel
                ids = self.encode_batch(["" if i in long else t for i, t in enumerate(texts)], add_bos,
                                        add_eos, max_length)
                for i in long:
                    ids[i] = self.encode(texts[i], add_bos, add_eos, max_length)
                return ids
        encodings = self._encodings(texts)
        if not add_bos and not add_eos and max_length is None:
            return [e.ids for e in encodings]
        return [self._finish(e.ids, add_bos, add_eos, max_length) for e in encodings]

    # ---------------------------------------------------------------- decoding
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of `ids` (a list or a 1-D tensor); exact inverse of `encode` for char (seen characters) and bpe.

        With skip_special=False the special tokens appear as "<pad>", "<bos>", ...
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = list(ids)
        self._check_ids([ids])
        try:
            text = self.hf.decode(ids, skip_special_tokens=skip_special)
        except TypeError:
            raise SeqnlpError("token ids must be integers (a list or a 1-D integer tensor)") from None
        return _detokenize_words(text) if self.level == "word" else text

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        """`decode` for many sequences at once (a list of lists or a 2-D tensor; pad ids are dropped)."""
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        batch = [list(ids) for ids in batch]
        self._check_ids(batch)
        try:
            texts = self.hf.decode_batch(batch, skip_special_tokens=skip_special)
        except TypeError:
            raise SeqnlpError("token ids must be integers (lists or a 2-D integer tensor)") from None
        return [_detokenize_words(t) for t in texts] if self.level == "word" else texts

    def _check_ids(self, batch: list[list[int]]) -> None:
        """Refuse ids the vocabulary does not have: Hugging Face would silently drop them, hiding a model
        and a tokenizer that do not belong together. (min/max run in C; the per-id scan only on failure.)"""
        rows = [ids for ids in batch if ids]
        if not rows:
            return
        try:
            if 0 <= operator.index(min(map(min, rows))) and operator.index(max(map(max, rows))) < self.vocab_size:
                return
        except TypeError:
            pass
        wrong = next((i for ids in rows for i in ids if not self._valid_id(i)), None)
        if isinstance(wrong, (list, tuple)):
            raise SeqnlpError("decode takes one sequence of ids; use decode_batch for a batch (a 2-D tensor)")
        if wrong is not None:
            raise SeqnlpError(f"token id {wrong!r} is not in this tokenizer's vocabulary (integer ids 0.."
                              f"{self.vocab_size - 1}); were the ids made with another tokenizer, or does the "
                              "model's vocabulary differ?")

    def _valid_id(self, i: Any) -> bool:
        try:
            return 0 <= operator.index(i) < self.vocab_size
        except TypeError:
            return False

    # ---------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        """The saved form: our metadata around the Hugging Face tokenizer JSON."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "level": self.level, "lowercase": self.lowercase,
                "tokenizer": json.loads(self.hf.to_str())}

    def to_str(self) -> str:
        """The saved form as a JSON string (what `save` writes)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "tokenizer") -> Tokenizer:
        """Inverse of `to_dict`; also accepts a bare Hugging Face tokenizer.json object made by this class."""
        if not isinstance(obj, dict):
            raise SeqnlpError(f"{where} is not a tokenizer (expected a JSON object)")
        if obj.get("format") == FORMAT:
            if obj.get("version") != FORMAT_VERSION:
                raise SeqnlpError(f"{where} has tokenizer format version {obj.get('version')}, this seqnlp "
                                  f"reads version {FORMAT_VERSION}; upgrade seqnlp or retrain the tokenizer")
            level, lowercase, body = obj.get("level"), bool(obj.get("lowercase", False)), obj.get("tokenizer")
        elif "model" in obj and "pre_tokenizer" in obj:
            level, lowercase, body = _infer_level(obj), _infer_lowercase(obj), obj
        else:
            raise SeqnlpError(f"{where} is not a seqnlp tokenizer file (no 'format' or 'model' field)")
        try:
            hf = HFTokenizer.from_str(json.dumps(body))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise SeqnlpError(f"{where} holds an unreadable tokenizer ({err}); retrain it") from None
        return cls(hf, level, lowercase)

    @classmethod
    def from_str(cls, text: str) -> Tokenizer:
        """Inverse of `to_str`."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise SeqnlpError(f"tokenizer string is not valid JSON ({err})") from None
        return cls.from_dict(obj)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to one JSON file, atomically (a crash leaves the old file or the new one)."""
        atomic_write_bytes(path, (self.to_str() + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save` (a run folder's tokenizer.json); SeqnlpError if missing or corrupt."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        return cls.from_dict(read_json(path, max_bytes=MAX_TOKENIZER_BYTES), where=str(path))


def _bad_text(texts: Sequence[Any], name: str | None = None) -> SeqnlpError:
    """The error for the first text that Hugging Face `tokenizers` refused (it only says 'must be str')."""
    for i, text in enumerate(texts):
        where = name or ("text" if len(texts) == 1 else f"text {i}")
        if not isinstance(text, str):
            shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:39] + "…"
            fix = ("remove or fill missing texts before tokenizing" if text is None
                   else "pass str (decode bytes first)")
            what = "None" if text is None else f"{type(text).__name__} ({shown})"
            return SeqnlpError(f"{where} is {what}, not a string; {fix}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return SeqnlpError(f"{where} holds a lone surrogate {text[err.start]!r} at character {err.start}, which "
                               "is not valid Unicode; read the text as UTF-8 with errors='replace'")
    return SeqnlpError("the tokenizer refused the texts; pass a list of strings")


def _infer_level(obj: dict[str, Any]) -> str:
    model = (obj.get("model") or {}).get("type")
    pre = json.dumps(obj.get("pre_tokenizer"))
    if model == "BPE":
        return "bpe"
    if model == "WordLevel" and '"Split"' in pre:
        return "char"
    if model == "WordLevel":
        return "word"
    raise SeqnlpError(f"tokenizer model {model!r} is not one seqnlp makes (char, word, bpe)")


def _infer_lowercase(obj: dict[str, Any]) -> bool:
    return '"Lowercase"' in json.dumps(obj.get("normalizer"))
