"""seqnlp.tokenization: fixed special ids, exact round trips, determinism, save/load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqnlp.tokenization as tokenization
from seqnlp.errors import SeqnlpError
from seqnlp.tokenization import Tokenizer

CORPUS = [
    "The cat sat on the mat.\n",
    "A man in a blue shirt is standing on a ladder, cleaning a window.",
    "Ein Mann mit einem orangefarbenen Hut starrt etwas an.  Été à Zürich — naïve café!",
    "I don't think it's \"great\" (really)... 3.5 stars, 50% well-known.\tTabs too.\r\n",
    "日本語のテキスト、そして絵文字 😀👍🏽.",
]
LEVELS = ["char", "word", "bpe"]
fuzz = settings(max_examples=60, deadline=None, derandomize=True)  # derandomized: same cases every run


@pytest.fixture(scope="module")
def toks() -> dict[str, Tokenizer]:
    return {level: Tokenizer.train(CORPUS, level=level, vocab_size=300 if level == "bpe" else None)
            for level in LEVELS}


@pytest.mark.parametrize("level", LEVELS)
def test_special_ids_are_fixed(toks: dict[str, Tokenizer], level: str) -> None:
    tok = toks[level]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.token_to_id(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tok.level == level and len(tok) == tok.vocab_size > 4


@pytest.mark.parametrize("level", ["char", "bpe"])
def test_exact_round_trip_on_the_corpus(toks: dict[str, Tokenizer], level: str) -> None:
    tok = toks[level]
    for text in CORPUS:
        assert tok.decode(tok.encode(text)) == text
        assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text  # specials are skipped
    assert tok.decode_batch(tok.encode_batch(CORPUS)) == CORPUS


@fuzz
@given(st.text(min_size=0, max_size=200))
def test_char_round_trips_any_unicode_it_was_trained_on(text: str) -> None:
    tok = Tokenizer.train([text, "x"], level="char")
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)  # one id per code point
    assert tok.unk_id not in tok.encode(text)


@fuzz
@given(st.text(min_size=0, max_size=200))
def test_bpe_round_trips_any_unicode_even_unseen(text: str) -> None:
    tok = _bpe()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids  # byte-level: nothing is unknown


_BPE: list[Tokenizer] = []


def _bpe() -> Tokenizer:
    if not _BPE:
        _BPE.append(Tokenizer.train(CORPUS, level="bpe", vocab_size=300))
    return _BPE[0]


def test_special_token_text_is_not_a_special_id(toks: dict[str, Tokenizer]) -> None:
    text = "a <pad> b <eos>"
    for level in ("char", "bpe"):
        tok = Tokenizer.train([text], level=level, vocab_size=300 if level == "bpe" else None)
        ids = tok.encode(text)
        assert not set(ids) & {0, 1, 2, 3}
        assert tok.decode(ids) == text


def test_char_unknown_characters_become_unk(toks: dict[str, Tokenizer]) -> None:
    tok = toks["char"]
    ids = tok.encode("cat§")
    assert ids[-1] == tok.unk_id and tok.decode(ids) == "cat"
    assert tok.decode(ids, skip_special=False) == "cat<unk>"


@pytest.mark.parametrize(("tokens", "text"), [
    ("Hello , world !", "Hello, world!"),
    ("I don ' t think it ' s \" great \" ( really ) . . .", "I don't think it's \"great\" (really)..."),
    ("3 . 5 stars , 50 % well - known", "3.5 stars, 50% well-known"),
    ("Ein Mann starrt etwas an .", "Ein Mann starrt etwas an."),
    ("a port - a - potty , 1 : 2", "a port-a-potty, 1:2"),
])
def test_word_level_detokenization(tokens: str, text: str) -> None:
    tok = Tokenizer.train([tokens], level="word")
    assert tok.decode(tok.encode(tokens)) == text
    assert tok.decode(tok.encode(text)) == text  # whitespace + punctuation split, then joined back


def test_word_level_splits_on_whitespace_and_punctuation(toks: dict[str, Tokenizer]) -> None:
    tok = toks["word"]
    ids = tok.encode("The cat sat on the mat.")
    assert [tok.id_to_token(i) for i in ids] == ["The", "cat", "sat", "on", "the", "mat", "."]
    assert tok.encode("The dog") == [tok.token_to_id("The"), tok.unk_id]


@pytest.mark.parametrize("level", LEVELS)
def test_bos_eos_truncation_and_batch(toks: dict[str, Tokenizer], level: str) -> None:
    tok = toks[level]
    plain = tok.encode(CORPUS[1])
    assert tok.encode(CORPUS[1], add_bos=True, add_eos=True) == [2, *plain, 3]
    assert tok.encode(CORPUS[1], max_length=5) == plain[:5]
    assert tok.encode(CORPUS[1], add_bos=True, add_eos=True, max_length=5) == [2, *plain[:3], 3]
    assert tok.encode_batch(CORPUS) == [tok.encode(t) for t in CORPUS]
    assert tok.encode_batch(CORPUS, add_eos=True, max_length=4) == [tok.encode(t, add_eos=True, max_length=4)
                                                                     for t in CORPUS]
    with pytest.raises(SeqnlpError, match="max_length"):
        tok.encode("x", add_bos=True, add_eos=True, max_length=1)


def test_decode_accepts_padded_tensors(toks: dict[str, Tokenizer]) -> None:
    from seqnlp.data import pad

    tok = toks["char"]
    ids, _ = pad(tok.encode_batch(CORPUS[:3], add_bos=True, add_eos=True), tok.pad_id)  # (B, T)
    assert tok.decode_batch(ids) == CORPUS[:3]
    assert tok.decode(ids[0]) == CORPUS[0]


def test_long_char_texts_are_encoded_in_chunks_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(CORPUS) * 3
    tok = Tokenizer.train([text], level="char")
    whole = tok.hf.encode(text, add_special_tokens=False).ids
    monkeypatch.setattr(tokenization, "_CHUNK", 7)
    assert tok.encode(text) == whole
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("level", LEVELS)
def test_training_twice_gives_identical_json(level: str) -> None:
    size = 300 if level == "bpe" else None
    assert Tokenizer.train(CORPUS, level=level, vocab_size=size).to_str() == \
        Tokenizer.train(list(CORPUS), level=level, vocab_size=size).to_str()


def test_ids_are_the_same_in_a_fresh_process() -> None:
    """Rust hash maps are seeded per process: ties in counts must still be broken the same way."""
    code = ("import json,sys; from seqnlp.tokenization import Tokenizer; c=json.loads(sys.argv[1]); "
            "print(json.dumps([Tokenizer.train(c, level=l, vocab_size=300 if l == 'bpe' else None).to_str() "
            "for l in ('char', 'word', 'bpe')]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(CORPUS)], capture_output=True, text=True,
                         check=True).stdout
    here = [Tokenizer.train(CORPUS, level=lv, vocab_size=300 if lv == "bpe" else None).to_str() for lv in LEVELS]
    assert json.loads(out) == here


def test_char_ids_break_frequency_ties_by_character() -> None:
    tok = Tokenizer.train(["ba", "cab", "b"], level="char")  # b:3, a:2, c:1
    assert [tok.id_to_token(i) for i in range(4, 7)] == ["b", "a", "c"]
    tok = Tokenizer.train(["zyx"], level="char")  # all tied: code point order
    assert [tok.id_to_token(i) for i in range(4, 7)] == ["x", "y", "z"]


@pytest.mark.parametrize("level", LEVELS)
def test_save_load_gives_identical_ids(toks: dict[str, Tokenizer], level: str, tmp_path: Path) -> None:
    tok = toks[level]
    path = tmp_path / "run" / "tokenizer.json"
    tok.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert (saved["format"], saved["version"], saved["level"], saved["lowercase"]) == \
        ("seqnlp-tokenizer", 1, level, False)
    loaded = Tokenizer.load(path)
    assert loaded.level == level and loaded.vocab_size == tok.vocab_size
    assert loaded.encode_batch(CORPUS) == tok.encode_batch(CORPUS)
    assert loaded.decode_batch(tok.encode_batch(CORPUS)) == tok.decode_batch(tok.encode_batch(CORPUS))
    assert loaded.to_str() == tok.to_str()
    assert Tokenizer.load(path.parent).to_str() == tok.to_str()  # a run folder works too
    assert Tokenizer.from_str(tok.to_str()).encode(CORPUS[2]) == tok.encode(CORPUS[2])
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize("level", LEVELS)
def test_plain_hugging_face_json_loads_with_level_inferred(toks: dict[str, Tokenizer], level: str,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(toks[level].hf.to_str(), encoding="utf-8")
    loaded = Tokenizer.load(path)
    assert loaded.level == level and loaded.encode_batch(CORPUS) == toks[level].encode_batch(CORPUS)


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SeqnlpError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "seqnlp-tokenizer", "version": 1, "level": "char", "tokeni', encoding="utf-8")
    with pytest.raises(SeqnlpError, match="not valid JSON"):
        Tokenizer.load(bad)
    bad.write_text('{"format": "seqnlp-tokenizer", "version": 1, "level": "char", "tokenizer": {"x": 1}}')
    with pytest.raises(SeqnlpError, match="unreadable tokenizer"):
        Tokenizer.load(bad)
    bad.write_text('{"format": "seqnlp-tokenizer", "version": 99, "level": "char", "tokenizer": {}}')
    with pytest.raises(SeqnlpError, match="format version 99"):
        Tokenizer.load(bad)
    bad.write_text('[1, 2]')
    with pytest.raises(SeqnlpError, match="not a tokenizer"):
        Tokenizer.load(bad)
    with pytest.raises(SeqnlpError, match="not valid JSON"):
        Tokenizer.from_str("{")


def test_oversized_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokenizer.json"
    Tokenizer.train(CORPUS, level="char").save(path)
    monkeypatch.setattr(tokenization, "MAX_TOKENIZER_BYTES", 100)
    with pytest.raises(SeqnlpError, match="limit"):
        Tokenizer.load(path)


def test_lowercase_vocab_size_and_min_frequency() -> None:
    lower = Tokenizer.train(["AbC abc"], level="char", lowercase=True)
    assert lower.encode("ABC") == lower.encode("abc") and lower.decode(lower.encode("ABC")) == "abc"
    assert lower.token_to_id("A") is None
    assert Tokenizer.from_str(lower.to_str()).lowercase is True
    texts = ["a a a a b b b c c d"]
    assert [lower.id_to_token(i) for i in range(4, 6)] == ["a", "b"]
    assert len(Tokenizer.train(texts, level="char", vocab_size=6)) == 6  # 4 specials + ' ', 'a'
    assert len(Tokenizer.train(texts, level="word")) == 8
    assert len(Tokenizer.train(texts, level="word", min_frequency=2)) == 7  # 'd' is dropped
    assert len(Tokenizer.train(CORPUS * 5, level="bpe", vocab_size=280)) == 280


def test_bad_training_arguments() -> None:
    with pytest.raises(SeqnlpError, match="unknown tokenizer level 'bytes'"):
        Tokenizer.train(CORPUS, level="bytes")
    with pytest.raises(SeqnlpError, match="at least 260"):
        Tokenizer.train(CORPUS, level="bpe", vocab_size=100)
    with pytest.raises(SeqnlpError, match="no room"):
        Tokenizer.train(CORPUS, level="char", vocab_size=4)
    with pytest.raises(SeqnlpError, match="min_frequency"):
        Tokenizer.train(CORPUS, level="word", min_frequency=0)


def test_a_bare_string_is_one_text_and_columns_work() -> None:
    assert Tokenizer.train("abc", level="char").to_str() == Tokenizer.train(["abc"], level="char").to_str()
    tok = Tokenizer.train(iter(CORPUS), level="char")  # any iterable, e.g. a generator over a dataset
    assert tok.encode_batch(tuple(CORPUS)) == tok.encode_batch(CORPUS)
    assert torch.equal(torch.tensor(tok.encode("cat")), torch.tensor(tok.encode_batch(["cat"])[0]))
