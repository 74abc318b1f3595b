"""More than one process: every task's own command under torchrun (2 processes, gloo, CPU) on the tiny fixtures.

Checked for every task: one run folder, written by rank 0 alone (every process logs its writes through an audit
hook, tests/write_audit/sitecustomize.py); the report and the results JSON once; and the same validation metric and
weights as one process with the same global batch. Then: an interrupted two-process run resumes exactly, and
a resume with another number of processes is one line. The device choice per process is unit-tested without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqnlp import SeqnlpError, distributed
from seqnlp.data import deal
from seqnlp.tasks import KINDS, runner, spec
from seqnlp.tasks.generation import Windows
from test_tasks_contract import COMMON, FIXTURES, TINY

ROOT = Path(__file__).resolve().parents[1]
AUDIT = Path(__file__).parent / "write_audit"
# The contract test's tiny runs with half the batch size, so that two processes make its global batch; dropout
# off (each process draws its own masks) and fp32 recurrences (bf16's rounding would hide a wrong gradient;
# sentiment's LSTM takes bf16 on a CPU with bf16 units, its GRU does not).
EXACT = {"sentiment": ["--dropout", "0", "--embedding-dropout", "0", "--cell", "gru"],
         "generation": ["--dropout", "0", "--embedding-dropout", "0", "--weight-dropout", "0"],
         "translation": ["--dropout", "0", "--rnn-precision", "fp32"], "tagging": ["--dropout", "0", "--word-dropout", "0"]}


def _with_batch(argv: list[str], factor: float) -> list[str]:
    i = argv.index("--batch-size")
    return [*argv[:i + 1], str(int(int(argv[i + 1]) * factor)), *argv[i + 2:]]


def _argv(task: str, processes: int) -> list[str]:
    return [*_with_batch(TINY[task], 1 / processes), *EXACT[task], *COMMON]


needs_torchrun = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build, so torchrun cannot run")


def torchrun(task: str, argv: list[str], workdir: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`torchrun --standalone --nproc_per_node 2 -m seqnlp.tasks.<task> ARGV` in `workdir`; its writes per rank."""
    log = workdir / f"writes-{len(list(workdir.glob('writes-*')))}"
    log.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", f"seqnlp.tasks.{task}", *argv],
        cwd=workdir, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(AUDIT), str(ROOT), os.environ.get("PYTHONPATH", "")]),
             "OMP_NUM_THREADS": "1", "SEQNLP_TASKS_DIR": str(FIXTURES), "SEQNLP_TEST_WRITE_LOG": str(log),
             "SEQNLP_DATA_DIR": "", **env})
    writes: dict[str, list[str]] = {}
    for f in log.glob("rank*.log"):
        lines = f.read_text().splitlines()
        assert lines[0] == "start"  # the hook ran in this process
        writes.setdefault(f.name.split(".")[0], []).extend(line.split(" ", 1)[1] for line in lines[1:])
    return proc, writes


def _under(paths: list[str], folder: Path) -> list[str]:
    return [p for p in paths if Path(p).is_relative_to(folder)]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _validation(run: Path) -> list[dict[str, float]]:
    """Every evaluation's step and validation metrics (the selection metric and the continuous ones, e.g. loss)."""
    return [{k: v for k, v in h.items() if k != "train_loss"}
            for h in json.loads((run / "trainer_state.json").read_text())["history"]]


@pytest.fixture()
def fixture_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    monkeypatch.delenv("SEQNLP_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def two_process_sentiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], dict]:
    """An uninterrupted two-process sentiment run (shared by the checks and the resume test)."""
    work = tmp_path_factory.mktemp("ddp-sentiment")
    out = work / "out"
    proc, writes = torchrun("sentiment", [*_argv("sentiment", 2), "--output", str(out / "run"),
                                          "--results", str(out / "results.json")], work)
    return work, proc, writes


@needs_torchrun
@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(KINDS))
def test_two_processes_write_one_run_once_and_match_one_process(task: str, tmp_path: Path, fixture_benchmarks: None,
                                                               request: pytest.FixtureRequest, capsys) -> None:
    if task == "sentiment":  # the resume test continues from the same run
        work, proc, writes = request.getfixturevalue("two_process_sentiment")
    else:
        work = tmp_path
        proc, writes = torchrun(task, [*_argv(task, 2), "--output", str(work / "out" / "run"),
                                       "--results", str(work / "out" / "results.json")], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, run = work / "out", work / "out" / "run"
    # One run folder and one results file (with its outputs), nothing else (no runs/<task>-<time> beside them).
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.outputs.json.gz", "run"]
    assert not (work / "runs").exists()
    # Rank 1 (and the launcher) wrote nothing there; rank 0 wrote the run (the hook saw it), each report file once.
    assert set(writes) == {"rank0", "rank1", "ranknone"}
    assert _under(writes["rank1"], out) == [] and _under(writes["ranknone"], out) == []
    mine = _under(writes["rank0"], out)
    for name in ("config.json", "evaluation_test.json", "metrics.json", "model.safetensors"):
        assert str(run / name) in mine
    for once in (run / "config.json", run / "evaluation_test.json", out / "results.json"):
        assert mine.count(str(once)) == 1, once
    # The report is printed once: by rank 0.
    for line in ("data: ", "training: ", "results: ", "model saved in "):
        assert sum(x.startswith(line) for x in proc.stdout.splitlines()) == 1, line
    assert json.loads((run / "config.json").read_text())["world_size"] == 2

    # One process with the global batch of the two: the same validation metrics at every evaluation, the same
    # weights (measured: 1e-7 relative and 2e-6 apart; weighing each process's mean loss alike instead of its rows
    # or tokens put translation's validation perplexity 3e-4 off).
    single = tmp_path / "single"
    assert runner.main(spec(task), [*_argv(task, 1), "--output", str(single)]) == 0
    capsys.readouterr()
    two, one = _validation(run), _validation(single)
    assert len(two) == len(one) >= 1 and spec(task).metric in one[0]
    assert two == [pytest.approx(h, rel=1e-5, abs=1e-7) for h in one]
    a, b = _weights(run / "last.safetensors"), _weights(single / "last.safetensors")
    assert a.keys() == b.keys()
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-5, msg=key)
    scored = json.loads((run / "evaluation_test.json").read_text())
    results = json.loads((out / "results.json").read_text())["metrics"]
    assert {m: v["value"] for m, v in results.items()} == {m: scored[m] for m in KINDS[task].metrics}


