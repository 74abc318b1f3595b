"""The task layer: what every task does the same way, written once.

A recipe (`seqnlp/tasks/<kind>.py`) declares what makes its task different in a `TaskSpec`: its config
sections and presets, how it prepares data and builds its model (`prepare`), how a saved run answers
queries (`load`), how it is scored and described, and its own subcommands. This module owns the rest:

- the command line: `train` (default), `evaluate`, and the recipe's commands, with the same common flags
  everywhere (`--output`, `--resume RUN_DIR`, `--results`, `--seed`, `--device`, `--time-budget`, `--progress`,
  `--benchmark`, `--dataset`, `--<role>-column`), and one-line errors that point at `--help`;
- where the data comes from: a benchmark file, or any dataset by one rule (`benchmark_of`);
- run folders: naming, pre-flight checks, one resume behaviour, config.json written and read here;
- transfer between tasks: `--init-from RUN_DIR` starts a model from a saved run of another task (a language
  model starting a classifier: its tokenizer, embedding and encoder), sizes checked against that run, and
  `--recipe NAME` chains both steps in one command (the first trained unless --init-from names one);
- after training: the saved run is loaded as any user would load it and scored by `seqnlp.scoring`,
  the same path as `evaluate` and the leaderboard; `evaluation_<split>.json`, the results JSON, the usage hint;
- more than one process (`torchrun --nproc_per_node N -m seqnlp.tasks.<kind> ...`): every process checks the
  flags and prepares the same tokenizers and data (checked to be equal), each on its own device (cuda:LOCAL_RANK
  with nccl, or the CPU with gloo); the trainer gives process r part r of every global batch (`Run.world`); rank
  0 alone prints, writes the run folder, validates and scores. config.json records `world_size`, and a resume
  with another number of processes is refused before any data is read.

Output convention: the report goes to stdout (the data, the model summary, the scores, the training summary,
the results path, the usage hint); progress, samples, notes and errors go to stderr, so a failed run's
stderr is its one error line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from seqnlp import __version__, card, distributed, run_folder, scoring
from seqnlp import checkpoint as ckpt
from seqnlp.benchmark import Benchmark, load_benchmark
from seqnlp.config import add_flags, flag_name, opt, resolve, to_dict
from seqnlp.data import available_splits, check_columns, mirror_name
from seqnlp.device import use_bf16
from seqnlp.errors import SeqnlpError, cli_main
from seqnlp.io import atomic_write_json, read_json
from seqnlp.results import build_result, check_results_path, git_commit, hardware, write_result
from seqnlp.summary import count_parameters, summary
from seqnlp.tasks import kind, spec
from seqnlp.tokenization import Tokenizer
from seqnlp.trainer import TrainConfig, Trainer, check_run_dir, seed_everything

CONFIG_FILE = "config.json"
DEFAULT_COLUMNS = {"text": "text", "label": "label", "tokens": "tokens", "tags": "ner_tags"}  # guessed for --dataset


# ====================================================================== what a recipe provides

@dataclass
class InitRun:
    """The saved run of another task that starts this run's model (--init-from RUN_DIR), as `prepare` sees it."""

    run_dir: Path
    task: str
    config: dict[str, Any]  # its config.json
    settings: dict[str, Any]  # its config.json sections as their dataclasses

    def tokenizer(self, name: str = "tokenizer.json") -> Tokenizer:
        """Its tokenizer, which the new run takes over (the embedding rows are its ids)."""
        return Tokenizer.load(self.run_dir / name)

    def weights(self) -> dict[str, torch.Tensor]:
        """Its best weights (model.safetensors), checked to belong to its config.json and tokenizer as loading does."""
        path = self.run_dir / ckpt.BEST_FILE
        if not path.exists():
            raise SeqnlpError(f"--init-from {self.run_dir} holds no {ckpt.BEST_FILE}; did its training finish an "
                              "evaluation?")
        tensors = ckpt.read_model_weights(path)
        ckpt.check_artifacts(self.run_dir, path)
        return tensors

    def copy_into(self, model: nn.Module, parts: dict[str, str], source: dict[str, torch.Tensor] | None = None) -> int:
        """Copy its tensors (or `source`'s, e.g. its model after more training) into `model` exactly:
        {target prefix: source prefix}, e.g. {"encoder.": "encoder."}.

        Every parameter of `model` under a target prefix must have its counterpart, of the same shape; returns
        how many tensors were copied."""
        source, target = source if source is not None else self.weights(), dict(model.named_parameters())
        copied = 0
        with torch.no_grad():
            for to, frm in parts.items():
                names = [n for n in target if n.startswith(to)]
                if not names:
                    raise SeqnlpError(f"the model has no parameters under {to!r} to start from {self.run_dir}")
                for name in names:
                    tensor = source.get(frm + name[len(to):])
                    if tensor is None or tuple(tensor.shape) != tuple(target[name].shape):
                        shown = "missing" if tensor is None else f"of shape {tuple(tensor.shape)}"
                        raise SeqnlpError(f"{name} {tuple(target[name].shape)} cannot start from {self.run_dir}: its "
                                          f"{frm + name[len(to):]} is {shown}; was that run trained with other sizes?")
                    target[name].copy_(tensor.to(target[name].dtype))
                    copied += 1
        return copied

    def describe(self) -> str:
        """The starting run's model name, as its results name it."""
        return spec(self.task).describe(self.settings)


