"""seqnlp.data: loading splits (mirror, local files, offline failure), validation carving, padding, bucketing."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import seqnlp.data as data
from seqnlp.data import (
    BucketBatchSampler,
    available_splits,
    carve_sentences,
    carve_validation,
    check_columns,
    load_split,
    pad,
    padding_fraction,
    select_columns,
)
from seqnlp.errors import SeqnlpError

FIXTURES = Path(__file__).parent / "fixtures" / "data"

# ---------------------------------------------------------------------------------------------- the real mirror

MIRROR_ROWS = [
    ("imdb", "train", 25_000), ("imdb", "test", 25_000),
    ("sst2", "train", 67_349), ("sst2", "validation", 872), ("sst2", "test", 1_821),
    ("multi30k", "train", 29_000), ("multi30k", "validation", 1_014), ("multi30k", "test", 1_000),
    ("tiny_shakespeare", "train", 1), ("tiny_shakespeare", "validation", 1), ("tiny_shakespeare", "test", 1),
]


@pytest.mark.parametrize(("name", "split", "rows"), MIRROR_ROWS)
def test_mirror_row_counts(mirror: Path, name: str, split: str, rows: int) -> None:
    assert len(load_split(name, split)) == rows


@pytest.mark.parametrize(("hub_id", "name"), [("stanfordnlp/imdb", "imdb"), ("stanfordnlp/sst2", "sst2"),
                                              ("bentrevett/multi30k", "multi30k"),
                                              ("karpathy/tiny_shakespeare", "tiny_shakespeare")])
def test_hub_ids_resolve_to_the_mirror(mirror: Path, hub_id: str, name: str) -> None:
    assert available_splits(hub_id) == available_splits(name)
    assert load_split(hub_id, "train")[:3] == load_split(name, "train")[:3]


def test_mirror_columns_and_labels(mirror: Path) -> None:
    imdb = load_split("imdb", "train")
    assert imdb.column_names == ["text", "label"]
    assert imdb.features["label"].names == ["neg", "pos"]  # ClassLabel names come back from the parquet schema
    sst2 = load_split("stanfordnlp/sst2", "validation")
    assert sst2.column_names == ["idx", "sentence", "label"]
    assert sst2.features["label"].names == ["negative", "positive"]
    assert load_split("multi30k", "validation").column_names == ["en", "de"]
    assert len(load_split("tiny_shakespeare", "train")[0]["text"]) == 1_003_854


def test_mirror_splits_and_unknown_split(mirror: Path) -> None:
    assert available_splits("imdb") == ["train", "test", "unsupervised"]
    assert available_splits("tiny_shakespeare") == ["train", "validation", "test"]  # input.txt is not a split
    with pytest.raises(SeqnlpError, match=r"no split 'validation'; available splits: train, test"):
        load_split("stanfordnlp/imdb", "validation")


def test_data_dir_argument_overrides_the_environment(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_DATA_DIR", "/nonexistent")
    assert len(load_split("sst2", "validation", data_dir=mirror)) == 872


# ---------------------------------------------------------------------------------------------- offline failure

def _no_hub(*args: object, **kwargs: object) -> None:
    raise AssertionError("the hub loader must not be called when the hub is unreachable")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty mirror, no offline flags, a hub that does not answer, and a loader that must not be reached."""
    monkeypatch.setenv("SEQNLP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "_hub_problem", lambda *a, **k: "it did not answer within 1.5 s")
    monkeypatch.setattr(datasets, "load_dataset", _no_hub)
    monkeypatch.setattr(datasets, "get_dataset_split_names", _no_hub)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_offline_failure_is_fast_clear_and_one_line(offline: Path) -> None:
    start = time.monotonic()
    with pytest.raises(SeqnlpError) as info:
        load_split("stanfordnlp/imdb", "train")
    elapsed = time.monotonic() - start
    msg = str(info.value)
    print(f"offline failure took {elapsed:.3f} s: {msg}")
    assert "\n" not in msg
    assert "'stanfordnlp/imdb'" in msg and "split 'train'" in msg
    assert str(offline / "imdb") in msg  # the mirror path that was tried
    assert "hub" in msg and "SEQNLP_DATA_DIR" in msg and "connect" in msg  # what else was tried, and the fix
    assert elapsed < 5.0  # generous: the real check waits at most 1.5 s, this one is patched out


def test_offline_failure_without_a_mirror_dir(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQNLP_DATA_DIR")
    with pytest.raises(SeqnlpError, match=r"SEQNLP_DATA_DIR is unset.*hub"):
        available_splits("karpathy/tiny_shakespeare")


def test_offline_flag_set_after_import_is_honoured(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_hub_problem", _no_hub)  # the flag alone must stop us, without a network probe
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SeqnlpError, match=r"HF_DATASETS_OFFLINE is set"):
        load_split("bentrevett/multi30k", "train")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_probe_closed_port_is_unreachable() -> None:
    start = time.monotonic()
    assert "could not be reached" in data._hub_problem(f"http://127.0.0.1:{_free_port()}", timeout=1.0)
    assert time.monotonic() - start < 5.0


def test_hub_probe_gives_up_on_a_silent_server() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        problem = data._hub_problem(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        elapsed = time.monotonic() - start
    assert problem is not None and ("0.5 s" in problem or "timed out" in problem)
    assert elapsed < 5.0


@pytest.mark.parametrize(("status", "problem"), [(200, None), (204, None), (404, "it answered HTTP 404"),
                                                  (503, "it answered HTTP 503")])
def test_hub_probe_needs_a_success_status(status: int, problem: str | None) -> None:
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert data._hub_problem(f"http://127.0.0.1:{server.server_port}/", timeout=5.0) == problem
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------- local files

def test_local_folder_of_mixed_formats() -> None:
    folder = str(FIXTURES / "folder")
    assert available_splits(folder) == ["train", "validation", "test"]
    train = load_split(folder, "train")  # jsonl
    assert train.column_names == ["sentence", "label"] and len(train) == 4
    assert train[2] == {"sentence": "I loved every minute of it!", "label": 1}
    assert list(load_split(folder, "validation")["sentence"]) == ["warm, clever and kind", "a mess"]  # csv
    assert load_split(folder, "test")[0] == {"sentence": "not bad at all", "label": 1}  # tsv
    with pytest.raises(SeqnlpError, match=r"no split 'dev'; available splits: train, validation, test"):
        load_split(folder, "dev")


def test_local_shards_are_concatenated_in_order() -> None:
    folder = str(FIXTURES / "shards")
    assert available_splits(folder) == ["train", "validation"]
    assert list(load_split(folder, "train")["en"]) == ["A dog runs.", "Two men talk.", "A girl sings."]
    assert load_split(folder, "validation")[0] == {"en": "A cat sleeps.", "de": "Eine Katze schläft."}  # json array


def test_single_file_is_the_train_split() -> None:
    path = str(FIXTURES / "single.csv")
    assert available_splits(path) == ["train"]
    assert list(load_split(path, "train")["text"]) == ["good", "bad", "fine"]
    with pytest.raises(SeqnlpError, match=r"single file.*'train' split only.*carve_validation"):
        load_split(path, "test")


def test_txt_file_is_one_row_verbatim(tmp_path: Path) -> None:
    path = FIXTURES / "poem.txt"
    ds = load_split(str(path), "train")
    assert ds.column_names == ["text"] and len(ds) == 1
    assert ds[0]["text"] == path.read_bytes().decode("utf-8")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes("a\r\nb é\n".encode())
    assert load_split(str(crlf), "train")[0]["text"] == "a\r\nb é\n"  # no newline translation


def test_local_parquet_keeps_class_labels(tmp_path: Path) -> None:
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]}, features=features).to_parquet(
        str(tmp_path / "train.parquet"))
    ds = load_split(str(tmp_path), "train")
    assert ds.features["label"].names == ["neg", "pos"] and list(ds["label"]) == [0, 1]
    # As a mirror: <data_dir>/<name>/<split>.parquet, found from a hub id.
    mirror = tmp_path / "mirror" / "mydata"
    mirror.mkdir(parents=True)
    (tmp_path / "train.parquet").rename(mirror / "train.parquet")
    assert list(load_split("someone/mydata", "train", data_dir=tmp_path / "mirror")["text"]) == ["x", "y"]


