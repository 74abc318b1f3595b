"""One results JSON schema for every task, baseline and leaderboard row.

A result records what was measured (benchmark, version, split, metrics with direction and signature)
and everything needed to judge it (model, parameters, training time and speed, hardware, library
versions, git commit, seed, full config, date). `build_result` fills the environment fields itself.

    {"benchmark": "sst2", "version": 1, "task": "sentiment", "split": "validation",
     "metrics": {"accuracy": {"value": 82.3, "higher_is_better": true, "signature": "accuracy|..."}},
     "model": "bi-lstm", "params": 1234567, "train_seconds": 301.2, "tokens_per_second": 59500.0,
     "hardware": {...}, "versions": {...}, "git_commit": "ab12cd3", "seed": 0, "config": {...},
     "date": "2026-11-22T05:00:00+00:00", "extra": null}
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from seqnlp.errors import SeqnlpError
from seqnlp.io import atomic_write_bytes, atomic_write_json, read_file_bytes, read_json

# Library versions recorded in every result (distribution names on PyPI).
VERSIONED = ("torch", "datasets", "tokenizers", "sacrebleu", "scikit-learn", "numpy", "seqnlp")

# key → (allowed types, may be None)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "benchmark": ((str,), False),
    "version": ((int,), False),
    "task": ((str,), False),
    "split": ((str,), False),
    "metrics": ((dict,), False),
    "model": ((str,), False),
    "params": ((int,), True),
    "train_seconds": ((int, float), True),
    "tokens_per_second": ((int, float), True),
    "hardware": ((dict,), False),
    "versions": ((dict,), False),
    "git_commit": ((str,), True),
    "seed": ((int,), True),
    "config": ((dict,), False),
    "date": ((str,), False),
    "extra": ((dict,), True),
}
MAX_RESULT_BYTES = 4 * 1024 * 1024

# Allowed values of known metrics (inclusive bounds; None = unbounded): percentages, entropies, perplexity.
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    **{name: (0.0, 100.0) for name in ("accuracy", "macro_f1", "bleu", "chrf", "f1", "precision", "recall",
                                       "token_accuracy")},
    "nats_per_char": (0.0, None),
    "bits_per_char": (0.0, None),
    "perplexity": (1.0, None),
}

# The files a training run writes into its folder (see seqnlp.trainer): a result must never replace one.
RUN_FILE_PATTERNS = ("config.json", "tokenizer*.json", "*.safetensors", "trainer_state.json", "log.jsonl",
                     "metrics.json", "evaluation_*.json")


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (else what the platform module knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware() -> dict[str, Any]:
    """CPU model, core count, torch threads and GPU name (None without CUDA) of this machine."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": None,
                            "gpu": None, "platform": platform.platform(terse=True)}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # the environment record must never break a finished run
        pass
    return info


def versions() -> dict[str, str | None]:
    """Python and library versions (None for a library that is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out.get("seqnlp") is None:
        from seqnlp import __version__

        out["seqnlp"] = __version__
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Short commit of the seqnlp checkout ("-dirty" when tracked files changed); None outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if status else (head or None)


def _jsonable(obj: Any) -> Any:
    # Configs may hold Paths, tuples or dataclasses; results must be plain JSON.
    return json.loads(json.dumps(obj, default=str))


def build_result(*, benchmark: Any, version: int, task: str, split: str, scores: Sequence[Any], model: str,
                 params: int | None, train_seconds: float | None, tokens_per_second: float | None,
                 seed: int | None, config: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a validated results dict from `seqnlp.metrics.Score`s plus this machine's environment.

    `benchmark` is the benchmark name (a `Benchmark` is accepted too). Hardware, versions, git commit
    and the UTC date are filled in here.
    """
    name = getattr(benchmark, "name", benchmark)
    metrics: dict[str, dict[str, Any]] = {}
    for s in scores:
        if s.name in metrics:
            raise SeqnlpError(f"metric {s.name!r} given twice; pass each Score once")
        metrics[s.name] = {"value": float(s.value), "higher_is_better": bool(s.higher_is_better),
                           "signature": s.signature}
    result = {
        "benchmark": name,
        "version": int(version),
        "task": task,
        "split": split,
        "metrics": metrics,
        "model": model,
        "params": None if params is None else int(params),
        "train_seconds": None if train_seconds is None else float(train_seconds),
        "tokens_per_second": None if tokens_per_second is None else float(tokens_per_second),
        "hardware": hardware(),
        "versions": versions(),
        "git_commit": git_commit(),
        "seed": None if seed is None else int(seed),
        "config": _jsonable(config),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "extra": None if extra is None else _jsonable(extra),
    }
    validate_result(result)
    return result