@dataclass
class Run:
    """What a recipe's `prepare` gets: the data source, the resolved settings, the run folder."""

    bench: Benchmark
    settings: dict[str, Any]  # section name → its dataclass ("train" is the TrainConfig)
    run_dir: Path
    resume: bool
    device: torch.device
    bf16: bool
    # Processes training together (torchrun). Batch sizes are per process: a recipe builds global batches of
    # batch_size x world and deals them out with `seqnlp.data.deal(batches, run.world)`.
    world: int = 1
    init: InitRun | None = None  # with --init-from (not when resuming: the checkpoint holds the weights then)
    inits: tuple[InitRun, ...] = ()  # every run --init-from names, `init` first (Transfer.runs > 1: a pair)

    def rows(self, role: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """({column role: values}, {column role: feature}) of one split role (train | validation | test)."""
        ds = self.bench.load_split(role)  # a carved part is cut from train when the source says so
        check_columns(ds, list(self.bench.columns.values()), source=self.bench.source())
        if len(ds) == 0:
            raise SeqnlpError(f"{self.where(role)} is empty; check the dataset and --train-split / --eval-split")
        return ({r: list(ds[c]) for r, c in self.bench.columns.items()},
                {r: ds.features.get(c) for r, c in self.bench.columns.items()})

    def where(self, role: str) -> str:
        """'<benchmark> <role> split (<split name>)', for messages that name a row."""
        return f"{self.bench.name} {role} split ({self.bench.split_name(role)})"

    def tokenizer(self, name: str, train: Callable[[], Tokenizer]) -> Tokenizer:
        """The run's saved tokenizer `name` when resuming, else a new one from `train()`."""
        if self.resume and (self.run_dir / name).exists():
            return Tokenizer.load(self.run_dir / name)
        return train()


@dataclass
class Prepared:
    """What `prepare` hands back: a model and its data, ready for the trainer."""

    model: nn.Module  # forward(batch) -> Output(logits, loss)
    train_batches: Callable[[int], Sequence[Any]]  # epoch → its batches, in a fixed order
    validate: Callable[[nn.Module], dict[str, float]]  # the model-selection metrics on validation
    artifacts: dict[str, str | bytes]  # files that make the run loadable besides config.json (tokenizers)
    example: Any = None  # a small batch, for the summary table
    saved: dict[str, Any] = field(default_factory=dict)  # extra config.json entries (e.g. class names)
    pretrain_seconds: float = 0.0  # spent before training (counted in --time-budget and in the results)


@dataclass(frozen=True)
class Command:
    """A task's own subcommand: `arguments(parser)` adds its flags, `run(args, load)` does it.

    `load()` returns the run given by --model as a predictor (call it after checking the other flags).
    """

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Callable[[], Any]], int]


@dataclass(frozen=True)
class Transfer:
    """Which saved runs can start this task's model (--init-from RUN_DIR), and what the new run takes from them."""

    tasks: tuple[str, ...]  # kinds whose runs can start it, e.g. ("generation",): language models
    # The source runs' settings (one per run --init-from names) → {section: {field: value}} the new run must share
    # (cell, sizes, tokenizer); these fill the fields no flag sets, and a flag that contradicts them is refused.
    shared: Callable[..., dict[str, dict[str, Any]]]
    runs: int = 1  # how many runs --init-from may name, e.g. 2: a forward and a backward language model
    runs_help: str = ""  # what the second and later runs are, for --help


@dataclass(frozen=True)
class Recipe:
    """A chain run by one command (--recipe NAME): a run of `Transfer.tasks[0]` first, unless --init-from names
    a saved one, then this task's run starting from it, with this recipe's settings."""

    help: str
    first: Callable[[Benchmark], list[str]]  # the first step's command line for this task's benchmark
    presets: dict[str, dict[str, dict[str, Any]]]  # benchmark ("*" = any other) → {section: values}; flags win


