"""Property-based tests (hypothesis, derandomized: the same cases on every run) for the parts that take
arbitrary input: the tokenizer (any Unicode), the batcher (any list of lengths), `pad`, and the encoder
(any lengths 1..T, any batch size).

Properties:
- tokenizer, char and bpe: decode(encode(s)) == s where defined (char: every character seen in training;
  bpe: always); char on unseen text: one id per code point, unseen ones are <unk>, decode drops exactly them.
- tokenizer, all levels: truncating a long text tokenizes only its head, with the same ids as the whole
  encoding cut to max_length; no crash on any string, ids in [0, vocab_size), never pad/bos/eos from encode,
  encode_batch == [encode(t) ...], max_length truncation is a prefix of the full encoding (+ bos/eos),
  decode of any in-range id list returns a str; save/load (to_str/from_str) keeps the ids.
- load_split on any bytes in a csv/tsv/json/jsonl/txt file: a non-empty dataset whose values all decode,
  or a one-line SeqnlpError naming the file.
- BucketBatchSampler: every example exactly once per epoch (at most once, and fewer than batch_size
  dropped, with drop_last), batch size and max_tokens respected (a longer example alone), len() matches,
  the same (seed, epoch) gives the same batches in a new sampler, unshuffled batches are length-sorted.
- pad: rows hold the sequences then pad_id, lengths are the sequence lengths, dtype long, width >= 1.
- RNNEncoder (all cells, uni/bi, 1-2 layers, fp32): appending padding steps and changing the values at
  padded positions changes neither the outputs at real positions nor the final state; outputs are zero
  at padded positions; each row equals a run of that sequence alone (1e-5).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seqnlp.data import BucketBatchSampler, load_split, pad
from seqnlp.encoders import CELLS, RNNEncoder
from seqnlp.errors import SeqnlpError
import seqnlp.tokenization as tokenization
from seqnlp.tokenization import Tokenizer

fuzz = settings(derandomize=True, deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
few = settings(fuzz, max_examples=80)

CORPUS = [
    "The cat sat on the mat. A man in a blue shirt is standing on a ladder.",
    "Ein Mann mit einem orangefarbenen Hut starrt etwas an. Été à Zürich — naïve café!",
    "I don't think it's \"great\" (really)... 3.5 stars, 50% well-known.\tTabs\r\n",
    "日本語のテキスト、そして絵文字 😀👍🏽.",
]
# Any Unicode text except lone surrogates, which cannot be encoded as UTF-8 and never come out of a reader.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    # Tiny tensors: extra OpenMP threads only add overhead on the shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_TOKS: dict[str, Tokenizer] = {}


def tok(level: str) -> Tokenizer:
    """One tokenizer per level, trained once on CORPUS."""
    if level not in _TOKS:
        _TOKS[level] = Tokenizer.train(CORPUS, level=level, vocab_size=320 if level == "bpe" else None)
    return _TOKS[level]


# ================================================================================= tokenizer


@fuzz
@given(text=TEXT)
def test_char_round_trip_of_text_seen_in_training(text: str) -> None:
    t = Tokenizer.train([text, "x"], level="char")
    ids = t.encode(text)
    assert len(ids) == len(text) and t.unk_id not in ids
    assert t.decode(ids) == text


@fuzz
@given(text=TEXT)
def test_char_unseen_characters_become_unk_and_decode_drops_exactly_them(text: str) -> None:
    t = tok("char")
    ids = t.encode(text)
    assert len(ids) == len(text)  # one id per code point, whitespace included
    seen = [c for c in text if t.token_to_id(c) is not None]
    assert sum(i == t.unk_id for i in ids) == len(text) - len(seen)
    assert t.decode(ids) == "".join(seen)


@fuzz
@given(text=TEXT)
def test_bpe_round_trips_any_text(text: str) -> None:
    t = tok("bpe")
    ids = t.encode(text)
    assert t.unk_id not in ids
    assert t.decode(ids) == text
    assert t.decode(t.encode(text, add_bos=True, add_eos=True)) == text


@fuzz
@given(level=st.sampled_from(["char", "word", "bpe"]), texts=st.lists(TEXT, max_size=5),
       max_length=st.one_of(st.none(), st.integers(2, 40)), bos=st.booleans(), eos=st.booleans())
def test_any_text_encodes_in_range_consistently_at_every_level(level: str, texts: list[str], max_length: int | None,
                                                                bos: bool, eos: bool) -> None:
    t = tok(level)
    full = [t.encode(x) for x in texts]
    assert t.encode_batch(texts) == full
    for ids in full:
        assert all(t.unk_id <= i < t.vocab_size for i in ids)  # never pad, bos or eos from the text itself
        assert isinstance(t.decode(ids), str)
    cut = t.encode_batch(texts, add_bos=bos, add_eos=eos, max_length=max_length)
    assert cut == [t.encode(x, add_bos=bos, add_eos=eos, max_length=max_length) for x in texts]
    for ids, whole in zip(cut, full):
        body = ids[1 if bos else 0: len(ids) - (1 if eos else 0)]
        assert body == whole[:len(body)]  # truncation keeps a prefix
        assert (ids[:1] == [t.bos_id]) == bos and (ids[-1:] == [t.eos_id]) == eos
        if max_length is not None:
            assert len(ids) <= max_length
            assert len(body) == min(len(whole), max_length - bos - eos)
        else:
            assert body == whole


_LOWER: dict[str, Tokenizer] = {}
_ALPHABET = list("    \t\n\r\u3000\x85\x1c\x1fabcXYZé..,!'-3😀日İ")  # \x1c: whitespace to Python, not to Rust
# Random strings over the same alphabet, so that bpe learns merges across whitespace and punctuation runs
# ("ĠĠ", ".,", " b"), the places where cutting a text in the wrong spot would change its tokens.
_RUNS = ["".join(np.random.default_rng(i).choice(_ALPHABET, size=300)) for i in range(100)]


@fuzz
@given(level=st.sampled_from(["char", "word", "bpe"]), lowercase=st.booleans(),
       text=st.text(st.sampled_from(_ALPHABET), max_size=600),
       max_length=st.integers(0, 30))
def test_truncating_a_long_text_from_its_head_equals_truncating_its_whole_encoding(
        level: str, lowercase: bool, text: str, max_length: int) -> None:
    # Texts over 16 characters per kept token are tokenized from their head only (seqnlp.tokenization):
    # the result must be exactly the whole encoding, truncated, whatever the mix of words and whitespace.
    key = f"{level}-{lowercase}"
    if key not in _LOWER:
        _LOWER[key] = Tokenizer.train(CORPUS + _RUNS, level=level, vocab_size=600 if level == "bpe" else None,
                                      lowercase=lowercase)
    t = _LOWER[key]
    whole = t.encode(text)
    # The lemma the shortcut rests on: the text cut at any place it may cut encodes to a prefix of the whole.
    for cut in tokenization._CUT.finditer(text):
        head = t.encode(text[:cut.start()])
        assert head == whole[:len(head)], (text[:cut.start()], cut.start())
    start = tokenization._HEAD_MIN
    tokenization._HEAD_MIN = 1  # short prefixes first, so that short texts take every path
    try:
        assert t.encode(text, max_length=max_length) == whole[:max_length]
        assert t.encode_batch(["ab", text], max_length=max_length) == [t.encode("ab")[:max_length],
                                                                       whole[:max_length]]
    finally:
        tokenization._HEAD_MIN = start


@fuzz
@given(level=st.sampled_from(["char", "word", "bpe"]), ids=st.lists(st.integers(0, 10_000), max_size=50))
def test_decode_of_any_in_range_ids_is_a_string(level: str, ids: list[int]) -> None:
    t = tok(level)
    ids = [i % t.vocab_size for i in ids]
    text = t.decode(ids)
    assert isinstance(text, str)
    assert isinstance(t.decode(ids, skip_special=False), str)
    assert t.decode_batch([ids, ids]) == [text, text]


@few
@given(level=st.sampled_from(["char", "word", "bpe"]), texts=st.lists(TEXT, min_size=1, max_size=4), probe=TEXT)
def test_any_training_texts_give_a_tokenizer_that_survives_save_and_load(level: str, texts: list[str],
                                                                        probe: str) -> None:
    if not any(x.strip() for x in texts):
        with pytest.raises(SeqnlpError, match="training texts are empty"):
            Tokenizer.train(texts, level=level)
        return
    t = Tokenizer.train(texts, level=level, vocab_size=270 if level == "bpe" else None)
    again = Tokenizer.from_str(t.to_str())
    assert again.level == level and again.vocab_size == t.vocab_size
    for x in [*texts, probe]:
        assert again.encode(x) == t.encode(x)
    if level == "bpe":
        assert t.decode(t.encode(probe)) == probe


# ================================================================================= loading files


_FILE_TEXT = st.text(st.sampled_from(list(',;\t\n\r "\'{}[]:abc1.-\\é😀\x00\ufeff')), max_size=80)


@few
@given(ext=st.sampled_from(["csv", "tsv", "json", "jsonl", "txt"]),
       content=st.one_of(st.binary(max_size=80), _FILE_TEXT.map(lambda t: t.encode("utf-8")),
                         st.builds(lambda head, body: (head + "\n" + body).encode("utf-8"),
                                   st.sampled_from(["text,label", "text\tlabel", '{"text": "a", "label": 1}']),
                                   _FILE_TEXT)))
def test_any_bytes_in_a_data_file_load_or_give_one_clear_line(ext: str, content: bytes) -> None:
    # Whatever a user's file holds: a non-empty dataset, or a one-line SeqnlpError naming the file; never
    # another exception, never an empty split, and never strings that fail later on first access.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{ext}"
        path.write_bytes(content)
        try:
            ds = load_split(str(path), "train")
        except SeqnlpError as err:
            assert "\n" not in str(err) and str(path) in str(err), str(err)
            return
        assert len(ds) >= 1
        ds[:]  # every value decodes
        if ext == "txt":
            assert ds["text"][:] == [content.decode("utf-8-sig")]


# ================================================================================= config files


def _config_classes() -> list[type]:
    from seqnlp.tasks import generation, sentiment, translation
    from seqnlp.tasks.runner import SourceConfig
    from seqnlp.trainer import TrainConfig

    return [sentiment.ModelConfig, SourceConfig, generation.ModelConfig, generation.DataConfig,
            translation.ModelConfig, translation.DataConfig, translation.DecodeConfig, TrainConfig]


_JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                        st.text(max_size=8), st.lists(st.integers(), max_size=2), st.just({}))


@st.composite
def _config_files(draw: st.DrawFn) -> tuple[type, dict]:
    import dataclasses

    cls = draw(st.sampled_from(_config_classes()))
    names = [f.name for f in dataclasses.fields(cls)]
    keys = draw(st.lists(st.one_of(st.sampled_from(names), st.sampled_from(["hiden_size", "x"])), max_size=4))
    return cls, {k: draw(_JSON_VALUE) for k in keys}


@fuzz
@given(case=_config_files())
def test_any_values_in_a_config_file_resolve_to_a_valid_config_or_one_clear_line(case: tuple[type, dict]) -> None:
    # A run's config.json is read back on load and resume: whatever it holds, resolve() gives a config whose
    # fields have their declared types and ranges, or a one-line SeqnlpError; never a crash later in a model.
    import dataclasses
    import math

    from seqnlp.config import _field_type, check, resolve

    cls, values = case
    try:
        config = resolve(cls, None, values)
    except SeqnlpError as err:
        assert "\n" not in str(err)
        return
    for f in dataclasses.fields(cls):
        value, typ = getattr(config, f.name), _field_type(cls, f)
        if value is None or typ not in (int, float, str, bool):
            continue
        assert type(value) is typ, (f.name, value)  # a bool is not an int, an int is not a bool (finding R16)
        if typ is float:
            assert math.isfinite(value), (f.name, value)
    check(config)


# ================================================================================= batching


@st.composite
def samplers(draw: st.DrawFn) -> tuple[list[int], dict]:
    lengths = draw(st.lists(st.integers(0, 300), min_size=0, max_size=150))
    kwargs = {
        "batch_size": draw(st.integers(1, 40)),
        "max_tokens": draw(st.one_of(st.none(), st.integers(1, 2_000))),
        "pool_batches": draw(st.integers(1, 6)),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    return lengths, kwargs


@fuzz
@given(case=samplers(), epoch=st.integers(0, 1_000))
def test_every_example_exactly_once_and_limits_respected(case: tuple[list[int], dict], epoch: int) -> None:
    lengths, kw = case
    sampler = BucketBatchSampler(lengths, **kw)
    batches = sampler.batches(epoch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= kw["batch_size"] for b in batches)
    if kw["max_tokens"] is not None:
        assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= kw["max_tokens"] for b in batches)
    else:
        assert sum(len(b) < kw["batch_size"] for b in batches) <= 1  # only one short batch
    sampler.set_epoch(epoch)
    assert len(sampler) == len(batches) and list(sampler) == batches
    # Deterministic per (seed, epoch): a new sampler (another process) gives the same batches.
    assert BucketBatchSampler(lengths, **kw).batches(epoch) == batches
    if not kw["shuffle"]:
        flat = [lengths[i] for b in batches for i in b]
        assert flat == sorted(flat)


@fuzz
@given(case=samplers(), epoch=st.integers(0, 1_000))
def test_drop_last_drops_only_the_short_batch(case: tuple[list[int], dict], epoch: int) -> None:
    lengths, kw = case
    kw["max_tokens"] = None  # drop_last applies without max_tokens only
    sampler = BucketBatchSampler(lengths, **kw, drop_last=True)
    batches = sampler.batches(epoch)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) and set(flat) <= set(range(len(lengths)))
    assert all(len(b) == kw["batch_size"] for b in batches)
    assert len(lengths) - len(flat) < kw["batch_size"]
    assert len(sampler) == len(batches)


@fuzz
@given(seqs=st.lists(st.lists(st.integers(0, 2**40), max_size=30), max_size=12), pad_id=st.integers(-5, 5))
def test_pad_places_every_token_and_fills_the_rest(seqs: list[list[int]], pad_id: int) -> None:
    ids, lengths = pad(seqs, pad_id)
    width = max([len(s) for s in seqs] + [1])
    assert ids.dtype == lengths.dtype == torch.long
    assert tuple(ids.shape) == (len(seqs), width) and lengths.tolist() == [len(s) for s in seqs]
    for row, s in zip(ids.tolist(), seqs):
        assert row == list(s) + [pad_id] * (width - len(s))


# ================================================================================= encoder


@st.composite
def encoder_cases(draw: st.DrawFn) -> dict:
    batch = draw(st.integers(1, 6))
    time = draw(st.integers(1, 7))
    return {
        "cell": draw(st.sampled_from(CELLS)),
        "bidirectional": draw(st.booleans()),
        "layers": draw(st.integers(1, 2)),
        "lengths": draw(st.lists(st.integers(1, time), min_size=batch, max_size=batch)),
        "time": time,
        "extra": draw(st.integers(0, 4)),  # padding steps appended
        "seed": draw(st.integers(0, 2**31 - 1)),
        "with_state": draw(st.booleans()),
    }


def _state_close(a: torch.Tensor | tuple, b: torch.Tensor | tuple, atol: float) -> bool:
    pa = a if isinstance(a, tuple) else (a,)
    pb = b if isinstance(b, tuple) else (b,)
    return all(torch.allclose(x, y, atol=atol, rtol=0) for x, y in zip(pa, pb, strict=True))


def _rows(state: torch.Tensor | tuple, i: int) -> torch.Tensor | tuple:
    if isinstance(state, tuple):
        return tuple(s[:, i:i + 1] for s in state)  # (L*dirs, 1, H) each
    return state[:, i:i + 1]  # (L*dirs, 1, H)


@fuzz
@given(case=encoder_cases())
def test_encoder_padding_invariance_and_per_sequence_parity(case: dict) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    torch.manual_seed(case["seed"])
    emb, hidden = 3, 4
    enc = RNNEncoder(case["cell"], emb, hidden, num_layers=case["layers"], bidirectional=case["bidirectional"],
                     precision="fp32").eval()
    lengths = torch.tensor(case["lengths"])  # (B,)
    batch, time = len(case["lengths"]), case["time"]
    x = torch.randn(batch, time, emb, generator=gen)  # (B, T, E)
    real = torch.arange(time)[None, :] < lengths[:, None]  # (B, T)
    state = None
    if case["with_state"]:
        h0 = torch.randn(case["layers"] * enc.num_directions, batch, hidden, generator=gen)  # (L*dirs, B, H)
        state = (h0, torch.randn(h0.shape, generator=gen)) if case["cell"] == "lstm" else h0
    with torch.no_grad():
        out, final = enc(x, lengths, state)  # (B, T, D)
        assert out.shape == (batch, time, enc.output_dim)
        assert torch.all(out[~real] == 0)  # zero at padded positions
        # Other values at padded positions, and more padding steps: real positions and final state unchanged.
        noisy = torch.where(real[..., None], x, torch.randn(x.shape, generator=gen) * 10)  # (B, T, E)
        longer = torch.cat([noisy, torch.randn(batch, case["extra"], emb, generator=gen)], dim=1)  # (B, T+x, E)
        out2, final2 = enc(longer, lengths, state)  # (B, T+x, D)
        assert torch.allclose(out2[:, :time], out, atol=1e-6, rtol=0)
        assert torch.all(out2[:, time:] == 0)
        assert _state_close(final2, final, 1e-6)
        # Each row alone, unpadded, gives the same outputs and final state.
        for i, n in enumerate(case["lengths"]):
            alone, final_alone = enc(x[i:i + 1, :n], lengths[i:i + 1], None if state is None else _rows(state, i))
            assert torch.allclose(alone[0], out[i, :n], atol=1e-5, rtol=0)
            assert _state_close(final_alone, _rows(final, i), 1e-5)


@few
@given(case=encoder_cases())
def test_encoder_gradients_ignore_padding(case: dict) -> None:
    assume(min(case["lengths"]) < case["time"])  # some padding to ignore
    gen = torch.Generator().manual_seed(case["seed"])
    torch.manual_seed(case["seed"])
    enc = RNNEncoder(case["cell"], 3, 4, num_layers=case["layers"], bidirectional=case["bidirectional"],
                     precision="fp32")
    lengths = torch.tensor(case["lengths"])  # (B,)
    x = torch.randn(len(lengths), case["time"], 3, generator=gen, requires_grad=True)  # (B, T, E)
    out, final = enc(x, lengths)  # (B, T, D)
    h = final[0] if isinstance(final, tuple) else final  # (L*dirs, B, H)
    (out.square().sum() + h.sum()).backward()
    real = torch.arange(case["time"])[None, :] < lengths[:, None]  # (B, T)
    assert x.grad is not None and torch.all(x.grad[~real] == 0)  # padded inputs get no gradient
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)

