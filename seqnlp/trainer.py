"""One trainer for every task. OWNED BY THE TRAINER HELPER (issue 4): everything below `Output`.

The trainer knows nothing about tasks: a model maps a `Batch` to `Output(logits, loss)` and the
trainer reads only the loss. It owns the loop around it: optimizer and learning-rate schedule,
clipping, bf16 autocast, evaluation and early stopping, checkpoints that resume bit-for-bit,
a guard against non-finite losses, progress output, and DistributedDataParallel under torchrun.

Run folder (only rank 0 writes, every write atomic):
    model.safetensors        best weights so far (by the task's metric on the validation split)
    last.safetensors         weights of the last committed checkpoint
    checkpoint/              step-tagged model and optimizer tensors named by trainer_state.json
    trainer_state.json       the commit record: step, epoch, position in the epoch, best metric,
                             schedule, patience, RNG states, optimizer hyper-parameters, history
    log.jsonl                train loss every `log_every` steps and every evaluation
    metrics.json             the summary written when training ends
    training_curves.png      loss and metric against steps (when matplotlib imports)
    <artifacts>              e.g. config.json, tokenizer.json, written when the run starts
    .lock                    held (flock) while a process trains into the folder
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from seqnlp import checkpoint as ckpt
from seqnlp.config import opt, to_dict
from seqnlp.device import FreedMemory, autocast, resolve_device, use_bf16
from seqnlp.errors import SeqnlpError
from seqnlp.io import MAX_ARTIFACT_BYTES, atomic_write_bytes, atomic_write_json, read_file_bytes, read_json


class Output(NamedTuple):
    """What every seqnlp model's `forward(batch)` returns. The trainer reads only `loss`.

    logits: task-shaped scores, e.g. (B, C) for classification, (B, T, V) for language models
    loss:   scalar mean loss to minimise (None when the batch carries no targets)
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass
class TrainConfig:
    """How to train. Every field is a command-line flag (`seqnlp.config.add_flags`).

    The defaults suit small recurrent models: AdamW at 2e-3 with gradient-norm clipping at 1.0
    (the usual cure for exploding RNN gradients) and a constant learning rate.
    """

    epochs: int = opt(10, "passes over the training data", min=1)
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = no limit)", min=0)
    time_budget: float = opt(0.0, "minutes of training, the final evaluation and save included; then stop "
                             "cleanly (0 = none)", min=0)
    lr: float = opt(2e-3, "peak learning rate", gt=0)
    weight_decay: float = opt(0.01, "decoupled weight decay on weight matrices (not biases)", min=0)
    optimizer: str = opt("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1)
    schedule: str = opt("constant", "learning-rate schedule after warmup",
                        choices=("constant", "linear", "cosine", "plateau"))
    # >= 1: a number of steps; < 1: a fraction of the planned steps (e.g. 0.05).
    warmup: float = opt(0.0, "linear warmup: steps (>= 1) or a fraction of all steps (< 1)", min=0)
    plateau_factor: float = opt(0.5, "plateau schedule: multiply the learning rate by this", gt=0, max=1)
    plateau_patience: int = opt(1, "plateau schedule: evaluations without improvement before reducing", min=1)
    clip_norm: float = opt(1.0, "clip the gradient norm to this (0 = no clipping)", min=0)
    precision: str = opt("auto", "auto = bf16 autocast where a short measurement on this machine finds it "
                         "faster (cached per CPU model), else fp32",
                         choices=("auto", "fp32", "bf16"))
    eval_every: int = opt(0, "evaluate every N steps (0 = at the end of each epoch)", min=0)
    patience: int = opt(0, "stop after this many evaluations without improvement (0 = never)", min=0)
    # Kills between evaluations lose at most this many steps; each checkpoint writes weights + optimizer.
    checkpoint_every: int = opt(0, "also checkpoint every N steps (0 = only at evaluations and epoch ends)",
                                min=0)
    seed: int = opt(0, "random seed (data order, dropout)", min=0, max=2**32 - 1)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    log_every: int = opt(50, "log the training loss every N steps", min=1)
    progress: str = opt("auto", "auto = a bar on a terminal, plain lines otherwise",
                        choices=("auto", "bar", "plain", "off"))
    curves: bool = opt(True, "save training_curves.png when matplotlib is installed")
    overwrite: bool = opt(False, "replace an existing run in the output folder")


@dataclass
class TrainResult:
    """What `Trainer.fit` returns (also written to metrics.json)."""

    metric: str
    best_metric: float
    best_step: int
    steps: int
    epochs: float  # epochs completed, fractional when stopped mid-epoch
    train_seconds: float  # wall time of fit (all sessions of a resumed run), evaluation included
    tokens_per_second: float  # training tokens (all ranks) / time in training steps
    stopped: str  # "epochs" | "max_steps" | "time_budget" | "early_stopping"
    best_metrics: dict[str, float] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building the model so runs are reproducible)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_model_weights(run_dir: str | Path, model: nn.Module, which: str = "best") -> nn.Module:
    """Load a run's saved weights into `model` ("best" = model.safetensors, "last" = last.safetensors).

    Raises SeqnlpError when the file is missing or corrupt, or the weights do not fit the model; when the
    run's config.json / tokenizer.json are not the ones the weights were saved with (`check_artifacts`);
    and, for "best", when model.safetensors holds a different best step than trainer_state.json records
    (a run stopped between saving the best model and committing its state). For "last", weights that a
    stop left behind the committed checkpoint are skipped: the committed checkpoint's weights are loaded.
    """
    if which not in ("best", "last"):
        raise SeqnlpError(f"which must be 'best' or 'last', not {which!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SeqnlpError(f"run folder {run_dir} does not exist")
    path = run_dir / (ckpt.BEST_FILE if which == "best" else ckpt.LAST_FILE)
    if not path.exists():
        raise SeqnlpError(f"{path} does not exist; did training in {run_dir} finish an evaluation?")
    state = _committed_state(run_dir)
    meta = ckpt.weights_metadata(path)
    if which == "best" and state is not None:
        saved = meta.get(ckpt.BEST_STEP_KEY, meta.get("step"))
        best = state.get("best_step")
        if saved is not None and isinstance(best, int) and state.get("best") is not None and saved != str(best):
            raise SeqnlpError(f"{path} holds the best weights of step {saved}, but {run_dir / ckpt.STATE_FILE} "
                              f"records step {best} as the best: the run stopped between saving the best "
                              "model and committing its state; continue it with --resume (or load the "
                              "'last' weights)")
    if which == "last" and state is not None and meta.get("step") != str(state.get("step")):
        files = state.get("files")
        committed = files.get("model") if isinstance(files, dict) else None
        if committed is not None:
            path = ckpt.checked_run_path(run_dir, committed, f"{run_dir / ckpt.STATE_FILE}: files.model")
    tensors = ckpt.read_model_weights(path)
    ckpt.check_fit(model, tensors, path)  # a tokenizer of another size shows as a shape first: the clearer message
    ckpt.check_artifacts(run_dir, path)
    ckpt.load_state_into(model, tensors, path)
    return model


def _committed_state(run_dir: Path) -> dict[str, Any] | None:
    """trainer_state.json as far as loading weights needs it; None when absent or unreadable.

    Loading weights for use does not depend on the trainer state, so a damaged one only skips the
    consistency checks (resuming reads it strictly, see `checkpoint.read_checkpoint`).
    """
    try:
        state = read_json(run_dir / ckpt.STATE_FILE)
    except SeqnlpError:
        return None
    return state if isinstance(state, dict) else None


def check_artifacts(run_dir: str | Path, weights: str | Path | None = None) -> None:
    """Refuse a run folder whose config.json / tokenizer.json differ from those its weights were saved with.

    `weights` defaults to RUN/model.safetensors; see `seqnlp.checkpoint.check_artifacts`. Runs saved
    before the hashes were recorded pass.
    """
    ckpt.check_artifacts(run_dir, weights)


# Config keys that may change when a run is resumed: they do not change what is computed.
RESUME_FREE_KEYS = {"time_budget", "progress", "log_every", "overwrite", "device", "curves"}


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(_diff_keys(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(whole file)"]


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


class _Dist:
    """Rank, world size and the few collectives the loop needs (no-ops in a single process)."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False
        if self.enabled and device_name == "auto" and torch.cuda.is_available():
            device_name = f"cuda:{self.local_rank}"
        elif self.enabled and device_name == "cuda":
            device_name = f"cuda:{self.local_rank}"
        self.device = resolve_device(device_name)
        if self.enabled and not torch.distributed.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
        return values

    def broadcast_(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.broadcast(values, src=0)
        return values

    def gather_rows(self, row: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped 1-D tensor, in rank order."""
        if not self.enabled:
            return [row]
        rows = [torch.empty_like(row) for _ in range(self.world)]
        torch.distributed.all_gather(rows, row)
        return rows

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()


class _Interrupts:
    """The first Ctrl-C only sets a flag, checked between steps, so the checkpoint it causes is consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit at once)",
              file=sys.stderr)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, self._previous)


class _Progress:
    """tqdm bar on a terminal, or one plain line per `log_every` steps; nothing on ranks other than 0."""

    def __init__(self, mode: str, enabled: bool) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode if enabled else "off"
        self.bar: Any = None
        self.t0 = time.perf_counter()

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.close()
            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                            dynamic_ncols=True, leave=False)
        self.t0 = time.perf_counter()
        self.epoch, self.epochs, self.total, self.start_done = epoch, epochs, total, done

    def update(self, done: int, loss: float | None, tokens_per_second: float) -> None:
        if self.mode == "bar" and self.bar is not None:
            self.bar.update(done - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_second:,.0f}", refresh=False)
        elif self.mode == "plain" and loss is not None:
            elapsed = time.perf_counter() - self.t0
            rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else 0.0
            print(f"epoch {self.epoch + 1}/{self.epochs} step {done}/{self.total} loss {loss:.4f} "
                  f"{tokens_per_second:,.0f} tok/s eta {eta:.0f}s", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.mode == "bar" and self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.mode != "off":
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# Ends that a resume does not continue; a time-budget stop can be continued with a new budget.
FINISHED = ("epochs", "max_steps", "early_stopping")


class _Stop(Exception):
    """Raised inside the loop to end training for `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def check_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Refuse an --output the trainer could not use, before any data is loaded; return its current files.

    A file (not a folder), a non-empty folder without --resume/--overwrite, --resume of an empty folder,
    and --resume together with --overwrite are one-line SeqnlpErrors. Tasks call this first so a bad
    --output costs nothing; the trainer calls it again when it takes the folder.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise SeqnlpError("--resume and --overwrite conflict: --resume continues the run, --overwrite replaces it")
    if run_dir.exists() and not run_dir.is_dir():
        raise SeqnlpError(f"{run_dir} exists and is not a folder; choose another --output")
    existing = [p.name for p in run_dir.iterdir() if p.name != ".lock"] if run_dir.is_dir() else []
    if existing and not resume and not overwrite:
        raise SeqnlpError(f"{run_dir} exists and is not empty; pass --overwrite to replace it "
                          "or --resume to continue it")
    if resume and not existing:
        raise SeqnlpError(f"cannot resume: {run_dir} holds no run; start it without --resume")
    return existing


class Trainer:
    """Train `model` on `train_batches(epoch)`, evaluate with `evaluate(model)`, checkpoint into `run_dir`.

    model:          nn.Module with forward(batch) -> Output(logits, loss)
    config:         TrainConfig
    run_dir:        run folder (created; refused when it holds a run unless resume or config.overwrite)
    train_batches:  epoch -> that epoch's batches in a fixed order (must not depend on global RNG state)
    evaluate:       model -> {metric name: value}, called in eval mode under torch.no_grad on rank 0
    metric:         the key of `evaluate`'s dict used for best-model selection and early stopping
    metric_is_loss: the metric is in the training loss's units (a language model's nats/token): the plot then
                    draws it beside the training loss, where over-fitting shows as the gap between them
    artifacts:      extra files written atomically into the run folder at the start (config.json, ...)

    A model may define `param_groups() -> [{"params": [...], "lr_scale": x, "start": n}, ...]` (every trainable
    parameter in one group): a group trains at `lr_scale` times the scheduled learning rate (discriminative
    fine-tuning), and only from step `start` on (>= 1: a step; < 1: a fraction of the planned steps), frozen
    (no gradient, no update, no weight decay) before it (gradual unfreezing). Not under torchrun.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, run_dir: str | Path, *,
                 train_batches: Callable[[int], Sequence[Any]],
                 evaluate: Callable[[nn.Module], dict[str, float]],
                 metric: str, higher_is_better: bool, metric_is_loss: bool = False,
                 artifacts: dict[str, str | bytes] | None = None) -> None:
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_batches = train_batches
        self.evaluate_fn = evaluate
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.metric_is_loss = metric_is_loss
        self.artifacts = dict(artifacts or {})
        self._artifact_meta: dict[str, str] = {}  # sha256 of the run's artifacts, for the weights' metadata
        for name in self.artifacts:
            if Path(name).name != name or name.startswith("."):
                raise SeqnlpError(f"artifact name {name!r} must be a plain file name")

    # ------------------------------------------------------------ run folder

    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        """Check, lock and initialise the run folder; return the committed state to resume from, if any."""
        run_dir = self.run_dir
        existing = check_run_dir(run_dir, resume=resume, overwrite=self.config.overwrite)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(run_dir / ".lock", "a+")  # held (flocked) until fit ends
        except OSError as err:
            raise SeqnlpError(f"cannot create the run folder {run_dir}: {err.strerror}; "
                              "choose a writable --output") from None
        try:
            import fcntl

            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: run unlocked
            pass
        except OSError:
            self._lock_file.close()
            raise SeqnlpError(f"another seqnlp process is training into {run_dir} (it holds "
                              f"{run_dir / '.lock'}); wait for it to finish or choose another --output"
                              ) from None
        if resume:
            self._check_artifacts()
            state = ckpt.read_checkpoint(run_dir)
            if state is not None:
                self._check_config(state)
            self._record_artifacts()
            return state
        if existing:  # --overwrite
            ckpt.remove_run_files(run_dir, set(self.artifacts))
        for name, content in self.artifacts.items():
            atomic_write_bytes(run_dir / name, _as_bytes(content))
        self._record_artifacts()
        return None

    def _record_artifacts(self) -> None:
        """Hash the artifacts as they are in the run folder: every weights file saved will name them.

        The files on disk, not `self.artifacts`: a resume may differ in resume-free keys and keeps the
        run's own config.json.
        """
        if self.artifacts:
            hashes = ckpt.artifact_hashes(self.run_dir, set(self.artifacts))
            self._artifact_meta = {ckpt.ARTIFACTS_KEY: json.dumps(hashes, sort_keys=True)}

    def _discard_run_dir(self) -> None:
        ckpt.remove_run_files(self.run_dir, set(self.artifacts))
        for name in (".lock",):
            try:
                (self.run_dir / name).unlink()
            except OSError:
                pass
        try:
            self.run_dir.rmdir()  # only when nothing else is left in it
        except OSError:
            pass

    def _check_artifacts(self) -> None:
        """Refuse to resume when config.json / tokenizer.json differ from the run's, naming what differs."""
        for name, content in self.artifacts.items():
            path = self.run_dir / name
            if not path.exists():
                atomic_write_bytes(path, _as_bytes(content))
                continue
            new = _as_bytes(content)
            old = read_file_bytes(path, MAX_ARTIFACT_BYTES, "run file")
            if old == new:
                continue
            try:
                diff = _diff_keys(json.loads(old), json.loads(new))
            except (ValueError, UnicodeDecodeError):
                raise SeqnlpError(f"cannot resume {self.run_dir}: {name} differs from the one the run was "
                                  "started with; resume with the same settings") from None
            diff = [k for k in diff if k.split(".")[-1] not in RESUME_FREE_KEYS]
            if diff:
                shown = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
                raise SeqnlpError(f"cannot resume {self.run_dir}: {name} differs in {shown}; "
                                  "resume with the settings the run was started with")

    def _check_config(self, state: dict[str, Any]) -> None:
        diff = _diff_keys(state.get("config", {}), to_dict(self.config))
        diff = [k for k in diff if k not in RESUME_FREE_KEYS]
        if diff:
            raise SeqnlpError(f"cannot resume {self.run_dir}: training settings differ in {', '.join(diff)}; "
                              "resume with the settings the run was started with")

    # ------------------------------------------------------------ optimisation pieces

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        # A model may split its parameters into layers that train differently (`param_groups`, class docstring).
        layers = model.param_groups() if callable(getattr(model, "param_groups", None)) else [
            {"params": list(model.parameters())}]
        groups = []
        for layer in layers:
            decay, no_decay = [], []
            for p in layer["params"]:
                if p.requires_grad:
                    # Weight matrices and embeddings decay; biases and norm gains do not (the usual AdamW split).
                    (decay if p.dim() >= 2 else no_decay).append(p)
            extra = {k: float(v) for k, v in layer.items() if k in ("lr_scale", "start")}
            groups += [g for g in ({"params": decay, "weight_decay": c.weight_decay, **extra},
                                   {"params": no_decay, "weight_decay": 0.0, **extra}) if g["params"]]
        if not groups:
            raise SeqnlpError("the model has no trainable parameters")
        # One fused kernel per step instead of ~10 tensor ops per parameter: on a 2-core CPU the plain
        # loop cost 7.2 ms a step for a 13k x 128 embedding, fused 0.9 ms (of a ~25 ms SST-2 step).
        params = [p for g in groups for p in g["params"]]
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=c.lr, fused=fused)
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=c.lr, fused=fused)
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)

    def _lr(self, step: int, total: int, plateau_scale: float) -> float:
        """Learning rate for optimizer step number `step` (0-based) of `total`.

        With a time budget, linear and cosine schedules also end when the budget does, so a run cut short by
        --time-budget still anneals to the floor instead of stopping at a high rate. Whether a run is cut is
        judged from its pace after 5% of the planned steps (and the warmup), and again at every step until it
        is: a run on course to finish inside the budget keeps the step schedule, and so stays reproducible; one
        that is not, or that slows down later (gradual unfreezing makes the first steps the fastest), follows
        the clock from then on (progress = the larger of the step fraction and the budget fraction spent).
        The budget here is what is left for steps: the time the final evaluation and save will take (a tenth more
        than the last ones took) is kept back, so that the whole run fits the budget.
        """
        c = self.config
        warmup = c.warmup if c.warmup >= 1 else c.warmup * total
        if warmup > 0 and step < warmup:
            return c.lr * (step + 1) / warmup
        if c.schedule in ("constant", "plateau") or total <= warmup:
            return c.lr * (plateau_scale if c.schedule == "plateau" else 1.0)
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        state = getattr(self, "_s", None)
        if c.time_budget > 0 and state is not None:
            budget = self._step_budget()
            if not state.get("budget_bound") and step >= max(warmup, 0.05 * total) and step > 0:
                state["budget_bound"] = float(state["elapsed"]) * total / step > budget  # projected run time
            if state.get("budget_bound"):
                progress = max(progress, min(1.0, float(state["elapsed"]) / budget))
        if c.schedule == "linear":
            return c.lr * (1.0 - progress)
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _step_budget(self) -> float:
        """Seconds of the time budget for training steps: all of it less the reserve for the final evaluation and
        save (never less than half: a budget too short for even one evaluation still trains)."""
        budget = self.config.time_budget * 60.0
        return max(budget - float(self._s.get("reserve", 0.0)), 0.5 * budget)

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    # ------------------------------------------------------------ fit

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until epochs / max_steps / time budget / early stopping; return the summary.

        With `resume=True` the run folder's last checkpoint is loaded and training continues exactly
        where it stopped (same batches, same RNG streams), so the result equals an uninterrupted run.
        """
        self._freed_memory = FreedMemory.kept()
        dist = _Dist(self.config.device)
        self._lock_file = None
        fresh = not self.run_dir.exists()
        try:
            state = self._setup(dist, resume)
            return self._train(dist, state)
        except BaseException:
            # A run that fails before its first checkpoint leaves no half-made folder behind to block a retry.
            if fresh and dist.main and self._lock_file is not None and not (self.run_dir / ckpt.STATE_FILE).exists():
                self._discard_run_dir()
            raise
        finally:
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
            dist.close()
            if self._freed_memory is not None:  # what comes next (scoring, a recipe's next step) starts lean
                self._freed_memory.release()

    def _setup(self, dist: _Dist, resume: bool) -> dict[str, Any] | None:
        """Rank 0 checks and locks the folder; every rank learns whether that worked."""
        state: dict[str, Any] | None = None
        failure: SeqnlpError | None = None
        if dist.main:
            try:
                state = self._prepare_run_dir(resume)
            except SeqnlpError as err:
                failure = err
        ok = dist.broadcast_(torch.tensor([0 if failure else 1]))
        if failure is not None:
            raise failure
        if not bool(ok.item()):
            raise SeqnlpError(f"rank 0 could not prepare the run folder {self.run_dir}; see its error")
        if dist.enabled and not dist.main and resume:
            state = ckpt.read_checkpoint(self.run_dir)
        return state

    def _train(self, dist: _Dist, state: dict[str, Any] | None) -> TrainResult:
        c = self.config
        device = dist.device
        bf16 = use_bf16(c.precision, device)
        raw = self.model.to(device)
        optimizer = self._make_optimizer(raw)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            model: nn.Module = DistributedDataParallel(
                raw, device_ids=[device] if device.type == "cuda" else None)
        else:
            model = raw
        progress = _Progress(c.progress, dist.main)
        log_path = self.run_dir / "log.jsonl"

        # Seeded once per run; dropout streams differ per rank. A resumed run restores them below.
        seed_everything(c.seed + dist.rank)
        if state is None:
            first = self._shard(self.train_batches(0), dist)
            if not first:
                raise SeqnlpError("no training batches: the training split is empty or smaller than one "
                                  f"batch per process (world size {dist.world})")
            planned = c.epochs * len(first)
            s: dict[str, Any] = {
                "step": 0, "epoch": 0, "position": 0,
                "total_steps": min(planned, c.max_steps) if c.max_steps else planned,
                "best": None, "best_step": 0, "best_metrics": {}, "bad_evals": 0, "plateau_scale": 1.0,
                "plateau_bad": 0, "elapsed": 0.0, "step_seconds": 0.0, "tokens": 0, "history": [],
                "loss_sum": 0.0, "loss_count": 0, "eval_loss_sum": 0.0, "eval_loss_count": 0, "log_bytes": 0,
                "last_eval_step": -1, "final_metrics": {}, "stopped": None, "world": dist.world,
                "budget_bound": None,  # decided by _lr: will --time-budget cut this run?
                "reserve": 0.0,  # seconds kept back from --time-budget's steps for the final evaluation and save
            }
            batches: Sequence[Any] | None = first
            if dist.main:
                atomic_write_bytes(log_path, b"")
        else:
            s = {k: v for k, v in state.items()
                 if k not in ("files", "optimizer", "rng", "config", "version")}
            if s.get("world", 1) != dist.world:  # each rank's share of the batches would change
                raise SeqnlpError(f"{self.run_dir} was trained by {s.get('world', 1)} process(es); resume it "
                                  f"with the same number, not {dist.world}")
            ckpt.restore_checkpoint(self.run_dir, state, raw, optimizer)
            if dist.main and log_path.exists():
                with open(log_path, "r+b") as f:  # drop log lines written after the checkpoint
                    f.truncate(s["log_bytes"])
            # A mid-epoch checkpoint: build the epoch's batches before restoring RNG, as the original run did.
            batches = self._shard(self.train_batches(s["epoch"]), dist) if s["position"] > 0 else None
            rng = state["rng"]
            ckpt.set_rng_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
            progress.message(f"resuming {self.run_dir} at step {s['step']} (epoch {s['epoch'] + 1}, "
                             f"batch {s['position']})")
        if dist.enabled:  # no rank starts before every rank has read the checkpoint
            torch.distributed.barrier()

        self._s, self._raw, self._optimizer, self._dist = s, raw, optimizer, dist
        self._reserve_seconds, self._checkpoint_seconds = float(s.get("reserve", 0.0)), 0.0  # this process's clock
        self._progress, self._log_path, self._bf16 = progress, log_path, bf16
        interrupts = _Interrupts()
        session_start = time.perf_counter()
        elapsed_before = s["elapsed"]
        stopped = "epochs"
        self._committed_step = s["step"] if state is not None else -1
        try:
            with interrupts.installed():
                try:
                    stopped = self._loop(model, batches, session_start, elapsed_before, interrupts)
                except _Stop as stop:
                    stopped = stop.reason
            if stopped == "interrupted":
                if dist.main:
                    print(f"interrupted: saved the checkpoint at step {s['step']} in {self.run_dir}; "
                          "continue it with --resume", file=sys.stderr)
                raise KeyboardInterrupt
        finally:
            # A second Ctrl-C lands mid-step, where the state is inconsistent: it leaves without saving.
            progress.close()

        # Evaluate the final weights when the loop ended between evaluations (time budget, max steps),
        # and commit the end so that resuming a finished run does not train further.
        finished_before = s.get("stopped") in FINISHED
        s["elapsed"] = elapsed_before + time.perf_counter() - session_start
        if s["last_eval_step"] != s["step"]:
            self._evaluate_and_checkpoint(s["epoch"] + s["position"] / max(1, self._epoch_len or 1))
        s["stopped"] = stopped
        s["elapsed"] = elapsed_before + time.perf_counter() - session_start
        if not finished_before:
            self._checkpoint()
        tokens = int(dist.sum_(torch.tensor([s["tokens"]], dtype=torch.float64)).item())
        result = TrainResult(
            metric=self.metric, best_metric=float(s["best"]), best_step=int(s["best_step"]),
            steps=int(s["step"]),
            epochs=round(s["epoch"] + s["position"] / max(1, self._epoch_len or 1), 4),
            train_seconds=round(s["elapsed"], 3),
            tokens_per_second=round(tokens / s["step_seconds"], 1) if s["step_seconds"] > 0 else 0.0,
            stopped=stopped, best_metrics=dict(s["best_metrics"]), final_metrics=dict(s["final_metrics"]),
            history=list(s["history"]))
        if dist.main:
            summary = {k: v for k, v in result.__dict__.items() if k != "history"}
            atomic_write_json(self.run_dir / "metrics.json", summary)
            if c.curves:
                self._plot(result.history)
            progress.message(f"done: best {self.metric} {result.best_metric:.4f} at step {result.best_step}; "
                             f"{result.steps} steps in {result.train_seconds:.1f}s ({stopped})")
            if stopped == "early_stopping":
                progress.message(f"stopped early: validation {self.metric} did not improve for {c.patience} "
                                 f"evaluations (--patience); the best model, step {result.best_step}, is kept")
        return result

    def _shard(self, batches: Sequence[Any], dist: _Dist) -> Sequence[Any]:
        """This rank's batches: every world-th one, cut so that every rank runs the same number of steps."""
        if not isinstance(batches, Sequence):
            batches = list(batches)
        if not dist.enabled:
            return batches
        per_rank = len(batches) // dist.world
        return list(batches[dist.rank::dist.world])[:per_rank]

    def _loop(self, model: nn.Module, batches: Sequence[Any] | None, session_start: float,
              elapsed_before: float, interrupts: _Interrupts) -> str:
        c, s, dist, optimizer = self.config, self._s, self._dist, self._optimizer
        staged = [g for g in optimizer.param_groups if g.get("start", 0) > 0]
        if staged and dist.enabled:
            raise SeqnlpError("gradual unfreezing does not run under torchrun (DDP needs a fixed set of trained "
                              "parameters); train in one process")
        later = {id(p) for g in staged for p in g["params"]}
        params = [p for p in self._raw.parameters() if p.requires_grad or id(p) in later]
        self._epoch_len = len(batches) if batches is not None else None
        if s.get("stopped") in FINISHED:  # resuming a run that already ended
            return s["stopped"]
        model.train()
        while s["epoch"] < c.epochs:
            if batches is None:
                batches = self._shard(self.train_batches(s["epoch"]), dist)
            self._epoch_len = n = len(batches)
            if n == 0:
                raise SeqnlpError(f"no training batches in epoch {s['epoch'] + 1}")
            self._progress.start_epoch(s["epoch"], c.epochs, n, s["position"])
            while s["position"] < n:
                if c.max_steps and s["step"] >= c.max_steps:
                    raise _Stop("max_steps")
                t0 = time.perf_counter()
                batch = batches[s["position"]].to(dist.device)
                lr = self._lr(s["step"], s["total_steps"], s["plateau_scale"])
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                for group in staged:  # frozen until its start step: no gradient is even computed for it
                    start = group["start"] if group["start"] >= 1 else group["start"] * s["total_steps"]
                    for p in group["params"]:
                        p.requires_grad_(s["step"] >= start)
                with autocast(dist.device, self._bf16):
                    out = model(batch)
                loss = out.loss
                if loss is None:
                    raise SeqnlpError("the model returned no loss for a training batch; "
                                      "do the training batches carry labels/targets?")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])  # scalar
                now = time.perf_counter()
                spent = elapsed_before + now - session_start
                # Stop unless one more step, and the evaluation this step makes, leave time for the final one.
                evaluates = (s["step"] + 1) % c.eval_every == 0 if c.eval_every else s["position"] + 1 == n
                ahead = (now - t0) + (float(s.get("reserve", 0.0)) if evaluates else 0.0)
                out_of_time = c.time_budget > 0 and spent + ahead >= self._step_budget()
                loss32, norm32 = loss.detach().float(), norm.detach().float().to(loss.device)
                # One reduction per step gives every rank the global mean loss, the same stop decisions and
                # the same clock (the budget-bound schedule reads it: ranks must agree on the learning rate).
                flags = dist.sum_(torch.cat([
                    torch.stack([loss32, (~torch.isfinite(loss32)).float(), (~torch.isfinite(norm32)).float()]
                                ).double(),
                    torch.tensor([float(interrupts.requested), float(out_of_time), spent,
                                  self._reserve_seconds], dtype=torch.float64, device=loss.device),
                    norm32.double().unsqueeze(0),
                ])).tolist()  # [loss sum, loss bad, grad bad, interrupt, out of time, seconds spent, reserve, norm]
                if flags[1] or flags[2]:
                    self._non_finite(float(loss32), float(norm32))
                # clip_grad_norm_'s scaling, skipped where its factor would be exactly 1: most steps (98% of an
                # SST-2 run), and the pass over every gradient cost ~4% of the step on the 2-core EPYC.
                if c.clip_norm > 0 and flags[7] / dist.world + 1e-6 > c.clip_norm:
                    torch.nn.utils.clip_grads_with_norm_(params, c.clip_norm, norm)
                optimizer.step()
                if self._freed_memory is not None:
                    self._freed_memory.check()
                loss_value = flags[0] / dist.world
                s["step"] += 1
                s["position"] += 1
                s["tokens"] += int(batch.num_tokens)
                s["loss_sum"] += loss_value
                s["loss_count"] += 1
                s["eval_loss_sum"] += loss_value
                s["eval_loss_count"] += 1
                s["step_seconds"] += time.perf_counter() - t0
                s["elapsed"] = (elapsed_before + time.perf_counter() - session_start if dist.world == 1
                                else flags[5] / dist.world)
                s["reserve"] = flags[6] / dist.world
                epoch_float = s["epoch"] + s["position"] / n
                tps = s["tokens"] * dist.world / s["step_seconds"] if s["step_seconds"] > 0 else 0.0
                if s["step"] % c.log_every == 0:
                    mean = s["loss_sum"] / s["loss_count"]
                    self._log({"type": "train", "step": s["step"], "epoch": round(epoch_float, 4),
                               "loss": mean, "lr": lr,
                               "tokens_per_second": round(tps, 1)})
                    self._progress.update(s["position"], mean, tps)
                    s["loss_sum"], s["loss_count"] = 0.0, 0
                else:
                    self._progress.update(s["position"], None, tps)
                end_of_epoch = s["position"] == n
                if end_of_epoch:  # commit "next epoch, not started" so a resume rebuilds its batches
                    s["epoch"] += 1
                    s["position"] = 0
                if evaluates:
                    stop_early = self._evaluate_and_checkpoint(epoch_float)
                    model.train()
                    if stop_early:
                        raise _Stop("early_stopping")
                elif end_of_epoch or (c.checkpoint_every and s["step"] % c.checkpoint_every == 0):
                    self._checkpoint()
                if flags[3]:  # Ctrl-C (on any rank): commit this step, then leave
                    if self._committed_step != s["step"]:
                        self._checkpoint()
                    return "interrupted"
                if flags[4]:
                    raise _Stop("time_budget")
                if c.max_steps and s["step"] >= c.max_steps:
                    raise _Stop("max_steps")
                if end_of_epoch:
                    break
            batches = None
        return "epochs"

    def _non_finite(self, loss: float, norm: float) -> None:
        s = self._s
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        last = _committed_state(self.run_dir)
        if last is not None and "step" in last:
            where = f"the last good checkpoint (step {last['step']}) is {self.run_dir / ckpt.LAST_FILE}"
        else:
            where = "no checkpoint was saved before it"
        raise SeqnlpError(f"non-finite {what} at step {s['step'] + 1}; training stopped and the weights were "
                          f"not saved; {where}; try a lower --lr or --clip-norm, or --precision fp32")

    def _log(self, record: dict[str, Any]) -> None:
        if not self._dist.main:
            return
        line = (json.dumps(record) + "\n").encode()
        try:
            with open(self._log_path, "ab") as f:
                f.write(line)
        except OSError as err:
            raise SeqnlpError(f"could not write {self._log_path}: {err.strerror}; "
                              "check free space and permissions") from None
        self._s["log_bytes"] += len(line)

    def _evaluate_and_checkpoint(self, epoch_float: float) -> bool:
        """Evaluate (rank 0), update best/patience/plateau, save best and last; True to stop early."""
        s, dist = self._s, self._dist
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if dist.main:
            metrics = self._evaluate(self._raw)
        value = torch.tensor([metrics.get(self.metric, 0.0)], dtype=torch.float64)  # (1,) rank 0's value
        value = float(dist.broadcast_(value).item())
        improved = self._improved(value, s["best"])
        train_loss = s["eval_loss_sum"] / s["eval_loss_count"] if s["eval_loss_count"] else None
        s["eval_loss_sum"], s["eval_loss_count"] = 0.0, 0
        s["last_eval_step"] = s["step"]
        record = {"step": s["step"], "epoch": round(epoch_float, 4), "train_loss": train_loss, **metrics}
        s["history"].append(record)
        s["final_metrics"] = metrics
        if improved:
            previous_best = s["best_step"] if s["best"] is not None else None
            s.update(best=value, best_step=s["step"], best_metrics=metrics, bad_evals=0, plateau_bad=0)
            if dist.main:
                try:
                    # The best step in the metadata lets load_model_weights notice a stop between this save
                    # and the commit below (trainer_state.json would still name the previous best).
                    ckpt.save_model_weights(self.run_dir / ckpt.BEST_FILE, self._raw,
                                            {**self._artifact_meta, "step": str(s["step"]),
                                             ckpt.BEST_STEP_KEY: str(s["step"])})
                except SeqnlpError as err:
                    kept_best = (f"{ckpt.BEST_FILE} (best step {previous_best})" if previous_best is not None
                                 else f"no {ckpt.BEST_FILE} yet")
                    kept_state = (f"the checkpoint of step {self._committed_step}" if self._committed_step >= 0
                                  else "no checkpoint yet")
                    raise SeqnlpError(f"could not save the best model of step {s['step']} ({err}); kept "
                                      f"{kept_best} and {kept_state} unchanged; free some space, then "
                                      "continue with --resume") from None
        else:
            s["bad_evals"] += 1
            s["plateau_bad"] += 1
            if self.config.schedule == "plateau" and s["plateau_bad"] >= self.config.plateau_patience:
                s["plateau_scale"] *= self.config.plateau_factor
                s["plateau_bad"] = 0
        self._log({"type": "eval", **record, "best": improved})
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self._progress.message(f"step {s['step']} (epoch {epoch_float:.2f}): {shown}"
                               + (" (best)" if improved else "")
                               + (f" train_loss={train_loss:.4f}" if train_loss is not None else ""))
        self._checkpoint()
        # The end of a run evaluates and saves like this, then saves once more: what --time-budget keeps back, with
        # a tenth more (the same evaluation took 0.2-0.5 s longer at the end of 25-minute runs).
        self._reserve_seconds = 1.1 * (time.perf_counter() - start + self._checkpoint_seconds)
        return bool(self.config.patience and s["bad_evals"] >= self.config.patience)

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        """The task's `evaluate` in eval mode under no_grad (and autocast); the metric must be there."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast(self._dist.device, self._bf16):
                metrics = self.evaluate_fn(model)
        finally:
            model.train(was_training)
        if self.metric not in metrics:
            raise SeqnlpError(f"evaluate returned {sorted(metrics)} but not the metric {self.metric!r}")
        out = {k: float(v) for k, v in metrics.items()}
        if not math.isfinite(out[self.metric]):
            raise SeqnlpError(f"the validation {self.metric} is {out[self.metric]} at step "
                              f"{self._s['step']}; the model has diverged: try a lower --lr")
        return out

    def _checkpoint(self) -> None:
        """Commit the current state (rank 0 writes; RNG states gathered from every rank)."""
        s, dist = self._s, self._dist
        start = time.perf_counter()
        rngs = [ckpt.rng_state()]
        if dist.enabled:  # dropout streams differ per rank: keep each rank's torch generator state
            mine = torch.get_rng_state().to(torch.int64)  # (5056,) generator bytes; gloo gathers int64
            rngs = [dict(rngs[0], torch=row.to(torch.uint8).numpy().tobytes().hex())
                    for row in dist.gather_rows(mine)]
        self._committed_step = s["step"]
        if not dist.main:
            return
        state = dict(s, config=to_dict(self.config), rng=rngs)
        ckpt.write_checkpoint(self.run_dir, self._raw, self._optimizer, state, self._artifact_meta)
        self._checkpoint_seconds = time.perf_counter() - start

    def _plot(self, history: list[dict[str, Any]]) -> None:
        """training_curves.png: train loss and the metric against steps (skipped without matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        text = read_file_bytes(self._log_path, MAX_ARTIFACT_BYTES, "log file").decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines()]
        train = [r for r in rows if r.get("type") == "train"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        if train:
            ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (per log interval)")
        evals = [r for r in history if r.get("train_loss") is not None]
        ax1.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-",
                 label="train (per evaluation)")
        if self.metric_is_loss:
            ax1.plot([r["step"] for r in history], [r[self.metric] for r in history], "s-",
                     label=f"validation ({self.metric})")
        ax1.set_xlabel("step")
        ax1.set_ylabel("loss")
        ax1.legend()
        ax2.plot([r["step"] for r in history], [r[self.metric] for r in history], "o-")
        ax2.set_xlabel("step")
        ax2.set_ylabel(f"validation {self.metric}")
        fig.tight_layout()
        import io as _io

        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(self.run_dir / "training_curves.png", buf.getvalue())