@dataclass(frozen=True)
class TaskSpec:
    """Everything that makes a task different; `main(SPEC, argv)` does the rest."""

    name: str  # the kind, as in seqnlp.tasks.KINDS and every config.json
    summary: str  # what `train` does, for --help
    sections: dict[str, type]  # config.json sections besides "source" and "train", each a dataclass of flags
    default_benchmark: str
    train_defaults: dict[str, Any]  # TrainConfig values this task starts from
    presets: dict[str, dict[str, dict[str, Any]]]  # benchmark → {section: values}; flags still win
    metric: str  # the validation metric that selects the model (a key of `validate`'s dict)
    higher_is_better: bool
    prepare: Callable[[Run], Prepared]
    load: Callable[[Path, dict[str, Any], str], Any]  # (run folder, settings, device) → predictor
    score: Callable[..., Any]  # seqnlp.scoring.<kind>: (predictor, columns, features, benchmark)
    describe: Callable[[dict[str, Any]], str]  # settings → the model's name in results
    baseline: Callable[..., Any]  # seqnlp.baselines.fit_*: (benchmark, data_dir) → (model, config, seconds, chars)
    usage: tuple[str, ...] = ()  # example lines after training; {run} and {module} are filled in
    commands: dict[str, Command] = field(default_factory=dict)
    # Extra evaluate flags that set up the predictor (e.g. --beam): (add them, apply them to a predictor).
    evaluate_options: tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any, argparse.Namespace], None]] | None = None
    report: Callable[[scoring.Evaluation, Path | None], None] | None = None  # extra output (a picture)
    # (ONNX folder, settings, {part name: callable over tensors}) → the predictor over its exported parts, whose
    # torch predictor names them in `onnx_parts()` (seqnlp.export).
    onnx: Callable[[Path, dict[str, Any], dict[str, Callable[..., Any]]], Any] | None = None
    transfer: Transfer | None = None  # --init-from: which runs of other tasks can start this one
    recipes: dict[str, Recipe] = field(default_factory=dict)  # --recipe NAME


# ====================================================================== where the data comes from

@dataclass
class SourceConfig:
    """Which data: a benchmark from tasks/, or any dataset with --dataset (saved as config.json's "source")."""

    benchmark: str = opt("", "benchmark name in tasks/ or a .toml path (default: the task's)")
    # With --dataset the benchmark's data is replaced; splits and columns are then found by one rule (below).
    dataset: str = opt("", "any dataset: hub id, mirror name, folder of <split>.<ext> files, or one file")
    train_split: str = opt("", "training split (default: the benchmark's, or 'train')")
    eval_split: str = opt("", "scored split (default: the benchmark's; for --dataset: test, else validation, "
                          "else a part carved from train)")
    # 0 = the task's own share: 0.1 of the rows, or 0.05 of the characters of a text (a book) for generation.
    validation_fraction: float = opt(0.0, "for --dataset without a validation split: the share of train carved "
                                     "off for model selection (0 = the task's default)", min=0, max=0.5)
    test_fraction: float = opt(0.0, "for --dataset without a test split: the share of train carved off as the "
                               "scored part (0 = the task's default)", min=0, max=0.5)
    columns: dict = opt({}, "column role → dataset column (from --<role>-column)", flag=False)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", Path(text).stem.lower()).strip("_") or "dataset"


def benchmark_of(task: str, source: SourceConfig, default: str, *, scoring_only: bool = False) -> Benchmark:
    """The benchmark to run: a benchmark file, or for --dataset one made on the spot by the one rule:
    train = --train-split or 'train' (or the only split); validation = 'validation'/'valid'/'dev', else carved
    from train; scored = --eval-split, else 'test', else 'validation', else carved from train. With
    `scoring_only` (evaluate) only the scored split has to exist.
    """
    k = kind(task)
    if not source.dataset:
        bench = load_benchmark(source.benchmark or default)
        if bench.task != task:
            raise SeqnlpError(f"benchmark {bench.name!r} is a {bench.task} benchmark, not {task}; "
                              f"run it with python -m seqnlp.tasks.{bench.task}")
        changes: dict[str, Any] = {"columns": {r: source.columns.get(r) or c for r, c in bench.columns.items()}}
        if source.train_split:
            changes["train_split"] = source.train_split
        if source.eval_split:
            changes["test_split"] = source.eval_split
            if bench.validation_split == source.eval_split:
                changes["validation_split"] = None  # never select the model on the scored split
        return replace(bench, **changes)
    splits = available_splits(source.dataset)
    train = source.train_split or ("train" if "train" in splits or len(splits) != 1 else splits[0])
    if scoring_only and source.eval_split in splits:
        train = train if train in splits and train != source.eval_split else ""
    elif train not in splits:
        raise SeqnlpError(f"dataset {source.dataset!r} has no split {train!r}; its splits are {', '.join(splits)}; "
                          "choose one with --train-split")
    others = [s for s in splits if s != train]
    scored = source.eval_split or next((s for s in ("test", "validation") if s in others), "")
    if scored == train and not scoring_only:
        raise SeqnlpError("--eval-split equals --train-split; score on a held-out split")
    if scored and scored not in splits:
        raise SeqnlpError(f"dataset {source.dataset!r} has no split {scored!r}; its splits are {', '.join(splits)}")
    validation = next((s for s in ("validation", "valid", "dev") if s in others and s != scored), None)
    columns = {r: source.columns.get(r) or DEFAULT_COLUMNS.get(r, "") for r in k.columns}
    missing = [r for r, c in columns.items() if not c]
    if missing:
        raise SeqnlpError(f"--dataset needs {' and '.join(flag_name(r + '_column') + ' NAME' for r in missing)} "
                          "(which columns hold the " + " and ".join(missing) + ")")
    return Benchmark(name=_slug(mirror_name(source.dataset)), version=1, task=task,
                     description=f"{source.dataset} (user dataset)", hub_id=source.dataset, mirror="",
                     train_split=train, validation_split=validation, validation_fraction=source.validation_fraction or k.carve_fraction,
                     validation_seed=0, test_split=scored, columns=columns, metric=k.metrics[0],
                     higher_is_better=k.metrics[0] not in ("nats_per_char", "bits_per_char", "perplexity"),
                     metrics=list(k.metrics), validation_unit=k.carve_unit, test_fraction=source.test_fraction or k.carve_fraction)