def test_missing_and_corrupt_local_files(tmp_path: Path) -> None:
    with pytest.raises(SeqnlpError, match=r"does not exist"):
        load_split(str(tmp_path / "nope.csv"), "train")
    with pytest.raises(SeqnlpError, match=r"does not exist"):
        load_split("./no/such/folder", "train")
    bad = tmp_path / "train.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(SeqnlpError, match=r"not a readable parquet file"):
        load_split(str(tmp_path), "train")


# ---------------------------------------------------------------------------------------------- columns, carving

def test_check_and_select_columns() -> None:
    ds = load_split(str(FIXTURES / "folder"), "train")
    check_columns(ds, ["sentence", "label"])
    with pytest.raises(SeqnlpError, match=r"no column 'text'; its columns are: sentence, label"):
        check_columns(ds, ["text", "label"])
    mapped = select_columns(ds, {"text": "sentence", "label": "label"})
    assert mapped.column_names == ["text", "label"] and mapped[0]["text"] == "a fine, funny film"


def test_carve_sentences_holds_out_whole_sentences_and_their_own_phrases() -> None:
    # Four sentences with phrases, SST style; "the film" also occurs in two sentences, "rather dull" in one.
    texts = ["the film is a gem", "a gem", "the film", "is a gem",
             "the film is rather dull", "rather dull", "is rather dull",
             "a sweet quiet story", "quiet story", "sweet",
             "nothing works here at all", "works here", "at all"]
    ds = datasets.Dataset.from_dict({"text": texts, "i": list(range(len(texts)))})
    seen = set()
    for seed in range(12):
        train, val = carve_sentences(ds, "text", fraction=0.25, seed=seed)
        held = set(val["text"])
        assert len(held) == 1 and held <= {texts[0], texts[4], texts[7], texts[10]}  # one of the sentences
        seen |= held
        kept = set(train["text"])
        assert not kept & held
        sentence = held.pop()
        for phrase in texts:
            inside_held = phrase in sentence and phrase != sentence
            inside_other = any(phrase in other and phrase != other for other in (texts[0], texts[4], texts[7],
                                                                                texts[10]) if other != sentence)
            if inside_held and not inside_other:
                assert phrase not in kept, (sentence, phrase)  # its own phrases leave train
            elif phrase != sentence:
                assert phrase in kept, (sentence, phrase)  # shared ones ("the film") stay
        assert list(train["i"]) == sorted(train["i"])  # original order kept
        assert list(carve_sentences(ds, "text", 0.25, seed)[1]["i"]) == list(val["i"])  # deterministic
    assert len(seen) > 1  # the seed chooses
    with pytest.raises(SeqnlpError, match="not part of another"):
        carve_sentences(datasets.Dataset.from_dict({"text": ["a b", "a", "b"]}), "text")
    with pytest.raises(SeqnlpError, match="no column 'sentence'"):
        carve_sentences(ds, "sentence")


