"""The catalogue of bad inputs (issue 9): each gets one clear line naming the problem and the fix, a non-zero
exit from the command line, no traceback, and no partial files; nothing unsafe is ever loaded.

`CATALOGUE` lists every case with the test that covers it (here or in another test file); the first test
checks that each named test exists, so the count in the note is the count of real tests.
"""

from __future__ import annotations

import ast
import socket
import time
from pathlib import Path

import datasets
import pytest
import torch

import seqnlp.data as data
from seqnlp.data import BucketBatchSampler, carve_validation, check_columns, load_split, pad
from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError
from seqnlp.tokenization import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "robustness"
TESTS = Path(__file__).parent

# (case, "file::test") — the file is relative to tests/.
CATALOGUE: list[tuple[str, str]] = [
    # data
    ("data: nonexistent file or folder", "test_robustness.py::test_nonexistent_paths"),
    ("data: hub id with no network and no mirror (fast, one line)", "test_robustness.py::test_hub_id_without_network_or_mirror"),
    ("data: unknown split", "test_data.py::test_mirror_splits_and_unknown_split"),
    ("data: missing or misspelled column lists the existing ones", "test_robustness.py::test_missing_or_misspelled_column"),
    ("data: empty file / header-only csv / empty json / zero-row parquet", "test_robustness.py::test_empty_files_and_splits"),
    ("data: empty or whitespace-only texts and None values reach the task as they are", "test_robustness.py::test_missing_and_blank_texts_are_kept_for_the_task"),
    ("data: non-UTF-8 bytes in csv/tsv/jsonl/txt name the file, byte offset and line", "test_robustness.py::test_non_utf8_files"),
    ("data: UTF-16 file", "test_robustness.py::test_non_utf8_files"),
    ("data: csv row with more fields than the header", "test_robustness.py::test_malformed_csv"),
    ("data: csv with an unterminated quote", "test_robustness.py::test_malformed_csv"),
    ("data: corrupt parquet file", "test_data.py::test_missing_and_corrupt_local_files"),
    ("data: extremely long example (truncation by max_length)", "test_robustness.py::test_extremely_long_example"),
    ("data: one-line dataset (carving validation)", "test_robustness.py::test_one_line_dataset"),
    ("data: parallel corpus with a missing side loads, the side is None", "test_robustness.py::test_parallel_corpus_with_a_missing_side"),
    ("tokenizer: None, bytes or lone surrogates as text", "test_robustness.py::test_tokenizer_refuses_non_text"),
    ("tokenizer: ids outside the vocabulary at decode (model/tokenizer mismatch)", "test_robustness.py::test_decode_refuses_ids_outside_the_vocabulary"),
    ("tokenizer: corrupt, truncated, wrong-version tokenizer.json", "test_tokenization.py::test_load_errors_are_clear"),
    ("batching: zero or negative batch size / max_tokens", "test_data.py::test_bad_arguments"),
    ("encoder: zero-length sequence, lengths longer than the batch", "test_encoders.py::test_bad_lengths_and_state_are_clear_errors"),
    # safety and size limits
    ("safety: no pickle, unsafe torch.load, eval/exec in the package", "test_safety.py::test_package_never_unpickles_or_evaluates"),
    ("size: oversized JSON refused before reading", "test_io.py::test_oversized_json_is_refused_before_reading"),
    ("size: huge tokenizer.json refused before reading (no OOM)", "test_robustness.py::test_huge_tokenizer_file_is_refused_before_reading"),
    ("size: safetensors header claiming huge sizes", "test_robustness.py::test_safetensors_claiming_huge_sizes"),
    ("models: corrupt or truncated safetensors / JSON", "test_io.py::test_weights_round_trip_and_corruption"),
    # process
    ("process: Ctrl-C during training saves a checkpoint (library)", "test_trainer.py::test_ctrl_c_saves_a_checkpoint_then_resume_is_exact"),
    ("process: disk full or read-only while saving keeps the previous checkpoint", "test_trainer.py::test_write_failure_keeps_previous_checkpoint_then_resume_is_exact"),
    ("process: read-only folder for atomic writes", "test_io.py::test_read_only_folder_is_a_clear_error"),
    ("process: two runs writing the same folder", "test_trainer.py::test_a_second_writer_is_refused_by_the_lock"),
    ("process: existing run refused unless --overwrite; resume with changed settings refused", "test_trainer.py::test_existing_run_is_refused_unless_overwrite_or_resume"),
    ("process: non-finite loss stops with the last good checkpoint", "test_trainer.py::test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint"),
    ("config: out-of-range flag values name the flag", "test_config.py::test_out_of_range_values_name_the_flag"),
    ("config: unknown flags and choices (argparse usage)", "test_config.py::test_argparse_rejects_unknown_choices_and_flags"),
]


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_catalogue_case_names_an_existing_test() -> None:
    missing = []
    for case, ref in CATALOGUE:
        file, name = ref.split("::")
        if not (TESTS / file).is_file() or name not in _defined_tests(TESTS / file):
            missing.append(f"{case}: {ref}")
    assert missing == []
    print(f"{len(CATALOGUE)} catalogue cases, {len({r for _, r in CATALOGUE})} tests")


