"""Issue 19 ("Trust"), the shared code: what the library reads and writes can be trusted, or it says why not.

Readers take regular files only, with a cap on the bytes actually read; config sections must be mappings;
a run's weights carry their best step and the hashes of the config and tokenizer they were trained with;
a hand-edited trainer state is a one-line error; results files are range-checked and never written over a
run's own files; seeds, devices and decoding settings are checked where they enter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_prog
from safetensors import SafetensorError, safe_open

from seqnlp import checkpoint as ckpt
from seqnlp import decoding
from seqnlp import io as sio
from seqnlp.config import add_flags, resolve
from seqnlp.device import resolve_device
from seqnlp.errors import SeqnlpError, check_finite
from seqnlp.metrics import accuracy
from seqnlp.results import build_result, check_results_path, validate_result, write_result
from seqnlp.trainer import TrainConfig, check_artifacts, load_model_weights

ROOT = Path(__file__).resolve().parents[1]


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def alarm():  # type: ignore[no-untyped-def]
    """Turn a hang into a failure after a few seconds (a FIFO read would otherwise block forever)."""
    def hung(*_: object) -> None:
        raise TimeoutError("the read hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- 1. readers: regular files, bytes counted


def test_a_fifo_named_config_json_is_refused_without_hanging(tmp_path: Path, alarm: None) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(SeqnlpError, match="not a regular file") as info:
        sio.read_json(fifo)
    assert str(fifo) in one_line(info)


def test_dev_zero_named_config_json_is_refused_not_read_until_out_of_memory(tmp_path: Path, alarm: None) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    (tmp_path / "config.json").symlink_to("/dev/zero")
    with pytest.raises(SeqnlpError, match="not a regular file") as info:
        sio.read_json(tmp_path / "config.json")
    one_line(info)
    with pytest.raises(SeqnlpError, match="not a regular file"):
        sio.read_file_bytes(tmp_path / "config.json", 1000)


def test_size_cap_counts_the_bytes_read_not_the_stat_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grows.json"
    path.write_text(json.dumps({"v": "x" * 5000}))
    real_fstat = os.fstat

    class Small:  # a file that stat reports as tiny (like /proc files, or one growing while it is read)
        def __init__(self, st: os.stat_result) -> None:
            self._st = st

        def __getattr__(self, name: str) -> object:
            return 10 if name == "st_size" else getattr(self._st, name)

    monkeypatch.setattr(sio.os, "fstat", lambda fd: Small(real_fstat(fd)))
    with pytest.raises(SeqnlpError, match="over the 1000-byte limit") as info:
        sio.read_json(path, max_bytes=1000)
    one_line(info)
    assert sio.read_json(path, max_bytes=6000) == {"v": "x" * 5000}


def test_proc_files_with_stat_size_zero_are_capped(alarm: None) -> None:
    proc = Path("/proc/self/status")
    if not proc.is_file() or proc.stat().st_size != 0:
        pytest.skip("no /proc with zero-size files")
    with pytest.raises(SeqnlpError, match="over the 50-byte limit"):
        sio.read_file_bytes(proc, 50)


def test_read_file_bytes_names_folders_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SeqnlpError, match="is a folder"):
        sio.read_json(tmp_path)
    with pytest.raises(SeqnlpError, match="does not exist"):
        sio.read_file_bytes(tmp_path / "nope.json", 10)
    (tmp_path / "a.json").write_bytes(b'{"a": 1}')
    assert sio.read_file_bytes(tmp_path / "a.json", 8) == b'{"a": 1}'  # exactly at the cap is fine
    assert sio.sha256_file(tmp_path / "a.json") == hashlib.sha256(b'{"a": 1}').hexdigest()


def test_weights_reader_refuses_a_fifo(tmp_path: Path, alarm: None) -> None:
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(SeqnlpError, match="not a regular file"):
        sio.load_weights(tmp_path / "model.safetensors")


# ---------------------------------------------------------------- 2. config sections must be mappings


@pytest.mark.parametrize("section", [[1, 2], "fast", 3, 2.5, True])
def test_a_config_section_that_is_not_a_mapping_is_a_seqnlp_error(section: object) -> None:
    with pytest.raises(SeqnlpError, match=r"run/config\.json train: must be a JSON object") as info:
        resolve(TrainConfig, {}, section, source="run/config.json train")  # type: ignore[arg-type]
    one_line(info)
    with pytest.raises(SeqnlpError, match="settings must be a mapping"):
        resolve(TrainConfig, {}, section)  # type: ignore[arg-type]


@pytest.mark.parametrize(("values", "needle"), [
    ({"epochs": "3"}, "epochs must be int"), ({"epochs": [3]}, "epochs must be int"),
    ({"lr": {"x": 1}}, "lr must be float"), ({"device": 3}, "device must be str"),
    ({"curves": "yes"}, "curves must be bool"), ({1: 2}, "setting names must be strings"),
])
def test_a_wrong_type_inside_a_section_is_a_seqnlp_error(values: dict, needle: str) -> None:
    with pytest.raises(SeqnlpError, match=needle):
        resolve(TrainConfig, {}, values, source="run/config.json train")


# ---------------------------------------------------------------- 5. seed, device, decoding settings


@pytest.mark.parametrize(("seed", "needle"), [(-1, "--seed must be at least 0"),
                                              (2**32, "--seed must be at most 4294967295")])
def test_seed_range_is_checked_with_the_flags(seed: int, needle: str) -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, TrainConfig)
    with pytest.raises(SeqnlpError, match=needle):
        resolve(TrainConfig, parser.parse_args(["--seed", str(seed)]))
    assert resolve(TrainConfig, parser.parse_args(["--seed", str(2**32 - 1)])).seed == 2**32 - 1


@pytest.mark.parametrize("name", ["mps", "xla", "meta", "junk", "cuda:x", "cuda:-1", "cuda:", "cpu:0", "", " cpu",
                                  "CUDA", 3, None])
def test_only_auto_cpu_cuda_and_cuda_n_are_devices(name: object) -> None:
    with pytest.raises(SeqnlpError, match="device") as info:
        resolve_device(name)  # type: ignore[arg-type]
    one_line(info)


def test_known_devices_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(SeqnlpError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(SeqnlpError, match="cuda:99"):
            resolve_device("cuda:99")


@pytest.mark.parametrize(("kwargs", "needle"), [
    (dict(temperature=0.0), "temperature must be > 0"), (dict(temperature=-1.0), "temperature must be > 0"),
    (dict(temperature=1e-3), "temperature must be between 0.01 and 100"),
    (dict(temperature=1e3), "temperature must be between 0.01 and 100"),
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(temperature="hot"), "temperature must be a number"), (dict(temperature=True), "temperature must be a number"),
    (dict(top_k=0), "top-k must be >= 1"), (dict(top_k=2.5), "top-k must be an integer"),
    (dict(top_k="3"), "top-k must be an integer"),
    (dict(top_p=0.0), r"top-p must be in \(0, 1\]"), (dict(top_p=1.5), r"top-p must be in \(0, 1\]"),
    (dict(top_p=1e-9), "top-p must be at least 1e-06"), (dict(top_p="0.9"), "top-p must be a number"),
    (dict(beam=0), "beam size must be >= 1"), (dict(beam=257), "beam size must be at most 256"),
    (dict(beam=2.5), "beam size must be an integer"), (dict(beam=True), "beam size must be an integer"),
    (dict(beam="5"), "beam size must be an integer"),
    (dict(length=-1), "length must be >= 0"), (dict(length=3.5), "length must be an integer"),
    (dict(length=11, max_length=10), "length must be at most 10"),
])
def test_check_decoding_names_the_argument(kwargs: dict, needle: str) -> None:
    with pytest.raises(SeqnlpError, match=needle) as info:
        decoding.check_decoding(**kwargs)
    one_line(info)


def test_check_decoding_accepts_the_edges_and_flag_names() -> None:
    assert decoding.MAX_BEAM == 256
    decoding.check_decoding(temperature=1e-2, top_k=1, top_p=1e-6, beam=decoding.MAX_BEAM, length=0)
    decoding.check_decoding(temperature=100, top_p=1.0, beam=np.int64(3), length=np.int64(5))
    decoding.check_decoding()  # nothing given, nothing checked
    with pytest.raises(SeqnlpError, match="--beam must be at most 256"):
        decoding.check_decoding(beam=1000, flags=True)


class _Counter:
    """A decoder over 5 tokens that never prefers eos (id 0), counting its steps."""

    def __init__(self, interrupt_at: int = 0) -> None:
        self.steps = 0
        self.interrupt_at = interrupt_at

    def step(self, tokens: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        self.steps += 1
        if self.steps == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does
        logits = torch.tensor([[-5.0, 1.0, 0.5, 0.2, 0.1]]).expand(tokens.size(0), -1)  # (N, V)
        return logits, state

    def reorder(self, state: object, index: torch.Tensor) -> object:
        return state


def test_decoders_refuse_wrong_types_naming_the_argument() -> None:
    start = torch.zeros(2, dtype=torch.long)
    with pytest.raises(SeqnlpError, match="length must be an integer"):
        decoding.sample(_Counter(), None, start, 3.5)  # type: ignore[arg-type]
    with pytest.raises(SeqnlpError, match="beam size must be an integer"):
        decoding.beam_search(_Counter(), None, start, 2.5, 5, eos_id=0)  # type: ignore[arg-type]
    with pytest.raises(SeqnlpError, match="beam size must be at most 256"):
        decoding.beam_search(_Counter(), None, start, 100_000, 5, eos_id=0)
    with pytest.raises(SeqnlpError, match="length must be an integer"):
        decoding.greedy(_Counter(), None, start, 2.5, eos_id=0)  # type: ignore[arg-type]
    with pytest.raises(SeqnlpError, match="temperature must be between"):
        decoding.sample(_Counter(), None, start, 3, temperature=1e-5)


def test_ctrl_c_stops_a_running_beam_search() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    decoder = _Counter(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        decoding.beam_search(decoder, None, torch.zeros(2, dtype=torch.long), 4, 10_000, eos_id=0)
    assert decoder.steps <= 4  # stopped at once, not after 10,000 steps


# ---------------------------------------------------------------- 4. check_finite and results files


@pytest.mark.parametrize("values", [torch.tensor([1.0, float("nan"), 2.0]), [1.0, float("inf")],
                                    np.array([[0.0], [-np.inf]]), float("nan"), (1, float("nan"))])
def test_check_finite_refuses_nan_and_inf(values: object) -> None:
    with pytest.raises(SeqnlpError, match=r"the model produced non-finite outputs \(NaN/inf\): ") as info:
        check_finite(values, "the model")
    one_line(info)


def test_check_finite_passes_finite_values_through() -> None:
    t = torch.randn(3, 4)
    assert check_finite(t, "the model") is t
    assert check_finite([1, 2.5], "x") == [1, 2.5]
    check_finite(torch.zeros(0), "x")
    check_finite(torch.tensor([1, 2]), "ints")  # integer tensors are always finite
    check_finite(torch.ones(2, dtype=torch.bfloat16), "bf16")
    with pytest.raises(SeqnlpError, match=r"2 of 4 values"):
        check_finite(torch.tensor([float("nan"), 1.0, float("inf"), 0.0]), "scores")


def _result(name: str = "accuracy", value: float = 75.0) -> dict:
    r = build_result(benchmark="sst2", version=1, task="sentiment", split="validation",
                     scores=[accuracy([0, 1, 1, 0], [0, 1, 0, 0])], model="m", params=1, train_seconds=1.0,
                     tokens_per_second=1.0, seed=0, config={})
    from seqnlp.benchmark import METRIC_DIRECTIONS

    r["metrics"] = {name: {"value": value, "higher_is_better": METRIC_DIRECTIONS.get(name, True), "signature": None}}
    return r


@pytest.mark.parametrize(("name", "value"), [
    ("accuracy", 100.5), ("accuracy", -0.1), ("macro_f1", 101), ("bleu", 120.0), ("chrf", -3.0), ("f1", 200.0),
    ("precision", -1), ("recall", 100.01), ("token_accuracy", 1e9), ("nats_per_char", -0.5),
    ("bits_per_char", -1e-9), ("perplexity", 0.99), ("perplexity", 0.0)])
def test_metric_values_out_of_range_are_refused(name: str, value: float) -> None:
    with pytest.raises(SeqnlpError, match=f"metrics.{name}.value") as info:
        validate_result(_result(name, value))
    one_line(info)


@pytest.mark.parametrize(("name", "value"), [("accuracy", 0.0), ("accuracy", 100.0), ("bleu", 0), ("chrf", 100),
                                             ("nats_per_char", 0.0), ("bits_per_char", 7.5), ("perplexity", 1.0),
                                             ("perplexity", 1e6), ("some_other_metric", -5.0)])
def test_metric_values_in_range_pass(name: str, value: float) -> None:
    validate_result(_result(name, value))


def test_every_committed_results_file_is_still_valid() -> None:
    from seqnlp.results import read_results

    errors: list = []
    read_results(ROOT / "results", errors=errors)
    assert errors == []


def _run_folder(root: Path, marker: str = "trainer_state.json") -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / marker).write_text("{}")
    return run


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_src.json", "model.safetensors",
                                  "last.safetensors", "trainer_state.json", "log.jsonl", "metrics.json",
                                  "evaluation_test.json", "checkpoint/model-000000003.safetensors"])
@pytest.mark.parametrize("marker", ["trainer_state.json", "model.safetensors"])
def test_results_path_may_not_be_a_run_file(tmp_path: Path, name: str, marker: str) -> None:
    run = _run_folder(tmp_path, marker)
    (run / "checkpoint").mkdir()
    with pytest.raises(SeqnlpError, match="seqnlp run folder") as info:
        check_results_path(run / name)
    one_line(info)
    with pytest.raises(SeqnlpError, match="seqnlp run folder"):
        write_result(run / name, _result())
    assert not (run / name).exists() or (run / name).read_text() == "{}"


def test_results_inside_a_run_folder_under_another_name_and_symlinked_run_files(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    check_results_path(run / "result.json")  # another name in the run folder is fine
    write_result(run / "result.json", _result())
    (tmp_path / "sneaky.json").symlink_to(run / "trainer_state.json")
    with pytest.raises(SeqnlpError, match="seqnlp run folder"):
        check_results_path(tmp_path / "sneaky.json")
    # a folder with config.json but no weights or trainer state is not a run folder
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    check_results_path(plain / "metrics.json")


@pytest.mark.parametrize("content", [b'{"a": 1}\n', b"my notes\n", b""])
def test_results_never_overwrite_a_file_that_is_not_a_results_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.json"
    path.write_bytes(content)
    with pytest.raises(SeqnlpError, match="not a seqnlp results file") as info:
        check_results_path(path)
    one_line(info)
    with pytest.raises(SeqnlpError, match="not a seqnlp results file"):
        write_result(path, _result())
    assert path.read_bytes() == content
    good = tmp_path / "good.json"
    write_result(good, _result())
    check_results_path(good)
    write_result(good, _result(value=80.0))  # a results file may be replaced by a newer one
    assert json.loads(good.read_text())["metrics"]["accuracy"]["value"] == 80.0


def test_results_path_that_is_a_fifo_is_refused(tmp_path: Path, alarm: None) -> None:
    os.mkfifo(tmp_path / "r.json")
    with pytest.raises(SeqnlpError, match="not a"):
        check_results_path(tmp_path / "r.json")


# ---------------------------------------------------------------- 3. checkpoints


ARTIFACTS = {"config.json": json.dumps({"task": "test", "train": {"progress": "off"}}) + "\n",
             "tokenizer.json": json.dumps({"vocab": list("abc")}) + "\n"}
# 12 steps in one epoch, an evaluation every 4 (each improves: see _rising), no extra checkpoints.
SETTINGS = {"epochs": 1, "eval_every": 4, "checkpoint_every": 0}


def _rising():  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        calls["n"] += 1
        return {"accuracy": float(calls["n"])}  # every evaluation is a new best

    return evaluate


def _trainer(run: Path, artifacts: dict | None = None, **settings: object):  # type: ignore[no-untyped-def]
    trainer, model = trainer_prog.build(run, {**SETTINGS, **settings}, artifacts=artifacts or ARTIFACTS)
    trainer.evaluate_fn = _rising()
    return trainer, model


class _Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs, no except clause catches it."""