def test_carve_validation_is_deterministic_disjoint_and_complete() -> None:
    ds = datasets.Dataset.from_dict({"i": list(range(100))})
    train, val = carve_validation(ds, fraction=0.1, seed=0)
    assert len(train) == 90 and len(val) == 10
    assert sorted(list(train["i"]) + list(val["i"])) == list(range(100))
    assert list(train["i"]) == sorted(train["i"]) and list(val["i"]) == sorted(val["i"])  # original order kept
    # Pinned: a change here changes every carved benchmark split.
    assert list(val["i"]) == sorted(np.random.default_rng(0).permutation(100)[:10].tolist())
    assert list(val["i"]) == [5, 16, 20, 36, 52, 72, 82, 90, 93, 94]
    assert list(carve_validation(ds, 0.1, 0)[1]["i"]) == list(val["i"])
    assert list(carve_validation(ds, 0.1, 1)[1]["i"]) != list(val["i"])
    assert len(carve_validation(ds, 0.001, 0)[1]) == 1  # never empty
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(SeqnlpError, match=r"between 0 and 1"):
            carve_validation(ds, bad)


# ---------------------------------------------------------------------------------------------- padding

def test_pad_values_lengths_and_dtype() -> None:
    ids, lengths = pad([[5, 6, 7], [8], [], [9, 10]], pad_id=0)
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 0, 2]
    ids, lengths = pad([[], []], pad_id=3)
    assert ids.shape == (2, 1) and ids.tolist() == [[3], [3]]
    ids, lengths = pad([np.array([1, 2]), (3,)], pad_id=-1)  # any sequences of ints
    assert ids.tolist() == [[1, 2], [3, -1]]


def test_pad_matches_torch_pad_sequence() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 100, size=int(n)).tolist() for n in rng.integers(1, 40, size=50)]
    ids, lengths = pad(seqs, pad_id=0)
    ref = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=0)
    assert torch.equal(ids, ref)
    assert lengths.tolist() == [len(s) for s in seqs]


# ---------------------------------------------------------------------------------------------- bucketing

LENGTHS = np.random.default_rng(0).integers(1, 200, size=1_003)


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


@pytest.mark.parametrize("max_tokens", [None, 1_000])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_example_exactly_once_per_epoch(shuffle: bool, max_tokens: int | None) -> None:
    sampler = BucketBatchSampler(LENGTHS, 32, max_tokens=max_tokens, pool_batches=5, shuffle=shuffle, seed=3)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert sorted(_flat(batches)) == list(range(len(LENGTHS)))
        assert all(1 <= len(b) <= 32 for b in batches)


def test_batches_deterministic_per_seed_and_different_across_epochs() -> None:
    a = BucketBatchSampler(LENGTHS, 16, seed=7)
    b = BucketBatchSampler(LENGTHS.tolist(), 16, seed=7)
    assert a.batches(0) == b.batches(0) and a.batches(4) == b.batches(4)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != BucketBatchSampler(LENGTHS, 16, seed=8).batches(0)


def test_global_rngs_are_untouched() -> None:
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    BucketBatchSampler(LENGTHS, 16, seed=1).batches(0)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)


