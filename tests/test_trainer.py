"""The trainer: learning, determinism, save/load, exact resume after SIGKILL, guards, run-folder safety, DDP.

Models and data come from tests/trainer_prog.py (a one-layer LSTM classifier on fixed random data).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import trainer_prog
from safetensors.torch import load_file

from seqnlp import checkpoint as ckpt
from seqnlp.errors import SeqnlpError
from seqnlp.trainer import TrainConfig, Trainer, check_run_dir, load_model_weights

PROG = Path(__file__).with_name("trainer_prog.py")
# 12 steps per epoch: evaluations at 5, 10, ...; checkpoints also every 3 steps and at epoch ends.
SETTINGS = {"epochs": 3, "eval_every": 5, "checkpoint_every": 3}
# Kill points of the fork chain, each counted from the (re)start of its process: before any
# checkpoint, mid-step, between the weights file and the commit, inside evaluation, after the commit
# but before last.safetensors is linked, after the best model is written, and late in epoch 2.
KILLS = ["forward:2", "forward:6", "save:2", "eval:1", "commit:2", "save:1", "forward:14"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROG.parent.parent), env.get("PYTHONPATH", "")])
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs between {a} and {b}"


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    m.pop("train_seconds")
    m.pop("tokens_per_second")
    return m


def _log(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("tokens_per_second", None)
    return rows


def _temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def _fit(run_dir: Path, resume: bool = False, **kwargs) -> tuple[Trainer, trainer_prog.TinyClassifier]:  # type: ignore[no-untyped-def]
    settings = {**SETTINGS, **kwargs.pop("settings", {})}
    trainer, model = trainer_prog.build(run_dir, settings, **kwargs)
    trainer.result = trainer.fit(resume=resume)  # type: ignore[attr-defined]
    return trainer, model


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    # Two OpenMP threads on a shared 2-core machine make these tiny models 10-20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(reference run, the same run SIGKILLed at every point of KILLS and resumed each time)."""
    root = tmp_path_factory.mktemp("chain")
    proc = subprocess.run([sys.executable, str(PROG), str(root / "run"), "--chain", str(root / "ref"),
                           "--kill", ",".join(KILLS), "--settings", json.dumps(SETTINGS)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("KILLED") == len(KILLS), proc.stdout
    return root / "ref", root / "run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run in this process (same thread count as the in-process interruptions)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    _fit(run_dir)
    return run_dir


# ---------------------------------------------------------------- learning and determinism


def test_overfits_one_batch(tmp_path: Path) -> None:
    trainer, model = trainer_prog.build(tmp_path / "run", {"epochs": 1, "lr": 0.02, "log_every": 5}, dropout=0.0)
    batch = trainer_prog.to_batch(trainer_prog.TRAIN[:8])
    trainer.train_batches = lambda epoch: [batch] * 60
    trainer.fit()
    losses = [r["loss"] for r in _log(tmp_path / "run") if r["type"] == "train"]
    assert losses[-1] < 0.05 * losses[0], losses


@pytest.mark.parametrize("clip_norm", [0.05, 1e6])
def test_gradients_are_clipped_to_clip_norm_and_only_when_above_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clip_norm: float) -> None:
    stepped: list[float] = []  # the gradient norm each optimizer step sees
    scaled: list[int] = []
    clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: (scaled.append(1), clip(*a, **k)))

    def record(optimizer, args, kwargs):  # type: ignore[no-untyped-def]
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        stepped.append(float(torch.nn.utils.get_total_norm(grads)))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(record)
    try:
        _fit(tmp_path / "run", settings={"epochs": 1, "clip_norm": clip_norm})
    finally:
        handle.remove()
    assert len(stepped) == 12
    if clip_norm < 1:  # every step's gradient is larger: each is scaled down to clip_norm
        assert stepped == pytest.approx([clip_norm] * 12, rel=1e-4) and len(scaled) == 12
    else:  # never reached: no step pays for a scaling by 1
        assert min(stepped) > 0.05 and scaled == []