def one_line(err: BaseException | pytest.ExceptionInfo) -> str:
    """The message of a user-facing error, checked to be one non-empty line without a traceback."""
    msg = str(err.value if isinstance(err, pytest.ExceptionInfo) else err)
    assert msg.strip() and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ================================================================================================= data


def test_nonexistent_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for source in [str(tmp_path / "nope.csv"), str(tmp_path / "no" / "such" / "folder"), "./reviews",
                   "reviews.jsonl", "~/certainly/not/here.parquet"]:
        with pytest.raises(SeqnlpError) as info:
            load_split(source, "train")
        assert "does not exist" in one_line(info) and source in str(info.value)
        with pytest.raises(SeqnlpError, match="does not exist"):
            data.available_splits(source)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_id_without_network_or_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real probe (no patched answer) of a hub that cannot be reached, an empty mirror, and a hub loader
    # that must never be reached: the error comes from the 1.5 s check, not after ~24 s of retries.
    monkeypatch.setenv("SEQNLP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "_hub_endpoint", lambda: f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(data, "_hub_state", {})

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("datasets.load_dataset must not be called when the hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(SeqnlpError) as info:
        load_split("someone/reviews", "train")
    print(f"unreachable hub reported after {time.monotonic() - start:.2f} s")
    msg = one_line(info)
    assert "'someone/reviews'" in msg and str(tmp_path / "reviews") in msg  # what was tried
    assert "could not be reached" in msg and "SEQNLP_DATA_DIR" in msg  # why, and the fix


def test_missing_or_misspelled_column() -> None:
    ds = load_split(str(FIXTURES / "one_row.csv"), "train")
    with pytest.raises(SeqnlpError) as info:
        check_columns(ds, ["txt", "label"], source="one_row.csv")
    msg = one_line(info)
    assert "no column 'txt'" in msg and "its columns are: text, label" in msg and "'one_row.csv'" in msg
    with pytest.raises(SeqnlpError, match=r"no column 'sentence', 'labels'"):
        check_columns(ds, ["sentence", "labels"])
    with pytest.raises(SeqnlpError, match=r"its columns are: text, label"):
        data.select_columns(ds, {"text": "Text"})  # case matters


def test_empty_files_and_splits(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n  \n")
    (tmp_path / "array.json").write_bytes(b"[]")
    (tmp_path / "empty.txt").write_bytes(b"")
    datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")})) \
        .to_parquet(str(tmp_path / "zero.parquet"))
    cases = ["empty.csv", "blank.jsonl", "array.json", "empty.txt", "zero.parquet"]
    for name in cases:
        with pytest.raises(SeqnlpError) as info:
            load_split(str(tmp_path / name), "train")
        assert "holds no rows" in one_line(info) and name in str(info.value)
    with pytest.raises(SeqnlpError, match=r"header_only\.csv holds no rows"):
        load_split(str(FIXTURES / "header_only.csv"), "train")
    # An empty split in a folder whose other splits are fine: listed, but refused when loaded.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ngood,1\n")
    (folder / "test.csv").write_text("text,label\n")
    assert data.available_splits(str(folder)) == ["train", "test"]
    assert len(load_split(str(folder), "train")) == 1
    with pytest.raises(SeqnlpError, match=r"test\.csv holds no rows"):
        load_split(str(folder), "test")
    # An empty shard beside a non-empty one is skipped, not an error.
    (folder / "validation-00000-of-00002.jsonl").write_text("")
    (folder / "validation-00001-of-00002.jsonl").write_text('{"text": "ok", "label": 0}\n')
    assert load_split(str(folder), "validation")[:] == {"text": ["ok"], "label": [0]}


def test_missing_and_blank_texts_are_kept_for_the_task() -> None:
    # Loading does not judge rows (documented in seqnlp.data): the tasks refuse or skip them by row number,
    # and the tokenizer refuses None with a clear error rather than a TypeError from Rust.
    ds = load_split(str(FIXTURES / "missing_values.csv"), "train")
    assert ds["text"][:] == ["good film", None, "   ", "bad film"]
    tok = Tokenizer.train([t for t in ds["text"] if t], level="char")
    assert tok.encode("   ") == [tok.token_to_id(" ")] * 3 and tok.encode("") == []
    with pytest.raises(SeqnlpError) as info:
        tok.encode_batch(list(ds["text"]))
    assert "text 1 is a NoneType (None), not a string" in one_line(info)
    # An empty text pads to a row of padding; the encoder refuses a zero length instead of running on it.
    ids, lengths = pad([[5, 6], []], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 0]] and lengths.tolist() == [2, 0]
    with pytest.raises(SeqnlpError, match="length 0") as info:
        RNNEncoder("lstm", 3, 4)(torch.zeros(2, 2, 3), lengths)
    one_line(info)


@pytest.mark.parametrize(("name", "where"), [("latin1.csv", "byte 0xe8 at offset 30 (line 3)"),
                                             ("latin1.jsonl", "byte 0xe9 at offset 42 (line 2)"),
                                             ("utf16.csv", "UTF-16")])
def test_non_utf8_files(name: str, where: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SeqnlpError) as info:
        load_split(str(FIXTURES / name), "train")
    msg = one_line(info)
    assert f"{FIXTURES / name} is not UTF-8 text" in msg and where in msg and "iconv" in msg
    assert capfd.readouterr().err == ""  # no log lines of the readers beside our one line
    # The same bytes as .txt and .tsv files, and a character split across the reader's chunks.
    for ext in ("txt", "tsv"):
        copy = tmp_path / f"copy.{ext}"
        copy.write_bytes((FIXTURES / name).read_bytes())
        with pytest.raises(SeqnlpError, match=r"is not UTF-8 text"):
            load_split(str(copy), "train")
    good = tmp_path / "good.txt"
    good.write_bytes("Zürich — 😀\n".encode() * 3)
    assert data._utf8_problem(good, chunk_size=3) == (None, True)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("é😀\n".encode() * 2 + b"\xff")
    assert data._utf8_problem(bad, chunk_size=3)[0] == "byte 0xff at offset 14 (line 3) is not valid UTF-8"


def test_malformed_csv(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SeqnlpError) as info:
        load_split(str(FIXTURES / "ragged.csv"), "train")
    assert "more fields than its header (text, label)" in one_line(info)
    with pytest.raises(SeqnlpError) as info:
        load_split(str(FIXTURES / "unterminated.csv"), "train")
    assert "unterminated.csv" in one_line(info) and "EOF inside string" in str(info.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
def test_extremely_long_example(level: str, tmp_path: Path) -> None:
    # A 2-million-character "review" in one file: loaded whole, then truncated by the tokenizer's
    # max_length (bos/eos included), so batches stay bounded; the task's --max-length sets it.
    path = tmp_path / "long.txt"
    path.write_text("a very long review indeed. " * 75_000, encoding="utf-8")
    text = load_split(str(path), "train")[0]["text"]
    assert len(text) == 2_025_000
    tok = Tokenizer.train(["a very long review indeed."], level=level, vocab_size=270 if level == "bpe" else None)
    ids = tok.encode(text, add_bos=True, add_eos=True, max_length=512)
    assert len(ids) == 512 and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[1:-1] == tok.encode(text[:20_000])[:510]  # a prefix of the whole encoding
    [batched] = tok.encode_batch([text], max_length=100)
    assert len(batched) == 100
    with pytest.raises(SeqnlpError, match="too small to hold bos/eos"):
        tok.encode(text, add_bos=True, add_eos=True, max_length=1)


def test_one_line_dataset() -> None:
    ds = load_split(str(FIXTURES / "one_row.csv"), "train")
    assert len(ds) == 1
    with pytest.raises(SeqnlpError) as info:
        carve_validation(ds, 0.1)
    assert "cannot carve a validation split from 1 row(s); need at least 2" in one_line(info)
    two = datasets.concatenate_datasets([ds, ds])
    train, val = carve_validation(two, 0.5)
    assert len(train) == len(val) == 1  # never an empty part
    # One example still batches: one batch of one, every epoch.
    assert BucketBatchSampler([7], 32, max_tokens=4).batches(3) == [[0]]


def test_parallel_corpus_with_a_missing_side() -> None:
    # Loading keeps the null sides as None; the translation task refuses them naming the row (tested
    # with the task's command line), and the tokenizer refuses None, so nothing trains on a half pair.
    ds = load_split(str(FIXTURES / "parallel_missing.jsonl"), "train")
    assert ds.column_names == ["de", "en"]
    assert ds["en"][:] == ["A dog runs.", None, "A bird."] and ds["de"][2] is None
    tok = Tokenizer.train(["A dog runs."], level="bpe", vocab_size=270)
    with pytest.raises(SeqnlpError, match=r"text 1 is a NoneType"):
        tok.encode_batch(list(ds["en"]))


# ============================================================================================ tokenizer


def test_tokenizer_refuses_non_text() -> None:
    for level in ("char", "word", "bpe"):
        tok = Tokenizer.train(["hello"], level=level, vocab_size=270 if level == "bpe" else None)
        for bad, expected in [(None, "text is a NoneType (None), not a string; remove or fill missing texts"),
                              (b"hello", "text is a bytes (b'hello'), not a string; pass str"),
                              (3, "text is a int (3)"),
                              ("ab\ud800c", "lone surrogate '\\ud800' at character 2")]:
            with pytest.raises(SeqnlpError) as info:
                tok.encode(bad)  # type: ignore[arg-type]
            assert expected in one_line(info), (level, bad)
            with pytest.raises(SeqnlpError) as info:
                tok.encode_batch(["fine", bad])  # type: ignore[list-item]
            assert expected.replace("text ", "text 1 ", 1) in one_line(info)


def test_decode_refuses_ids_outside_the_vocabulary() -> None:
    tok = Tokenizer.train(["hello"], level="char")  # ids 0..7
    assert tok.vocab_size == 8 and tok.decode([4, 5, 7]) == "leo"  # by frequency: l, then e h o
    for ids, shown in [([4, 8], "token id 8"), ([-1], "token id -1"), ([2**40], f"token id {2**40}"),
                       ([4.5], "token id 4.5")]:
        with pytest.raises(SeqnlpError) as info:
            tok.decode(ids)
        assert shown in one_line(info) and "integer ids 0..7" in str(info.value)
        with pytest.raises(SeqnlpError, match=shown):
            tok.decode_batch([[4], ids])
    with pytest.raises(SeqnlpError, match="token ids must be integers"):
        tok.decode([4, 4.5, 5])
    with pytest.raises(SeqnlpError, match="use decode_batch"):
        tok.decode(torch.tensor([[4, 5]]))
    assert tok.decode_batch(torch.tensor([[4, 0], [5, 6]])) == ["l", "eh"]  # in range: padding dropped


# ============================================================================================ size limits


def test_huge_tokenizer_file_is_refused_before_reading(tmp_path: Path) -> None:
    # A sparse file: 300 MB by its size, no disk used; it must be refused from its size alone.
    path = tmp_path / "tokenizer.json"
    with open(path, "wb") as f:
        f.truncate(300 * 1024 * 1024)
    with pytest.raises(SeqnlpError) as info:
        Tokenizer.load(path)
    assert "over the" in one_line(info) and "limit" in str(info.value)
    with pytest.raises(SeqnlpError, match="limit"):
        Tokenizer.load(tmp_path)  # a run folder: its tokenizer.json


def test_safetensors_claiming_huge_sizes(tmp_path: Path) -> None:
    from seqnlp.io import load_weights, save_weights

    save_weights(tmp_path / "ok.safetensors", {"w": torch.ones(2, 3)})
    good = (tmp_path / "ok.safetensors").read_bytes()
    header_len = int.from_bytes(good[:8], "little")
    cases = {
        "header.safetensors": (2**62).to_bytes(8, "little") + good[8:],  # header length beyond the file
        "offsets.safetensors": good[:8] + good[8:8 + header_len].replace(b"[0,24]", b"[0,99999999999]")
        + good[8 + header_len:],  # a tensor claiming 100 GB of data
        "shape.safetensors": good[:8] + good[8:8 + header_len].replace(b"[2,3]", b"[9999999,9999999]")
        + good[8 + header_len:],  # a shape far larger than its bytes
        "short.safetensors": good[:-5],  # truncated data
    }
    for name, content in cases.items():
        assert content != good
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SeqnlpError) as info:
            load_weights(tmp_path / name)
        assert "not a readable safetensors file" in one_line(info), name