def test_iter_len_and_set_epoch() -> None:
    sampler = BucketBatchSampler(LENGTHS, 64)
    assert len(sampler) == -(-len(LENGTHS) // 64) == len(list(sampler))
    assert list(sampler) == sampler.batches(0)
    sampler.set_epoch(2)
    assert list(sampler) == sampler.batches(2)
    dropped = BucketBatchSampler(LENGTHS, 64, drop_last=True)
    assert len(dropped) == len(LENGTHS) // 64 == len(dropped.batches(0))
    assert all(len(b) == 64 for b in dropped.batches(0))
    tokens = BucketBatchSampler(LENGTHS, 64, max_tokens=2_000)
    assert len(tokens) == len(tokens.batches(0))


def test_max_tokens_is_respected() -> None:
    lengths = np.concatenate([LENGTHS, [5_000]])  # one example longer than the budget: a batch of its own
    sampler = BucketBatchSampler(lengths, 64, max_tokens=1_000, seed=0)
    for batch in sampler.batches(0):
        longest = int(lengths[batch].max())
        assert len(batch) * longest <= 1_000 or len(batch) == 1
    assert [len(lengths) - 1] in sampler.batches(0)


def test_unshuffled_is_sorted_and_stable() -> None:
    lengths = [3, 1, 2, 1, 3, 2]
    batches = BucketBatchSampler(lengths, 4, shuffle=False).batches(0)
    assert batches == [[1, 3, 2, 5], [0, 4]]
    assert BucketBatchSampler(lengths, 4, shuffle=False).batches(5) == batches


def test_bucketed_batches_are_length_sorted_within_pools() -> None:
    sampler = BucketBatchSampler(LENGTHS, 32, pool_batches=1_000, seed=0)  # one pool: a global sort
    spans = [int(LENGTHS[b].max() - LENGTHS[b].min()) for b in sampler.batches(0)]
    assert max(spans) <= 20
    assert padding_fraction(LENGTHS, sampler.batches(0)) < 0.1
    random = [list(range(i, min(i + 32, len(LENGTHS)))) for i in range(0, len(LENGTHS), 32)]
    assert padding_fraction(LENGTHS, random) > 0.3


def test_bad_arguments() -> None:
    with pytest.raises(SeqnlpError, match="batch_size"):
        BucketBatchSampler(LENGTHS, 0)
    with pytest.raises(SeqnlpError, match="max_tokens"):
        BucketBatchSampler(LENGTHS, 8, max_tokens=0)


def test_sst2_padding_fraction_under_15_percent(mirror: Path) -> None:
    """Issue 2's figure: padding share of sst2 train, word-level tokens, batch size 64, default pools."""
    from seqnlp.tokenization import Tokenizer

    texts = list(load_split("sst2", "train")["sentence"])
    tok = Tokenizer.train(texts, level="word")
    lengths = [len(ids) for ids in tok.encode_batch(texts)]
    sampler = BucketBatchSampler(lengths, 64, seed=0)
    fractions = [padding_fraction(lengths, sampler.batches(epoch)) for epoch in range(3)]
    shuffled = np.random.default_rng(0).permutation(len(lengths))
    unbucketed = padding_fraction(lengths, [shuffled[i:i + 64] for i in range(0, len(lengths), 64)])
    print(f"sst2 train padding fraction at batch 64: bucketed {fractions}, random batches {unbucketed:.4f}")
    assert max(fractions) < 0.15
    assert unbucketed > max(fractions)


def test_table_cache_returns_independent_datasets(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "train.parquet")
    first = load_split(str(tmp_path), "train")
    first.set_format("numpy")  # in-place on the Dataset object: must not leak into the next load
    assert load_split(str(tmp_path), "train")[0] == {"text": "a"}


def test_existing_local_data_wins_over_the_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror" / "sst2"
    mirror.mkdir(parents=True)
    pq.write_table(pa.table({"sentence": ["from the mirror"]}), mirror / "train.parquet")
    work = tmp_path / "work"
    (work / "sst2").mkdir(parents=True)
    (work / "sst2" / "train.csv").write_text("sentence\nfrom my folder\n", encoding="utf-8")
    (work / "imdb").mkdir()  # a folder without data files does not hide the mirror
    (tmp_path / "mirror" / "imdb").mkdir()
    pq.write_table(pa.table({"text": ["mirror imdb"]}), tmp_path / "mirror" / "imdb" / "train.parquet")
    monkeypatch.chdir(work)
    monkeypatch.setenv("SEQNLP_DATA_DIR", str(tmp_path / "mirror"))
    assert load_split("sst2", "train")[0] == {"sentence": "from my folder"}
    assert load_split("stanfordnlp/sst2", "train")[0] == {"sentence": "from the mirror"}
    assert load_split("imdb", "train")[0] == {"text": "mirror imdb"}