def test_same_seed_gives_identical_weights_and_other_seed_does_not(tmp_path: Path, reference: Path) -> None:
    _fit(tmp_path / "same")
    assert_same_weights(reference / "last.safetensors", tmp_path / "same" / "last.safetensors")
    assert _log(reference) == _log(tmp_path / "same")
    _fit(tmp_path / "other", settings={"seed": 1})
    a, b = _weights(reference / "last.safetensors"), _weights(tmp_path / "other" / "last.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_save_then_load_gives_identical_logits(tmp_path: Path) -> None:
    trainer, model = _fit(tmp_path / "run")
    batch = trainer_prog.to_batch(trainer_prog.VALID)
    model.eval()
    fresh = trainer_prog.TinyClassifier()  # different random init
    load_model_weights(tmp_path / "run", fresh, which="last").eval()
    assert torch.equal(model(batch).logits, fresh(batch).logits)
    load_model_weights(tmp_path / "run", fresh, which="best")
    assert trainer_prog.evaluate(fresh)["accuracy"] == trainer.result.best_metric  # type: ignore[attr-defined]
    with pytest.raises(SeqnlpError, match="do not match the model"):
        load_model_weights(tmp_path / "run", torch.nn.Linear(2, 2))


def test_tied_weights_are_saved_once_and_restored(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied input/output embeddings, as in language models
    ckpt.save_model_weights(tmp_path / "w.safetensors", model)
    assert len(_weights(tmp_path / "w.safetensors")) == 1
    other = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    ckpt.load_state_into(other, ckpt.read_model_weights(tmp_path / "w.safetensors"), "w")
    assert torch.equal(other[1].weight, model[0].weight)


# ---------------------------------------------------------------- exact resume


def test_resume_after_sigkill_at_seven_points_is_bitwise_exact(chain: tuple[Path, Path]) -> None:
    ref, run = chain
    assert_same_weights(ref / "last.safetensors", run / "last.safetensors")
    assert_same_weights(ref / "model.safetensors", run / "model.safetensors")
    assert _metrics(ref) == _metrics(run)
    assert _log(ref) == _log(run)  # lines written after the last checkpoint were dropped on resume
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == sorted(
        p.name for p in (ref / "checkpoint").iterdir())  # stale step files cleaned up
    assert _temp_files(run) == []


def test_resume_in_a_fresh_process_is_bitwise_exact(tmp_path: Path, chain: tuple[Path, Path]) -> None:
    ref, _ = chain
    run = tmp_path / "run"
    args = [sys.executable, str(PROG), str(run), "--settings", json.dumps(SETTINGS), "--kill", "forward:23"]
    killed = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 21
    _fit(run, resume=True)  # this process never saw the run before: everything comes from the folder
    assert_same_weights(ref / "last.safetensors", run / "last.safetensors")
    assert_same_weights(ref / "model.safetensors", run / "model.safetensors")
    assert _metrics(ref) == _metrics(run)
    trainer, _ = _fit(run, resume=True)  # a finished run resumes to the same end without training
    assert trainer.result.steps == 36 and trainer.result.stopped == "epochs"  # type: ignore[attr-defined]
    assert_same_weights(ref / "last.safetensors", run / "last.safetensors")


def test_ctrl_c_saves_a_checkpoint_then_resume_is_exact(tmp_path: Path, reference: Path) -> None:
    run = tmp_path / "run"
    trainer, model = trainer_prog.build(run, SETTINGS)
    model.on_forward = lambda n: os.kill(os.getpid(), signal.SIGINT) if n == 8 else None
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 8  # saved after the interrupted step
    _fit(run, resume=True)
    assert_same_weights(reference / "last.safetensors", run / "last.safetensors")
    assert _metrics(reference) == _metrics(run)


# ---------------------------------------------------------------- guards


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(SeqnlpError, match=r"non-finite loss nan at step 8.*\(step 6\).*last\.safetensors"):
        _fit(run, nan_at=8)
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["step"] == 6
    last = _weights(run / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in last.values())
    assert_same_weights(run / "last.safetensors", run / state["files"]["model"])
    load_model_weights(run, trainer_prog.TinyClassifier(), which="last")
    assert _temp_files(run) == []


@pytest.mark.parametrize(("target", "code", "fail_call"), [
    ("seqnlp.io.save_file", errno.ENOSPC, 7),   # disk full while writing a weights file
    ("seqnlp.io.tempfile.mkstemp", errno.EROFS, 9),  # folder turned read-only (any file)
])
def test_write_failure_keeps_previous_checkpoint_then_resume_is_exact(
        tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, target: str, code: int,
        fail_call: int) -> None:
    run = tmp_path / "run"
    module, name = target.rsplit(".", 1)
    owner = {"seqnlp.io": sys.modules["seqnlp.io"], "seqnlp.io.tempfile": sys.modules["seqnlp.io"].tempfile}[module]
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_call:
            raise OSError(code, os.strerror(code))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    with pytest.raises(SeqnlpError, match=r"could not save.*(intact|previous)"):
        _fit(run)
    monkeypatch.setattr(owner, name, original)
    assert _temp_files(run) == []
    state = ckpt.read_checkpoint(run)
    assert state is not None
    load_model_weights(run, trainer_prog.TinyClassifier(), which="last")
    _fit(run, resume=True)
    assert_same_weights(reference / "last.safetensors", run / "last.safetensors")
    assert _metrics(reference) == _metrics(run)


def test_existing_run_is_refused_unless_overwrite_or_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fit(run, settings={"epochs": 1, "curves": True})
    assert (run / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SeqnlpError, match=r"exists and is not empty; pass --overwrite .* or --resume"):
        _fit(run, settings={"epochs": 1})
    (run / "checkpoint" / "model-000000999.safetensors").write_bytes(b"stale")
    _fit(run, settings={"epochs": 1, "overwrite": True})
    assert not (run / "checkpoint" / "model-000000999.safetensors").exists()
    with pytest.raises(SeqnlpError, match=r"config\.json differs in model\.dropout"):
        _fit(run, resume=True, settings={"epochs": 1}, dropout=0.5)
    with pytest.raises(SeqnlpError, match=r"training settings differ in lr"):
        _fit(run, resume=True, settings={"epochs": 1, "lr": 0.1})
    with pytest.raises(SeqnlpError, match="holds no run"):
        _fit(tmp_path / "missing", resume=True)


def test_output_checks_before_any_work(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(SeqnlpError, match="exists and is not a folder"):
        check_run_dir(a_file, resume=False, overwrite=False)
    with pytest.raises(SeqnlpError, match="--resume and --overwrite conflict"):
        check_run_dir(tmp_path / "run", resume=True, overwrite=True)
    assert check_run_dir(tmp_path / "new", resume=False, overwrite=False) == []
    with pytest.raises(SeqnlpError, match="exists and is not a folder"):
        _fit(a_file)


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(SeqnlpError, match="non-finite"):
        _fit(run, nan_at=1, settings={"epochs": 1, "checkpoint_every": 0})
    assert not run.exists()  # a retry with the same --output is not refused as "exists"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "user-notes.txt").write_text("mine")
    with pytest.raises(SeqnlpError, match="exists and is not empty"):
        _fit(kept)
    assert (kept / "user-notes.txt").read_text() == "mine"


def test_a_second_writer_is_refused_by_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another training process would
        with pytest.raises(SeqnlpError, match="another seqnlp process is training into"):
            _fit(run)
    _fit(run, settings={"epochs": 1})  # released: training proceeds


# ---------------------------------------------------------------- stopping, schedules, progress


def test_max_steps_and_early_stopping_and_time_budget(tmp_path: Path) -> None:
    trainer, _ = _fit(tmp_path / "a", settings={"max_steps": 7})
    r = trainer.result  # type: ignore[attr-defined]
    assert (r.steps, r.stopped, r.history[-1]["step"]) == (7, "max_steps", 7)  # evaluated at the stop

    trainer, _ = trainer_prog.build(tmp_path / "b", {**SETTINGS, "eval_every": 2, "patience": 2,
                                                     "schedule": "plateau"})
    trainer.evaluate_fn = lambda model: {"accuracy": 0.5}  # never improves after the first evaluation
    r = trainer.fit()
    assert (r.steps, r.stopped, r.best_step) == (6, "early_stopping", 2)
    lrs = [row["lr"] for row in _log(tmp_path / "b") if row["type"] == "train"]
    assert lrs == [] or lrs[-1] < 2e-3

    trainer, _ = _fit(tmp_path / "c", settings={"time_budget": 1e-9})
    assert trainer.result.stopped == "time_budget" and trainer.result.steps == 1  # type: ignore[attr-defined]


def test_learning_rate_schedules() -> None:
    def lrs(**kw: object) -> list[float]:
        config = TrainConfig(**{"lr": 1.0, **kw})  # type: ignore[arg-type]
        t = Trainer(torch.nn.Linear(1, 1), config, "unused", train_batches=lambda e: [], evaluate=dict,
                    metric="m", higher_is_better=True)
        return [t._lr(step, 100, 0.5) for step in (0, 4, 9, 50, 99)]

    assert lrs() == [1.0] * 5
    assert lrs(warmup=10.0)[:3] == [0.1, 0.5, 1.0]
    assert lrs(warmup=0.1, schedule="linear") == pytest.approx([0.1, 0.5, 1.0, 50 / 90, 1 / 90])
    assert lrs(schedule="cosine")[3] == pytest.approx(0.5, abs=0.02)
    assert lrs(schedule="plateau") == [0.5] * 5


def test_schedule_ends_at_the_time_budget() -> None:
    def trainer(**kw: object) -> Trainer:
        config = TrainConfig(**{"lr": 1.0, "warmup": 0, **kw})  # type: ignore[arg-type]
        return Trainer(torch.nn.Linear(1, 1), config, "unused", train_batches=lambda e: [], evaluate=dict,
                       metric="m", higher_is_better=True)

    t = trainer(schedule="cosine", time_budget=10.0)
    t._s = {"elapsed": 300.0}  # half of 10 minutes, 5% into the planned steps: on course to take 100 minutes
    assert t._lr(10, 10_000, 1.0) == pytest.approx(1.0, abs=1e-5)  # too early to judge the pace: steps
    assert t._lr(500, 10_000, 1.0) == pytest.approx(0.5)  # judged: cut by the budget, so the clock leads
    assert t._s["budget_bound"] is True
    assert t._lr(9_000, 10_000, 1.0) < 0.1  # the step fraction still counts when it is ahead
    t._s["elapsed"] = 600.0
    assert t._lr(501, 10_000, 1.0) == pytest.approx(0.0, abs=1e-12)
    # a run on course to finish inside its budget keeps the step schedule (reproducible)
    t._s = {"elapsed": 20.0, "budget_bound": None}
    steps_only = trainer(schedule="cosine", time_budget=0.0)
    assert t._lr(500, 10_000, 1.0) == steps_only._lr(500, 10_000, 1.0) and t._s["budget_bound"] is False
    t._s["elapsed"] = 30.0
    assert t._lr(600, 10_000, 1.0) == steps_only._lr(600, 10_000, 1.0) and t._s["budget_bound"] is False
    # until its pace drops (gradual unfreezing: the first steps are the fastest); then the clock leads for good
    t._s["elapsed"] = 540.0
    assert t._lr(600, 10_000, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert t._s["budget_bound"] is True
    t._s["elapsed"] = 570.0
    assert t._lr(9_000, 10_000, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.95)))
    t = trainer(schedule="linear", time_budget=0.0)
    t._s = {"elapsed": 600.0}
    assert t._lr(5, 10, 1.0) == pytest.approx(0.5)  # no budget: steps alone
    t = trainer(schedule="constant", time_budget=10.0)
    t._s = {"elapsed": 590.0}
    assert t._lr(5, 10, 1.0) == 1.0  # constant stays constant


@pytest.mark.parametrize("minutes, steps, seconds", [(2.0, 37, 117.0), (2.25, 40, 120.0)])
def test_the_time_budget_keeps_back_the_time_of_the_final_evaluation_and_save(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minutes: float, steps: int, seconds: float) -> None:
    # A fake clock: a training step takes 1 s, an evaluation 20 s (22 kept back), a save no time; an evaluation every
    # 10 steps. 2 minutes: the run ends at step 37, whose successor would end at the 98 s left for steps; its final
    # evaluation ends at 117 s. 2.25 minutes: step 40's own evaluation (ending at 120 s) is the last that leaves time
    # for the final one, so it is the final one. Spending the whole budget on steps would run step 41 and then
    # evaluate again (141 s).
    import seqnlp.trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    trainer, model = trainer_prog.build(tmp_path / "run", {"epochs": 10, "eval_every": 10, "time_budget": minutes,
                                                           "schedule": "linear", "log_every": 1})
    model.on_forward = lambda calls: clock.__setitem__(0, clock[0] + 1.0)

    def slow_evaluate(m: torch.nn.Module) -> dict[str, float]:
        clock[0] += 20.0
        return trainer_prog.evaluate(m)

    trainer.evaluate_fn = slow_evaluate
    r = trainer.fit()
    assert (r.stopped, r.steps, r.train_seconds) == ("time_budget", steps, seconds)
    lrs = [row["lr"] for row in _log(tmp_path / "run") if row["type"] == "train"]
    assert lrs[-1] < 0.15 * lrs[0]  # annealed to the end of the steps (within an evaluation's time), not of the budget


def test_plain_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fit(tmp_path / "run", settings={"epochs": 1, "progress": "plain", "log_every": 4})
    err = capsys.readouterr().err
    assert "epoch 1/3" not in err and "epoch 1/1 step 4/12 loss" in err and "tok/s eta" in err
    assert "step 5 (epoch 0.42): accuracy=" in err


# ---------------------------------------------------------------- distributed


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    settings = {"epochs": 2, "eval_every": 0, "precision": "fp32"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(PROG), str(tmp_path / "ddp"), "--settings", json.dumps(settings), "--dropout", "0"],
        capture_output=True, text=True, env={**_env(), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT") == 1  # only rank 0 reports
    trainer, _ = trainer_prog.build(tmp_path / "single", {**SETTINGS, **settings}, dropout=0.0, merge=2)
    single = trainer.fit()
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["steps"] == single.steps == 12  # 12 batches of 8 per epoch, 2 per global step
    a, b = _weights(tmp_path / "ddp" / "last.safetensors"), _weights(tmp_path / "single" / "last.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    ddp_hist = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())["history"]
    assert [h["train_loss"] for h in ddp_hist] == pytest.approx([h["train_loss"] for h in single.history], abs=1e-5)


def test_ranks_share_one_clock_so_a_budget_bound_schedule_keeps_them_equal(tmp_path: Path) -> None:
    # Rank 1 is slower; a budget-bound schedule reads the clock, so each rank reading its own would give them
    # different learning rates and different weights.
    settings = {"epochs": 40, "eval_every": 0, "precision": "fp32", "time_budget": 0.05, "warmup": 0,
                "schedule": "linear"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(PROG), str(tmp_path / "ddp"), "--settings", json.dumps(settings), "--slow-rank", "0.05"],
        capture_output=True, text=True, env={**_env(), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert state["budget_bound"] is True and json.loads((tmp_path / "ddp" / "metrics.json").read_text())[
        "stopped"] == "time_budget"
    # Found anywhere: rank 1's short line may land inside rank 0's long RESULT line (a pipe write over 4 KiB is not
    # atomic).
    digests = dict(re.findall(r"WEIGHTS (\d) ([0-9a-f]{64})", proc.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