def _source_values(config: dict[str, Any]) -> dict[str, Any]:
    """The saved "source" section (runs saved before it existed kept these keys under "data")."""
    if isinstance(config.get("source"), dict):
        return dict(config["source"])
    old = config.get("data") if isinstance(config.get("data"), dict) else {}
    names = {f for f in SourceConfig.__dataclass_fields__ if f != "columns"}
    values: dict[str, Any] = {k: v for k, v in old.items() if k in names}
    values["columns"] = {k[:-len("_column")]: v for k, v in old.items() if k.endswith("_column") and v}
    return values


def _source(task: str, args: argparse.Namespace, saved: dict[str, Any] | None) -> SourceConfig:
    typed = {k: v for k, v in vars(args).items() if v is not None}  # evaluate's flags default to None
    cfg = resolve(SourceConfig, typed, {k: v for k, v in (saved or {}).items() if k != "columns"})
    columns = dict((saved or {}).get("columns") or {})
    for role in kind(task).columns:
        value = getattr(args, f"{role}_column", None)
        if value:
            columns[role] = value
    return replace(cfg, columns=columns)


# ====================================================================== run folders

def read_config(run_dir: str | Path, task: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A run folder and its config.json, checked to be a seqnlp run (of `task`, when given)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise SeqnlpError(f"model folder {run} does not exist; pass the run folder that training printed")
    config = read_json(run / CONFIG_FILE)
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise SeqnlpError(f"{run / CONFIG_FILE} has no 'task' entry; is {run} a seqnlp run folder?")
    if task is not None and config["task"] != task:
        raise SeqnlpError(f"{run} holds a {config['task']} model, not a {task} model; "
                          f"use python -m seqnlp.tasks.{config['task']}")
    kind(config["task"])
    return run, config


def settings_of(task_spec: TaskSpec, config: dict[str, Any], where: str) -> dict[str, Any]:
    """config.json's sections as their dataclasses (other entries as they are)."""
    out = dict(config)
    for name, cls in [*task_spec.sections.items(), ("train", TrainConfig)]:
        out[name] = resolve(cls, None, config.get(name) or {}, source=f"{where} {name}")
    return out


def load_run(run_dir: str | Path, device: str = "cpu") -> Any:
    """Load any saved run folder as its task's predictor (what `seqnlp.load` does)."""
    run, config = read_config(run_dir)
    task_spec = spec(config["task"])
    return task_spec.load(run, settings_of(task_spec, config, str(run / CONFIG_FILE)), device)


def _note(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_unless_main() -> Any:
    """Under torchrun, the other processes print nothing while training (their errors still show: the
    streams are back when an exception leaves)."""
    if distributed.is_main():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def _check_world(saved: dict[str, Any], run_dir: str, world: int) -> None:
    trained = saved.get("world_size", 1)  # runs saved before world_size was recorded ran in one process
    if trained != world:
        how = (f"{trained} processes in all (e.g. torchrun --nproc_per_node {trained})" if trained > 1
               else "one process (python -m, without torchrun)")
        raise SeqnlpError(f"{run_dir} was trained by {trained} process(es), this is {world}: each process's share "
                          f"of the batches would change; resume it with {how}")


def _evaluation_file(evaluation: scoring.Evaluation) -> str:
    # Named after the dataset split (evaluation_validation.json for SST-2), or the role for a carved part.
    plain = re.fullmatch(r"[A-Za-z0-9_.-]+", evaluation.split)
    return f"evaluation_{evaluation.split if plain else evaluation.role}.json"


def _finish_scoring(task_spec: TaskSpec, evaluation: scoring.Evaluation, folder: Path | None,
                    extra: dict[str, Any] | None = None) -> None:
    """Print the scores, let the recipe add its picture, write evaluation_<split>.json into `folder`."""
    print(evaluation.line(), flush=True)
    if task_spec.report is not None:
        task_spec.report(evaluation, folder)
    if folder is not None:
        atomic_write_json(folder / _evaluation_file(evaluation), {**evaluation.to_dict(), **(extra or {})})


# ====================================================================== the commands

def train(task_spec: TaskSpec, args: argparse.Namespace) -> int:
    """The `train` subcommand: prepare, fit, then score the saved run on the scored split."""
    saved: dict[str, Any] = {}
    if args.resume:
        if args.output and Path(args.output) != Path(args.resume):
            raise SeqnlpError("--resume continues RUN_DIR in place; leave out --output (or give the same folder)")
        _, saved = read_config(args.resume, task_spec.name)
        _check_world(saved, args.resume, distributed.world_size())
    source = _source(task_spec.name, args, _source_values(saved) if saved else None)
    bench = benchmark_of(task_spec.name, source, task_spec.default_benchmark)
    recipe_name = getattr(args, "recipe", None) or saved.get("recipe")
    preset = {} if source.dataset else task_spec.presets.get(bench.name, {})
    if recipe_name:  # the recipe's settings over the benchmark's preset
        chain = task_spec.recipes[recipe_name].presets
        extra = chain.get(bench.name, chain.get("*", {}))
        preset = {name: {**preset.get(name, {}), **extra.get(name, {})} for name in {*preset, *extra}}
    train_cfg = resolve(TrainConfig, args, saved.get("train") or {**task_spec.train_defaults, **preset.get("train", {})})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.resume or args.output or f"runs/{task_spec.name}-{stamp}")
    check_run_dir(run_dir, resume=bool(args.resume), overwrite=train_cfg.overwrite)  # before any data is read
    check_results_path(args.results)
    git_commit()  # pinned (cached) now, --results or not: the run's records name the code that started it
    wall0 = time.perf_counter()
    init_from = getattr(args, "init_from", None)
    if init_from and args.resume:
        raise SeqnlpError("--resume continues a run that has its starting weights already; leave out --init-from")
    if recipe_name and not init_from and not args.resume:
        init_from = _first_step(task_spec, recipe_name, bench, args, run_dir)
    paths = [] if not init_from else [init_from] if isinstance(init_from, (str, Path)) else list(init_from)
    most = task_spec.transfer.runs if task_spec.transfer else 0
    if len(paths) > most:
        raise SeqnlpError(f"--init-from names {len(paths)} runs; a {task_spec.name} model starts from at most {most}")
    inits = tuple(_init_run(task_spec, path) for path in paths)
    init = inits[0] if inits else None
    shared = task_spec.transfer.shared(*(i.settings for i in inits)) if inits and task_spec.transfer else {}
    settings: dict[str, Any] = {}
    for name, cls in task_spec.sections.items():
        settings[name] = resolve(cls, args, saved.get(name) or {**preset.get(name, {}), **shared.get(name, {})})
        for key, value in shared.get(name, {}).items():  # a flag may not contradict the run it starts from
            if getattr(settings[name], key) != value:
                raise SeqnlpError(f"{flag_name(key)} {getattr(settings[name], key)} does not fit "
                                  f"{' and '.join(map(str, paths))}, the {init.task} run(s) this one starts from "
                                  f"({key} = {value!r} there); leave the flag out to take it from that run")
    settings["train"] = train_cfg
    world = distributed.world_size()
    device = distributed.process_device(train_cfg.device, distributed.local_rank(), world)
    try:
        with _quiet_unless_main(), distributed.process_group(device):
            distributed.barrier()  # every process has checked the run folder before rank 0 creates it
            seed_everything(train_cfg.seed)
            run = Run(bench, settings, run_dir, bool(args.resume), device, use_bf16(train_cfg.precision, device),
                      world=world, init=init, inits=inits)
            prepared = task_spec.prepare(run)
            distributed.check_same(b"".join(_as_bytes(a) for _, a in sorted(prepared.artifacts.items())),
                                   "tokenizers or vocabularies")
            if prepared.example is not None and distributed.is_main():
                print(summary(prepared.model, prepared.example), flush=True)
            # The trainer's device is this process's own (cuda:LOCAL_RANK); config.json keeps the flag as given.
            fit_cfg = replace(train_cfg, device=str(device)) if world > 1 else train_cfg
            if prepared.pretrain_seconds and train_cfg.time_budget > 0:  # --time-budget covers pretraining too
                fit_cfg = replace(fit_cfg, time_budget=max(train_cfg.time_budget - prepared.pretrain_seconds / 60, 0.05))
            config = {"task": task_spec.name, "source": to_dict(source),
                      **{name: to_dict(value) for name, value in settings.items()}, **prepared.saved,
                      **({} if args.resume and "world_size" not in saved else {"world_size": world}),
                      "seqnlp_version": __version__}
            if recipe_name:
                config["recipe"] = recipe_name
            if init is not None or saved.get("init_from"):  # what it started from: named in config.json and results
                config["init_from"] = saved.get("init_from") or _init_record(*inits)
            trainer = Trainer(prepared.model, fit_cfg, run_dir, train_batches=prepared.train_batches,
                              evaluate=prepared.validate, metric=task_spec.metric,
                              higher_is_better=task_spec.higher_is_better,
                              metric_is_loss=task_spec.metric == "nats_per_char",  # a language model's loss
                              artifacts={CONFIG_FILE: json.dumps(config, indent=2) + "\n", **prepared.artifacts})
            result = trainer.fit(resume=bool(args.resume))
    except KeyboardInterrupt:
        if distributed.is_main():
            raise
        return 130  # rank 0 says where the checkpoint is
    if not distributed.is_main():  # rank 0 alone scores and writes, after the process group is closed
        return 0

    predictor = task_spec.load(run_dir, settings_of(task_spec, config, str(run_dir / CONFIG_FILE)), str(device))
    evaluation = scoring.score(predictor, bench, "test")
    train_seconds = round(result.train_seconds + prepared.pretrain_seconds, 3)  # one figure, in every record
    # The commit and the time travel with the run, for runs that start from it (--init-from) to name.
    _finish_scoring(task_spec, evaluation, run_dir, {"validation": result.best_metrics, "best_step": result.best_step,
                                                     "train_seconds": train_seconds,
                                                     "git_commit": git_commit()})
    card.write_card(run_dir, task_spec, settings, count_parameters(prepared.model)[0], hardware())
    before = _seconds_before(config)
    print(f"training: {result.steps} steps, {result.epochs:g} epochs in {train_seconds / 60:.1f} min "
          f"({result.stopped}), {result.tokens_per_second:,.0f} tokens/s; best validation {task_spec.metric} "
          f"{result.best_metric:.4g} at step {result.best_step}; wall time {(time.perf_counter() - wall0) / 60:.1f} min"
          + (f"; with the {config['init_from']['task']} run it started from, {(train_seconds + before) / 60:.1f} min "
             "of training" if before else ""), flush=True)
    if args.results:
        extra = {"validation": result.best_metrics, "best_step": result.best_step, "steps": result.steps,
                 "epochs": result.epochs, "stopped": result.stopped, "wall_seconds": round(time.perf_counter() - wall0, 1),
                 "pretrain_seconds": round(prepared.pretrain_seconds, 3), **evaluation.details}
        _write_results(args.results, task_spec, evaluation, prepared.model, config, train_seconds + before,
                       result.tokens_per_second, train_cfg.seed, extra | _started_record(config, train_seconds))
    module = f"python -m seqnlp.tasks.{task_spec.name}"
    print(f"\nmodel saved in {run_dir}. Use it:\n"
          + "".join(f"  {line.format(run=run_dir, module=module)}\n" for line in task_spec.usage)
          + f"  {module} evaluate --model {run_dir}\n"
          f"or in Python:\n  import seqnlp\n  model = seqnlp.load(\"{run_dir}\")")
    return 0


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _init_run(task_spec: TaskSpec, path: str | Path) -> InitRun:
    """The run --init-from names, checked to be one that can start this task's model."""
    tasks = task_spec.transfer.tasks if task_spec.transfer else ()
    if not tasks:
        raise SeqnlpError(f"a {task_spec.name} model cannot start from a saved run (no --init-from)")
    folder = Path(path)
    if not folder.is_dir():
        raise SeqnlpError(f"--init-from {path}: no such run folder; pass the folder a {' or '.join(tasks)} training "
                          "printed")
    run_dir, config = read_config(folder)
    if config["task"] not in tasks:
        raise SeqnlpError(f"--init-from {path} holds a {config['task']} run; a {task_spec.name} model starts from a "
                          f"{' or '.join(tasks)} run")
    source = spec(config["task"])
    return InitRun(run_dir, config["task"], config, settings_of(source, config, str(run_dir / CONFIG_FILE)))


def _init_record(init: InitRun, *more: InitRun) -> dict[str, Any]:
    """What a run started from, for its config.json and results: the run, its model, scores, commit and time;
    the other runs --init-from named (a backward language model) under "with", each recorded the same way."""
    trained: dict[str, Any] = {}
    for path in sorted(init.run_dir.glob("evaluation_*.json")):  # the one written when its training ended
        try:
            data = read_json(path)
        except SeqnlpError:
            continue
        if isinstance(data, dict) and "best_step" in data:
            trained = data
            break
    return {"run": str(init.run_dir), "task": init.task, "model": init.describe(),
            "benchmark": trained.get("benchmark"), "split": trained.get("split"),
            "scores": {m: trained[m] for m in kind(init.task).metrics if m in trained},
            "git_commit": trained.get("git_commit"), "train_seconds": trained.get("train_seconds"),
            **({"init_from": init.config["init_from"]} if init.config.get("init_from") else {}),
            **({"with": [_init_record(m) for m in more]} if more else {})}


def _first_step(task_spec: TaskSpec, name: str, bench: Benchmark, args: argparse.Namespace, run_dir: Path) -> Path:
    """--recipe without --init-from: train the run the recipe starts from, beside `run_dir`; return its folder."""
    first = spec(task_spec.transfer.tasks[0])  # type: ignore[union-attr]
    folder = Path(args.init_output) if getattr(args, "init_output", None) else (
        run_dir.parent / f"{run_dir.name}-{first.name}")
    typed = vars(args)
    argv = [*task_spec.recipes[name].first(bench), *shlex.split(getattr(args, "init_args", None) or ""),
            "--output", str(folder)]
    for key in ("seed", "device", "precision", "progress"):  # the common settings go to both steps
        if key in typed:
            argv += [flag_name(key), str(typed[key])]
    if "curves" in typed:
        argv.append("--curves" if typed["curves"] else "--no-curves")
    try:
        check_run_dir(folder, resume=False, overwrite="overwrite" in typed and typed["overwrite"])
    except SeqnlpError as err:
        raise SeqnlpError(f"{err} (or start from the run there: --init-from {folder})") from None
    _note(f"recipe {name}, step 1 of 2: python -m seqnlp.tasks.{first.name} {shlex.join(argv)}")
    train(first, parser(first, "train").parse_args(argv))
    _note(f"recipe {name}, step 2 of 2: the {task_spec.name} model, starting from {folder}")
    return folder


def _write_results(path: str, task_spec: TaskSpec, evaluation: scoring.Evaluation, model: nn.Module,
                   config: dict[str, Any], train_seconds: float | None, tokens_per_second: float | None,
                   seed: int | None, extra: dict[str, Any]) -> None:
    bench = evaluation.benchmark
    settings = settings_of(task_spec, config, "config.json")
    out = build_result(benchmark=bench.name, version=bench.version, task=task_spec.name, split=evaluation.split,
                       scores=evaluation.scores, model=task_spec.describe(settings),
                       params=count_parameters(model)[0], train_seconds=train_seconds,
                       tokens_per_second=tokens_per_second, seed=seed, config=config, extra=extra)
    print(f"results: {write_result(path, out, evaluation.outputs)}", flush=True)


def evaluate(task_spec: TaskSpec, args: argparse.Namespace) -> int:
    """The `evaluate` subcommand: score a saved run on a split of its benchmark or of any dataset."""
    run_dir, config = read_config(args.model, task_spec.name)
    check_results_path(args.results)
    saved = _source_values(config)
    if args.dataset:
        saved = {"dataset": args.dataset}
    elif args.benchmark:
        saved = {"benchmark": args.benchmark, "columns": {}}
    saved = {**saved, "eval_split": "", "train_split": saved.get("train_split", "")}
    source = _source(task_spec.name, args, saved)
    role = args.split or "test"
    if role not in scoring.SPLIT_ROLES or (source.dataset and args.split):  # a split name: score that split
        source, role = replace(source, eval_split=role), "test"
    bench = benchmark_of(task_spec.name, source, task_spec.default_benchmark, scoring_only=True)
    settings = settings_of(task_spec, config, str(run_dir / CONFIG_FILE))
    predictor = task_spec.load(run_dir, settings, args.device)
    if task_spec.evaluate_options is not None:
        task_spec.evaluate_options[1](predictor, args)
    evaluation = scoring.score(predictor, bench, role)
    trained = _training_record(run_dir, evaluation) if not (args.dataset or args.benchmark or args.output) and (
        evaluation.role == "test") else {}
    folder = Path(args.output) if args.output else run_dir
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        _note(f"note: {folder} is not writable; the evaluation is printed only (pass --output DIR to keep it)")
        folder = None
    elif args.output:
        folder.mkdir(parents=True, exist_ok=True)
    _finish_scoring(task_spec, evaluation, folder, trained)
    if folder == run_dir:  # the model card shows the run folder's evaluations
        card.write_card(run_dir, task_spec, settings, count_parameters(predictor.model)[0])
    if args.results:
        seconds = trained.get("train_seconds")
        _write_results(args.results, task_spec, evaluation, getattr(predictor, "model", nn.Module()), config,
                       None if seconds is None else seconds + _seconds_before(config), trained.get("tokens_per_second"),
                       settings["train"].seed,
                       {"model_dir": str(run_dir), **{k: v for k, v in trained.items() if k != "tokens_per_second"},
                        **evaluation.details, **(_started_record(config, seconds) if seconds is not None else {})})
    return 0


def _seconds_before(config: dict[str, Any]) -> float:
    """The training time of the runs this one started from (--init-from: the language model's), which its
    results count too."""
    started = config.get("init_from") or {}
    return sum(float(r.get("train_seconds") or 0.0) for r in [started, *started.get("with", [])])


def _started_record(config: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What a results file says of the runs this one started from, and of its own time beside theirs."""
    started = config.get("init_from")
    return {"init_from": started, "finetune_seconds": round(seconds, 3)} if started else {}


def _training_record(run_dir: Path, evaluation: scoring.Evaluation) -> dict[str, Any]:
    """How the run was trained, for an evaluation of its own scored split: kept from the evaluation file written
    when training ended, else read from metrics.json (a run whose final scoring failed stays a valid --init-from
    start). The commit is known only from the former."""
    previous = run_dir / _evaluation_file(evaluation)
    try:
        kept = read_json(previous) if previous.is_file() else {}
        metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    except SeqnlpError:
        return {}
    if isinstance(kept, dict) and "best_step" in kept:
        return {k: kept[k] for k in ("validation", "best_step", "train_seconds", "git_commit") if k in kept} | (
            {"tokens_per_second": metrics["tokens_per_second"]} if isinstance(metrics, dict)
            and "tokens_per_second" in metrics else {})
    if not isinstance(metrics, dict) or not {"best_metrics", "best_step", "train_seconds"} <= set(metrics):
        return {}
    return {"validation": metrics["best_metrics"], "best_step": metrics["best_step"],
            "train_seconds": metrics["train_seconds"], "tokens_per_second": metrics.get("tokens_per_second")}


# ====================================================================== the command line

# Spellings the task layer replaced → what to type now (named in the usage error).
RENAMED = {"--greedy-too": "translation's evaluate scores one beam size: run it again with --beam 1 for greedy"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and a pointer to --help, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        hint = " (--resume takes the run folder: --resume RUN_DIR)" if "argument --resume" in message else ""
        hint += "".join(f" ({old} is gone: {new})" for old, new in RENAMED.items() if old in message)
        self.exit(2, f"error: {message}{hint}; see {self.prog} --help\n")


def _data_flags(p: argparse.ArgumentParser, task: str) -> None:
    add_flags(p, SourceConfig, group="data source")
    group = next(g for g in p._action_groups if g.title == "data source")
    for role in kind(task).columns:
        group.add_argument(flag_name(f"{role}_column"), dest=f"{role}_column", default=None, metavar="NAME",
                           help=f"the {role} column (default: the benchmark's, or {DEFAULT_COLUMNS.get(role, 'none')!r})")


def parser(task_spec: TaskSpec, command: str) -> argparse.ArgumentParser:
    """The argument parser of one subcommand."""
    module = f"python -m seqnlp.tasks.{task_spec.name}"
    others = ", ".join(["evaluate", *task_spec.commands])
    if command == "train":
        p = _Parser(prog=f"{module} [train]", description=task_spec.summary,
                    epilog=f"other subcommands: {others} (each takes --help)")
        _data_flags(p, task_spec.name)
        for name, cls in task_spec.sections.items():
            add_flags(p, cls, group=name)
        caveat = ("the defaults shown are the task's own; a benchmark's preset"
                  + (" or a --recipe" if task_spec.recipes else "")
                  + " may set others (config.json records what a run used)")
        add_flags(p, TrainConfig, group="training", defaults=task_spec.train_defaults,
                  description=caveat if task_spec.presets or task_spec.recipes else None)
        p.add_argument("--output", help=f"run folder (default: runs/{task_spec.name}-<UTC time>)")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR, exactly")
        p.add_argument("--results", metavar="FILE", help="write the scored split's metrics as a results JSON")
        if task_spec.transfer is not None:
            tasks = " or ".join(task_spec.transfer.tasks)
            runs = task_spec.transfer.runs
            p.add_argument("--init-from", metavar="RUN_DIR", nargs="+" if runs > 1 else None,
                           help=f"start the model from a saved {tasks} run: its tokenizer, embedding and encoder "
                           "(sizes are taken from it); the rest is new" + (f". {task_spec.transfer.runs_help}"
                                                                           if runs > 1 else ""))
        if task_spec.recipes:
            p.add_argument("--recipe", choices=sorted(task_spec.recipes), help="; ".join(
                f"{n}: {r.help}" for n, r in task_spec.recipes.items()))
            p.add_argument("--init-args", metavar="FLAGS", help="--recipe: extra flags for its first step, "
                           "e.g. \"--time-budget 30\"")
            p.add_argument("--init-output", metavar="DIR", help="--recipe: the first step's run folder "
                           "(default: the run folder's name + '-<task>', beside it)")
        return p
    if command == "evaluate":
        p = _Parser(prog=f"{module} evaluate", description=f"Score a saved {task_spec.name} run on a split.")
        p.add_argument("--split", help="test (default: the benchmark's scored split), validation, train, "
                       "or a split name of the data")
        p.add_argument("--benchmark", help="benchmark name or .toml (default: the one the model was trained on)")
        p.add_argument("--dataset", help="any dataset instead of the benchmark's")
        for role in kind(task_spec.name).columns:
            p.add_argument(flag_name(f"{role}_column"), metavar="NAME", help=f"the {role} column (default: the run's)")
        p.add_argument("--results", metavar="FILE", help="write the metrics as a results JSON")
        p.add_argument("--output", metavar="DIR", help="folder for evaluation_<split>.json (default: the run folder)")
        if task_spec.evaluate_options is not None:
            task_spec.evaluate_options[0](p)
    else:
        p = _Parser(prog=f"{module} {command}", description=task_spec.commands[command].help)
        task_spec.commands[command].arguments(p)
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run folder written by training")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    return p


def main(task_spec: TaskSpec, argv: list[str] | None = None) -> int:
    """`python -m seqnlp.tasks.<kind> [train|evaluate|<command>] ...`; train is the default."""
    return _main(task_spec, list(sys.argv[1:] if argv is None else argv))


@cli_main
def _main(task_spec: TaskSpec, argv: list[str]) -> int:
    command = argv.pop(0) if argv and argv[0] in ("train", "evaluate", *task_spec.commands) else "train"
    args = parser(task_spec, command).parse_args(argv)
    if command != "train" and distributed.world_size() > 1:
        raise SeqnlpError(f"{command} runs in one process: start it with python -m seqnlp.tasks.{task_spec.name} "
                          f"{command}, not torchrun (only training uses more than one)")
    if command == "train":
        return train(task_spec, args)
    if command == "evaluate":
        return evaluate(task_spec, args)
    run_dir = args.model
    return task_spec.commands[command].run(args, lambda: load_run_of(task_spec, run_dir, args.device))


def load_run_of(task_spec: TaskSpec, run_dir: str | Path, device: str = "cpu") -> Any:
    """Load a run folder (or hub repo id) of this task as its predictor (a one-line error for another task's run)."""
    run, config = read_config(run_folder(run_dir), task_spec.name)
    return task_spec.load(run, settings_of(task_spec, config, str(run / CONFIG_FILE)), device)