@needs_torchrun
@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_exactly(two_process_sentiment, tmp_path: Path,
                                                        fixture_benchmarks: None, capsys) -> None:
    whole = two_process_sentiment[0] / "out" / "run"
    cut = tmp_path / "cut"
    # Rank 0 gets a Ctrl-C when the first checkpoint (end of epoch 1) is committed: both stop at the next step.
    proc, _ = torchrun("sentiment", [*_argv("sentiment", 2), "--output", str(cut)], tmp_path,
                       SEQNLP_TEST_SIGINT_AT=str(cut / "trainer_state.json"))
    assert proc.returncode != 0 and "interrupted: saved the checkpoint" in proc.stderr, proc.stderr[-3000:]
    stopped = json.loads((cut / "trainer_state.json").read_text())
    assert stopped["stopped"] is None and 0 < stopped["step"] < json.loads((whole / "metrics.json").read_text())["steps"]

    # Resumed with another number of processes: one line, before any data is read.
    assert runner.main(spec("sentiment"), ["--resume", str(cut)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trained by 2 process(es), this is 1" in err and "torchrun --nproc_per_node 2" in err

    proc, writes = torchrun("sentiment", ["--resume", str(cut)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _under(writes["rank1"], cut) == []
    assert _validation(cut) == _validation(whole)
    a, b = _weights(cut / "last.safetensors"), _weights(whole / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    timed = ("train_seconds",)  # the only entry that may differ: wall-clock time
    cut_eval, whole_eval = (json.loads((run / "evaluation_test.json").read_text()) for run in (cut, whole))
    assert {k: v for k, v in cut_eval.items() if k not in timed} == {k: v for k, v in whole_eval.items() if k not in timed}


# ---------------------------------------------------------------------------------------------- without torchrun


def test_each_process_takes_its_local_gpu_and_nccl_and_cpu_runs_use_gloo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.process_device("auto", 1, 2) == torch.device("cpu")
    assert distributed.process_device("cpu", 1, 2) == torch.device("cpu")
    assert distributed.backend(torch.device("cpu")) == "gloo"
    with pytest.raises(SeqnlpError, match="no CUDA GPU is available; use --device cpu"):
        distributed.process_device("cuda", 0, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.process_device("cuda", 1, 2) == torch.device("cuda:1")
    assert distributed.process_device("auto", 0, 4) == torch.device("cuda:0")  # e.g. rank 2 of 2 machines x 2
    assert distributed.process_device("cpu", 1, 2) == torch.device("cpu")
    assert distributed.backend(torch.device("cuda:1")) == "cpu:gloo,cuda:nccl"  # nccl, and gloo for CPU tensors
    assert distributed.process_device("cuda:1", 0, 1) == torch.device("cuda:1")  # one process: as given
    with pytest.raises(SeqnlpError, match="would put all 2 processes on one GPU; use --device cuda"):
        distributed.process_device("cuda:1", 0, 2)
    with pytest.raises(SeqnlpError, match="LOCAL_RANK 2 has no GPU: this machine has 2"):
        distributed.process_device("cuda", 2, 4)
    with pytest.raises(SeqnlpError, match="unknown device 'mps'"):
        distributed.process_device("mps", 0, 2)


def test_one_process_needs_no_process_group() -> None:
    loss = torch.tensor(2.5)
    assert distributed.mean_over_processes(loss, 7) is loss
    rows = torch.arange(6).view(2, 3)
    assert distributed.gather_rows(rows, 0) is rows
    distributed.check_same(b"anything", "tokenizers")
    distributed.barrier()


def test_deal_gives_each_process_one_part_of_every_global_batch() -> None:
    batches = [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10], [11]]
    assert deal(batches, 1) == batches
    parts = deal(batches, 2)
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]  # [11] cannot be shared by two processes
    assert parts[0::2] == [[0, 1, 2, 3], [8, 9]] and parts[1::2] == [[4, 5, 6, 7], [10]]  # what each process trains on


def test_generation_processes_read_their_own_streams_window_after_window() -> None:
    stream = torch.arange(101)
    one, two = Windows(stream, 4, 5), Windows(stream, 2, 5, parts=2)
    assert len(two) == 2 * len(one)
    for j in range(len(one)):  # the two parts of window j are the rows of the one-process window j
        torch.testing.assert_close(torch.cat([two[2 * j].ids, two[2 * j + 1].ids]), one[j].ids)
        torch.testing.assert_close(torch.cat([two[2 * j].index, two[2 * j + 1].index]), one[j].index)
    mine = two[1::2]  # process 1's share: its rows continue where its previous window ended
    assert all(torch.equal(a.index + a.lengths, b.index) for a, b in zip(mine, mine[1:]))


def test_other_commands_refuse_torchrun_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runner.main(spec("sentiment"), ["evaluate", "--model", "somewhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "evaluate runs in one process" in err