def validate_result(result: Any, where: str = "result") -> None:
    """Check a results dict against the schema; SeqnlpError naming `where` and the offending key."""
    if not isinstance(result, dict):
        raise SeqnlpError(f"{where}: must be a JSON object, not {type(result).__name__}")
    unknown = sorted(set(result) - set(_SCHEMA))
    if unknown:
        raise SeqnlpError(f"{where}: unknown key {unknown[0]!r}; results keys are {', '.join(_SCHEMA)}")
    for key, (types, nullable) in _SCHEMA.items():
        if key not in result:
            if key == "extra":
                continue
            raise SeqnlpError(f"{where}: missing key {key!r}")
        value = result[key]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise SeqnlpError(f"{where}: {key} must be {want}, not {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SeqnlpError(f"{where}: {key} must be finite, not {value}")
        if key in ("params", "train_seconds", "tokens_per_second", "seed") and value < 0:
            raise SeqnlpError(f"{where}: {key} must be >= 0, not {value}")
    if result["version"] < 1:
        raise SeqnlpError(f"{where}: version must be >= 1, not {result['version']}")
    for key in ("benchmark", "task", "split", "model"):
        if not result[key].strip():
            raise SeqnlpError(f"{where}: {key} must not be empty")
    if not result["metrics"]:
        raise SeqnlpError(f"{where}: metrics is empty; a result needs at least one metric")
    from seqnlp.benchmark import METRIC_DIRECTIONS

    for name, m in result["metrics"].items():
        key = f"metrics.{name}"
        if not isinstance(m, dict) or set(m) != {"value", "higher_is_better", "signature"}:
            raise SeqnlpError(f"{where}: {key} must be an object with exactly: value, higher_is_better, "
                              "signature")
        v = m["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SeqnlpError(f"{where}: {key}.value must be a finite number, not {v!r}")
        if not isinstance(m["higher_is_better"], bool):
            raise SeqnlpError(f"{where}: {key}.higher_is_better must be true or false")
        if name in METRIC_DIRECTIONS and m["higher_is_better"] != METRIC_DIRECTIONS[name]:
            raise SeqnlpError(f"{where}: {key}.higher_is_better is {m['higher_is_better']}, but {name} is "
                              f"{'higher' if METRIC_DIRECTIONS[name] else 'lower'}-is-better")
        low, high = METRIC_RANGES.get(name, (None, None))
        slack = 1e-12 * max(abs(v), 1.0)  # sacreBLEU's perfect score can come out as 100.00000000000004
        if (low is not None and v < low - slack) or (high is not None and v > high + slack):
            allowed = (f"between {low:g} and {high:g}" if low is not None and high is not None
                       else f">= {low:g}" if low is not None else f"<= {high:g}")
            raise SeqnlpError(f"{where}: {key}.value must be {allowed}, not {v!r}; "
                              f"{'a percentage' if high == 100.0 else name} cannot be {v!r}")
        if m["signature"] is not None and not isinstance(m["signature"], str):
            raise SeqnlpError(f"{where}: {key}.signature must be a string or null")
    try:
        _dt.datetime.fromisoformat(result["date"])
    except ValueError:
        raise SeqnlpError(f"{where}: date {result['date']!r} is not an ISO 8601 date") from None


def _is_run_folder(folder: Path) -> bool:
    try:
        return (folder / "config.json").is_file() and (
            (folder / "trainer_state.json").is_file() or (folder / "model.safetensors").is_file())
    except OSError:
        return False


def _run_folder_of(path: Path) -> Path | None:
    """The seqnlp run folder of which `path` (resolved) is one of the run's own files, or None.

    A run folder holds config.json and trainer_state.json or model.safetensors; its own files are those of
    RUN_FILE_PATTERNS, and the weights in its checkpoint/ folder.
    """
    if any(fnmatch.fnmatchcase(path.name, p) for p in RUN_FILE_PATTERNS) and _is_run_folder(path.parent):
        return path.parent
    if path.parent.name == "checkpoint" and path.name.endswith(".safetensors") and _is_run_folder(path.parent.parent):
        return path.parent.parent
    return None


def _check_target(path: Path, label: str) -> None:
    """Refuse to write a result over a run's own file or over a file that is not a seqnlp results file."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise SeqnlpError(f"{label} {path} cannot be used ({err}); choose another path") from None
    run = _run_folder_of(resolved)
    if run is not None:
        raise SeqnlpError(f"{label} {path} is {resolved.name} of the seqnlp run folder {run}; writing the "
                          f"result there would destroy the run: give another file name such as "
                          f"{run / 'result.json'}")
    if path.is_dir():
        raise SeqnlpError(f"{label} {path} is a folder; give a file name such as {path / 'result.json'}")
    if os.path.lexists(path):
        try:
            validate_result(json.loads(read_file_bytes(path, MAX_RESULT_BYTES, "results file").decode("utf-8")),
                            str(path))
        except (SeqnlpError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise SeqnlpError(f"{label} {path} exists and is not a seqnlp results file ({err}); it is kept as "
                              "it is: choose another path, or remove the file first") from None


def check_results_path(path: str | Path | None) -> None:
    """Refuse a --results target that could not be written, before any training is spent on it.

    Refused: a folder; an unwritable folder; one of a seqnlp run folder's own files (config.json,
    tokenizer*.json, *.safetensors, trainer_state.json, log.jsonl, metrics.json, evaluation_*.json);
    an existing file that is not a valid seqnlp results file (a valid one may be replaced).
    """
    if not path:
        return
    path = Path(path)
    _check_target(path, "--results")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SeqnlpError(f"--results {path} cannot be written ({parent} is not a writable folder); choose another path")
    # Pin the commit now (git_commit is cached): a result must name the code that started the run, not
    # whatever the checkout holds when a long run ends.
    git_commit()


OUTPUTS_SUFFIX = ".outputs.json.gz"  # beside <name>.json: what the model produced on the scored split
MAX_OUTPUTS_BYTES = 256 * 1024 * 1024


def outputs_path(path: str | Path) -> Path:
    """Where the outputs of the result at `path` are kept: <name>.outputs.json.gz beside <name>.json."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".json") + OUTPUTS_SUFFIX)


def write_result(path: str | Path, result: dict[str, Any], outputs: Any = None) -> Path:
    """Validate and atomically write one result as JSON; returns the path.

    With `outputs` (the model's outputs on the scored split, `seqnlp.scoring.Evaluation.outputs`) they are
    written gzipped beside it and their sha256 recorded in `extra.outputs`, so `leaderboard verify` can score
    them again. Refuses (SeqnlpError) a path that is one of a run folder's own files, or an existing file that
    is not a valid seqnlp results file; see `check_results_path`.
    """
    import gzip
    import hashlib

    path = Path(path)
    _check_target(path, "results file")
    if outputs is not None:
        blob = gzip.compress(json.dumps(outputs, ensure_ascii=False).encode("utf-8"), mtime=0)
        result = {**result, "extra": {**(result.get("extra") or {}), "outputs": {
            "file": outputs_path(path).name, "sha256": hashlib.sha256(blob).hexdigest()}}}
        validate_result(result, str(path))
        atomic_write_bytes(outputs_path(path), blob)
    validate_result(result, str(path))
    atomic_write_json(path, result)
    return path


def read_outputs(path: str | Path, result: dict[str, Any]) -> Any:
    """The outputs stored beside the result at `path`; None when it names none; SeqnlpError when the file is
    missing or its sha256 differs from the one the result records."""
    import gzip
    import hashlib

    named = (result.get("extra") or {}).get("outputs")
    if not isinstance(named, dict) or not isinstance(named.get("sha256"), str):
        return None
    file = outputs_path(path)
    if not file.is_file():
        raise SeqnlpError(f"{file} is missing; the result names its outputs but they are not beside it")
    blob = read_file_bytes(file, MAX_OUTPUTS_BYTES, "outputs file")
    if hashlib.sha256(blob).hexdigest() != named["sha256"]:
        raise SeqnlpError(f"{file} does not match the sha256 its result records; the outputs were changed")
    try:
        return json.loads(gzip.decompress(blob).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SeqnlpError(f"{file} is not gzipped JSON ({err})") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "model"


def append_result(folder: str | Path, result: dict[str, Any], outputs: Any = None) -> Path:
    """Write `result` as a new file `folder/<benchmark>/<date>-<model>.json`, never overwriting one."""
    validate_result(result)
    stamp = result["date"].replace(":", "").replace("-", "")[:15]  # 20261122T050000
    base = Path(folder) / result["benchmark"] / f"{stamp}-{_slug(result['model'])}"
    path = base.with_suffix(".json")
    n = 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}.json")
    return write_result(path, result, outputs)


def read_result(path: str | Path) -> dict[str, Any]:
    """Read and validate one results file."""
    result = read_json(path, MAX_RESULT_BYTES)
    validate_result(result, str(path))
    return result


def iter_results(folder: str | Path, *, errors: list[tuple[Path, str]] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path, result) for every valid result under `folder` (recursively, *.json, sorted by path).

    An invalid file raises SeqnlpError, unless an `errors` list is given: then it is skipped and
    (path, message) is appended to it, so a leaderboard can say which files it left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.rglob("*.json")):
        try:
            out.append((path, read_result(path)))
        except SeqnlpError as err:
            if errors is None:
                raise
            errors.append((path, str(err)))
    return out


def read_results(folder: str | Path, *, errors: list[tuple[Path, str]] | None = None) -> list[dict[str, Any]]:
    """Every valid result under `folder` (see `iter_results` for `errors`)."""
    return [result for _, result in iter_results(folder, errors=errors)]