def _kill_at_commit(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The n-th trainer_state.json commit dies before writing (right after the weights it commits)."""
    original = ckpt.atomic_write_json
    count = {"n": 0}

    def commit(path, obj):  # type: ignore[no-untyped-def]
        if Path(path).name == ckpt.STATE_FILE:
            count["n"] += 1
            if count["n"] == n:
                raise _Killed
        return original(path, obj)

    monkeypatch.setattr(ckpt, "atomic_write_json", commit)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 12-step run with config.json and tokenizer.json artifacts."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("finished") / "run"
    _trainer(run)[0].fit()
    return run


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    return run


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def test_a_kill_between_the_best_save_and_the_commit_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _kill_at_commit(monkeypatch, 2)  # commit 1 at step 4 (best 4); best saved at step 8, then killed
    with pytest.raises(_Killed):
        _trainer(run)[0].fit()
    monkeypatch.undo()
    assert json.loads((run / ckpt.STATE_FILE).read_text())["best_step"] == 4
    assert _meta(run / ckpt.BEST_FILE)["best_step"] == "8"
    with pytest.raises(SeqnlpError, match=r"step 8.*trainer_state\.json.*step 4.*--resume") as info:
        load_model_weights(run, trainer_prog.TinyClassifier(), "best")
    one_line(info)
    load_model_weights(run, trainer_prog.TinyClassifier(), "last")  # the committed checkpoint is consistent
    trainer, _ = _trainer(run)
    trainer.evaluate_fn(None)  # the resumed run's evaluations continue the count: step 8 is again the best
    trainer.fit(resume=True)
    load_model_weights(run, trainer_prog.TinyClassifier(), "best")  # consistent again
    assert _meta(run / ckpt.BEST_FILE)["best_step"] == str(json.loads((run / ckpt.STATE_FILE).read_text())["best_step"])


def test_a_kill_between_the_commit_and_the_last_link_loads_the_committed_weights(run_copy: Path) -> None:
    state = json.loads((run_copy / ckpt.STATE_FILE).read_text())
    committed = run_copy / state["files"]["model"]
    # last.safetensors still the previous checkpoint's weights (as after a kill before it is re-linked)
    stale = trainer_prog.TinyClassifier()
    (run_copy / ckpt.LAST_FILE).unlink()
    ckpt.save_model_weights(run_copy / ckpt.LAST_FILE, stale, {"step": "4"})
    model = load_model_weights(run_copy, trainer_prog.TinyClassifier(), "last")
    expected = ckpt.read_model_weights(committed)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def _edit_state(run: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = run / ckpt.STATE_FILE
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))


def _break_numpy(s: dict) -> None:
    s["rng"][0]["numpy"][1] = [1, 2, 3]


STATE_EDITS = [
    ("missing step", lambda s: s.pop("step"), "step"),
    ("step as text", lambda s: s.update(step="12"), "step"),
    ("negative position", lambda s: s.update(position=-3), "position"),
    ("best as text", lambda s: s.update(best="good"), "best"),
    ("history not a list", lambda s: s.update(history={}), "history"),
    ("rng not a list", lambda s: s.update(rng="abc"), "rng"),
    ("python rng garbage", lambda s: s["rng"][0].update(python=[3, [1, 2], None]), "rng"),
    ("numpy rng short", _break_numpy, "rng"),
    ("torch rng not hex", lambda s: s["rng"][0].update(torch="zz"), "rng"),
    ("torch rng wrong size", lambda s: s["rng"][0].update(torch="00ff"), "rng"),
    ("optimizer not an object", lambda s: s.update(optimizer=[]), "optimizer"),
    ("param groups broken", lambda s: s["optimizer"].update(param_groups="x"), "optimizer"),
    ("files missing", lambda s: s.pop("files"), "files"),
    ("state is a list", None, "trainer state"),
]


@pytest.mark.parametrize(("what", "edit", "needle"), STATE_EDITS, ids=[e[0] for e in STATE_EDITS])
def test_a_hand_edited_trainer_state_is_a_one_line_error_naming_the_file(
        run_copy: Path, what: str, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    if edit is None:
        (run_copy / ckpt.STATE_FILE).write_text("[1, 2]")
    else:
        _edit_state(run_copy, edit)
    log_before = (run_copy / "log.jsonl").read_bytes()
    with pytest.raises(SeqnlpError, match=needle) as info:
        _trainer(run_copy)[0].fit(resume=True)
    assert str(run_copy / ckpt.STATE_FILE) in one_line(info)
    assert (run_copy / "log.jsonl").read_bytes() == log_before  # refused before anything was touched


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink out", "not a string"])
def test_checkpoint_files_must_stay_inside_the_run_folder(run_copy: Path, tmp_path: Path, how: str) -> None:
    state = json.loads((run_copy / ckpt.STATE_FILE).read_text())
    outside = tmp_path / "outside.safetensors"
    shutil.copy(run_copy / state["files"]["model"], outside)
    if how == "dotdot":
        _edit_state(run_copy, lambda s: s["files"].update(model="../outside.safetensors"))
    elif how == "absolute":
        _edit_state(run_copy, lambda s: s["files"].update(model=str(outside)))
    elif how == "symlink out":
        link = run_copy / state["files"]["model"]
        link.unlink()
        link.symlink_to(outside)
    else:
        _edit_state(run_copy, lambda s: s["files"].update(optimizer=["x"]))
    with pytest.raises(SeqnlpError, match="inside the run folder|must be a relative path") as info:
        _trainer(run_copy)[0].fit(resume=True)
    assert str(run_copy / ckpt.STATE_FILE) in one_line(info)


def test_weights_record_the_hashes_of_config_and_tokenizer(finished: Path) -> None:
    for name in (ckpt.BEST_FILE, ckpt.LAST_FILE):
        hashes = json.loads(_meta(finished / name)["seqnlp_artifacts"])
        assert hashes == {k: hashlib.sha256(v.encode()).hexdigest() for k, v in ARTIFACTS.items()}
    check_artifacts(finished)
    check_artifacts(finished, finished / ckpt.LAST_FILE)


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_a_swapped_tokenizer_or_config_is_refused(run_copy: Path, name: str) -> None:
    (run_copy / name).write_text(json.dumps({"vocab": list("xyz")}) + "\n")
    for which in ("best", "last"):
        with pytest.raises(SeqnlpError, match=f"{name} does not belong to these weights") as info:
            load_model_weights(run_copy, trainer_prog.TinyClassifier(), which)
        one_line(info)
    (run_copy / name).unlink()
    with pytest.raises(SeqnlpError, match=f"{name} is missing"):
        check_artifacts(run_copy)


def test_runs_saved_before_the_hashes_still_load(run_copy: Path) -> None:
    model = load_model_weights(run_copy, trainer_prog.TinyClassifier(), "best")
    meta = {k: v for k, v in _meta(run_copy / ckpt.BEST_FILE).items() if k not in ("seqnlp_artifacts", "best_step")}
    ckpt.save_model_weights(run_copy / ckpt.BEST_FILE, model, meta)  # as the previous version wrote it
    (run_copy / "tokenizer.json").write_text("{}")
    load_model_weights(run_copy, trainer_prog.TinyClassifier(), "best")
    (run_copy / ckpt.STATE_FILE).unlink()  # weights handed on without their trainer state load too
    ckpt.save_model_weights(run_copy / ckpt.BEST_FILE, model)
    load_model_weights(run_copy, trainer_prog.TinyClassifier(), "best")


def test_resume_with_a_config_differing_only_in_free_keys_keeps_the_weights_loadable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _kill_at_commit(monkeypatch, 2)
    with pytest.raises(_Killed):
        _trainer(run)[0].fit()
    monkeypatch.undo()
    # a resume-free key differs: the run keeps its own config.json, and the weights saved now name it
    changed = dict(ARTIFACTS, **{"config.json": json.dumps({"task": "test", "train": {"progress": "bar"}}) + "\n"})
    _trainer(run, artifacts=changed)[0].fit(resume=True)
    assert (run / "config.json").read_text() == ARTIFACTS["config.json"]
    load_model_weights(run, trainer_prog.TinyClassifier(), "best")
    load_model_weights(run, trainer_prog.TinyClassifier(), "last")


def _failing_save_file(monkeypatch: pytest.MonkeyPatch, target: str, nth: int) -> None:
    """safetensors' save_file fails as it does on a full disk (a SafetensorError, not an OSError)."""
    original = sio.save_file
    count = {"n": 0}

    def save_file(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        if Path(filename).name.startswith(f".{target}"):
            count["n"] += 1
            if count["n"] == nth:
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return original(tensors, filename, metadata=metadata)

    monkeypatch.setattr(sio, "save_file", save_file)


def test_disk_full_while_saving_the_best_model_is_one_line_that_says_what_was_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _failing_save_file(monkeypatch, ckpt.BEST_FILE, 2)  # the second best model (step 8) cannot be written
    with pytest.raises(SeqnlpError, match="No space left on device") as info:
        _trainer(run)[0].fit()
    msg = one_line(info)
    assert "step 8" in msg and f"{ckpt.BEST_FILE} (best step 4)" in msg and "checkpoint of step 4" in msg, msg
    monkeypatch.undo()
    assert [p for p in run.rglob("*.tmp")] == []
    load_model_weights(run, trainer_prog.TinyClassifier(), "best")  # step 4's, consistent with the state
    assert _meta(run / ckpt.BEST_FILE)["best_step"] == "4"


def test_disk_full_while_saving_a_checkpoint_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _failing_save_file(monkeypatch, "optimizer-", 2)
    with pytest.raises(SeqnlpError, match=r"could not save the checkpoint at step 8.*No space left.*step 4\) is intact") as info:
        _trainer(run)[0].fit()
    one_line(info)
    monkeypatch.undo()
    assert [p for p in run.rglob("*.tmp")] == []
    assert ckpt.read_checkpoint(run)["step"] == 4  # type: ignore[index]


def test_a_real_file_size_limit_while_writing_weights_is_a_seqnlp_error(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the write itself fail (EFBIG) inside safetensors, as a full disk does (ENOSPC).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(SeqnlpError, match="could not write .*File too large") as info:
            sio.save_weights(tmp_path / "w.safetensors", {"x": torch.zeros(10_000)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    one_line(info)
    assert list(tmp_path.iterdir()) == []


if sys.platform != "linux":  # FIFOs, /dev/zero, /proc and RLIMIT_FSIZE as used here are Linux's
    pytestmark = pytest.mark.skip(reason="Linux only")
