"""Benchmarks as data: read and validate the top-level tasks/<name>.toml files.

A benchmark file says *which* dataset, splits, columns and metrics make a benchmark, and carries a
`version` that is bumped whenever anything that changes scores changes. *How* a kind of task is
trained and scored is code, in `seqnlp/tasks/<kind>.py`. The schema is documented in tasks/README.md.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqnlp.errors import SeqnlpError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from seqnlp.tasks import KINDS

TASK_KINDS = tuple(KINDS)

# Every metric a benchmark may name, with its direction. A file that states the opposite direction
# is refused: a leaderboard sorted the wrong way is worse than none.
METRIC_DIRECTIONS: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "nats_per_char": False,
    "bits_per_char": False,
    "perplexity": False,
    "bleu": True,
    "chrf": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "token_accuracy": True,
}

# Which metrics each task kind can compute, and which columns it reads (views of seqnlp.tasks.KINDS).
TASK_METRICS: dict[str, tuple[str, ...]] = {name: k.metrics for name, k in KINDS.items()}
TASK_COLUMNS: dict[str, tuple[str, ...]] = {name: k.columns for name, k in KINDS.items()}

# Files in tasks/ that are not benchmarks.
NOT_BENCHMARKS = ("references",)

_TOP_KEYS = ("name", "version", "task", "description", "dataset", "columns", "metric")
_DATASET_REQUIRED = ("hub_id", "mirror", "train_split", "validation_split", "test_split")
_DATASET_OPTIONAL = {"validation_fraction": 0.1, "validation_seed": 0, "validation_unit": "row", "test_fraction": 0.0}
VALIDATION_UNITS = ("row", "sentence", "character")
_METRIC_KEYS = ("primary", "higher_is_better", "all")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark, as read from tasks/<name>.toml.

    validation_split is None when the validation set is carved from train with
    `seqnlp.data.carve_validation(train, validation_fraction, validation_seed)`, or, with
    validation_unit "sentence" (a train split of sentences plus their phrases, like SST's), with
    `seqnlp.data.carve_sentences`: whole sentences, and none of their own phrases left in train.
    test_split is the scored split (the one the leaderboard ranks on).
    """

    name: str
    version: int
    task: str  # sentiment | generation | translation: which seqnlp.tasks module runs it
    description: str
    hub_id: str  # Hugging Face hub id, or a local folder (relative to the TOML file) for fixtures
    mirror: str  # folder name under SEQNLP_DATA_DIR, looked at before the hub ("" for none)
    train_split: str
    validation_split: str | None
    validation_fraction: float
    validation_seed: int
    test_split: str
    columns: dict[str, str]  # role (text/label, text, source/target) → dataset column name
    metric: str  # the primary metric, the one results are ranked by
    higher_is_better: bool  # direction of the primary metric
    metrics: list[str]  # every metric reported (primary included)
    path: Path | None = field(default=None, compare=False)  # the TOML file it came from
    validation_unit: str = "row"  # what a carved part is made of: random rows, sentences, or characters
    test_fraction: float = 0.0  # with test_split "": the share of train carved off as the scored part

    def direction(self, metric: str | None = None) -> bool:
        """True when larger values of `metric` (default: the primary metric) are better."""
        return METRIC_DIRECTIONS[metric or self.metric]

    def source(self, data_dir: str | Path | None = None) -> str:
        """What to hand to `seqnlp.data.load_split`: the mirror name when its folder exists, else the hub id.

        A hub_id that starts with "." or "/" is a local folder, resolved relative to the TOML file.
        """
        root = data_dir if data_dir is not None else os.environ.get("SEQNLP_DATA_DIR")
        if self.mirror and root and (Path(root) / self.mirror).is_dir():
            return self.mirror
        if self.hub_id.startswith((".", "/")):
            base = self.path.parent if self.path is not None else Path.cwd()
            return str((base / self.hub_id).resolve())
        return self.hub_id

    def split_name(self, role: str = "test") -> str:
        """The dataset split behind a role, as recorded in results (a carved part is spelled out)."""
        if role == "test":
            return self.test_split or f"{self.train_split}[carved test {self.test_fraction:g}]"
        if role == "validation" and self.validation_split is None:
            return (f"{self.train_split}[carved validation {self.validation_fraction:g}, "
                    f"seed {self.validation_seed}]")
        return self.validation_split if role == "validation" else self.train_split  # type: ignore[return-value]

    def load_split(self, role: str, *, data_dir: str | Path | None = None) -> Any:
        """Load one split by role: "train", "validation" or "test" (either carved from train when so declared).

        "train" is the training split minus the carved parts. A carved test part (test_split "", for a dataset
        that ships none) is cut first, then validation from what is left. Returns a `datasets.Dataset`.
        """
        from seqnlp import data

        if role not in ("train", "validation", "test"):
            raise SeqnlpError(f"split role must be train, validation or test, not {role!r}")
        src = self.source(data_dir)
        kwargs = {"data_dir": data_dir} if data_dir is not None else {}
        if role == "test" and self.test_split:
            return data.load_split(src, self.test_split, **kwargs)
        if role == "validation" and self.validation_split is not None:
            return data.load_split(src, self.validation_split, **kwargs)
        train = data.load_split(src, self.train_split, **kwargs)
        if not self.test_split:
            train, test = self._carve(train, self.test_fraction)
            if role == "test":
                return test
        if self.validation_split is None:
            share = self.validation_fraction / (1 - (0.0 if self.test_split else self.test_fraction))
            train, validation = self._carve(train, share)
            return validation if role == "validation" else train
        return train

    def _carve(self, train: Any, fraction: float) -> tuple[Any, Any]:
        from seqnlp import data

        if self.validation_unit == "sentence":
            return data.carve_sentences(train, self.columns["text"], fraction, self.validation_seed)
        if self.validation_unit == "character":  # the end of one long text (a book), cut by characters
            column = self.columns["text"]
            head, tail = data.carve_characters([t for t in train[column] if t], fraction)
            return data.dataset_of({column: head}), data.dataset_of({column: tail})
        return data.carve_validation(train, fraction, self.validation_seed)


def tasks_dir() -> Path:
    """The folder of benchmark files: $SEQNLP_TASKS_DIR, else tasks/ beside the package (a checkout)."""
    env = os.environ.get("SEQNLP_TASKS_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise SeqnlpError(f"SEQNLP_TASKS_DIR={env} is not a folder; "
                              "point it at a folder of benchmark .toml files")
        return path
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "tasks", here / "benchmarks"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise SeqnlpError(
        f"no benchmark files found: tasks/ is not beside the seqnlp package ({here.parent}); "
        "run from a seqnlp checkout (pip install -e .), set SEQNLP_TASKS_DIR to its tasks/ folder, "
        "or pass the path of a .toml file"
    )


def list_benchmarks() -> list[str]:
    """Names of the benchmarks in tasks/ (sorted), e.g. ["imdb", "multi30k_de_en", "sst2", ...]."""
    return sorted(p.stem for p in tasks_dir().glob("*.toml") if p.stem not in NOT_BENCHMARKS)


def benchmark_path(name_or_path: str | Path) -> Path:
    """The TOML file for a benchmark name, or the given path when it names a file."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise SeqnlpError(f"benchmark file {path} does not exist")
        return path
    if not _NAME_RE.match(text) or text in NOT_BENCHMARKS:
        raise SeqnlpError(f"{text!r} is not a benchmark name; choose one of: {', '.join(list_benchmarks())}")
    path = tasks_dir() / f"{text}.toml"
    if not path.is_file():
        raise SeqnlpError(f"unknown benchmark {text!r}; choose one of: {', '.join(list_benchmarks())}")
    return path


def load_benchmark(name_or_path: str | Path) -> Benchmark:
    """Read and validate a benchmark by name (tasks/<name>.toml) or path; SeqnlpError names file and key."""
    path = benchmark_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SeqnlpError(f"{path}: not valid TOML ({err}); fix the file") from None
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror}") from None
    return parse_benchmark(raw, path)


def _fail(path: Path | None, key: str, problem: str) -> SeqnlpError:
    return SeqnlpError(f"{path or '<benchmark>'}: {key}: {problem}")


def _keys(table: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...], where: str,
          path: Path | None) -> None:
    prefix = f"{where}." if where else ""
    unknown = sorted(set(table) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(required + optional)
        raise _fail(path, prefix + unknown[0],
                    f"unknown key (allowed: {allowed}); remove it or fix the spelling")
    missing = [k for k in required if k not in table]
    if missing:
        raise _fail(path, prefix + missing[0], "missing key; add it (see tasks/README.md)")


def _typed(value: Any, typ: type, key: str, path: Path | None) -> Any:
    # bool is an int in Python; a version of `true` is a mistake, not 1.
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise _fail(path, key, f"must be a {typ.__name__}, not {type(value).__name__} {value!r}")
    return value


def parse_benchmark(raw: dict[str, Any], path: Path | None = None) -> Benchmark:
    """Validate a parsed benchmark table and build the Benchmark (SeqnlpError naming file and key)."""
    _keys(raw, _TOP_KEYS, (), "", path)
    name = _typed(raw["name"], str, "name", path)
    if not _NAME_RE.match(name):
        raise _fail(path, "name", f"{name!r} must be lowercase letters, digits and underscores")
    if path is not None and path.stem != name:
        raise _fail(path, "name", f"{name!r} differs from the file name {path.stem!r}; make them equal")
    version = _typed(raw["version"], int, "version", path)
    if version < 1:
        raise _fail(path, "version", f"must be >= 1, not {version}")
    task = _typed(raw["task"], str, "task", path)
    if task not in TASK_KINDS:
        raise _fail(path, "task", f"unknown task kind {task!r}; choose one of: {', '.join(TASK_KINDS)}")
    description = _typed(raw["description"], str, "description", path)

    ds = _typed(raw["dataset"], dict, "dataset", path)
    _keys(ds, _DATASET_REQUIRED, tuple(_DATASET_OPTIONAL), "dataset", path)
    strings = {k: _typed(ds[k], str, f"dataset.{k}", path) for k in _DATASET_REQUIRED}
    test_fraction = _typed(ds.get("test_fraction", _DATASET_OPTIONAL["test_fraction"]), float,
                           "dataset.test_fraction", path)
    if not 0.0 <= test_fraction < 1.0:
        raise _fail(path, "dataset.test_fraction", f"must be in [0, 1), not {test_fraction}")
    if test_fraction and strings["test_split"]:
        raise _fail(path, "dataset.test_fraction", "carves the scored part from train: set test_split = \"\" too")
    for k in ("hub_id", "train_split", "test_split"):
        if not strings[k] and not (k == "test_split" and test_fraction):
            raise _fail(path, f"dataset.{k}", "must not be empty (or carve the scored part with test_fraction)"
                        if k == "test_split" else "must not be empty")
    fraction = _typed(ds.get("validation_fraction", _DATASET_OPTIONAL["validation_fraction"]), float,
                      "dataset.validation_fraction", path)
    if not 0.0 < fraction < 1.0:
        raise _fail(path, "dataset.validation_fraction",
                    f"must be between 0 and 1 (exclusive), not {fraction}")
    seed = _typed(ds.get("validation_seed", _DATASET_OPTIONAL["validation_seed"]), int,
                  "dataset.validation_seed", path)
    if seed < 0:
        raise _fail(path, "dataset.validation_seed", f"must be >= 0, not {seed}")
    unit = _typed(ds.get("validation_unit", _DATASET_OPTIONAL["validation_unit"]), str,
                  "dataset.validation_unit", path)
    if unit not in VALIDATION_UNITS:
        raise _fail(path, "dataset.validation_unit", f"must be one of {', '.join(VALIDATION_UNITS)}, not {unit!r}")
    validation = strings["validation_split"] or None
    if unit == "sentence" and "text" not in TASK_COLUMNS[task]:
        raise _fail(path, "dataset.validation_unit", f"\"sentence\" needs a text column; {task} has none")
    if validation is not None and validation == strings["test_split"]:
        raise _fail(path, "dataset.validation_split", "equals test_split; the scored split must not be used "
                    "for model selection (use \"\" to carve validation from train)")
    if strings["train_split"] == strings["test_split"]:
        raise _fail(path, "dataset.test_split", "equals train_split; score on a held-out split")

    cols = _typed(raw["columns"], dict, "columns", path)
    _keys(cols, TASK_COLUMNS[task], (), "columns", path)
    columns = {k: _typed(cols[k], str, f"columns.{k}", path) for k in TASK_COLUMNS[task]}
    for k, v in columns.items():
        if not v:
            raise _fail(path, f"columns.{k}", "must not be empty")

    met = _typed(raw["metric"], dict, "metric", path)
    _keys(met, _METRIC_KEYS, (), "metric", path)
    primary = _typed(met["primary"], str, "metric.primary", path)
    higher = _typed(met["higher_is_better"], bool, "metric.higher_is_better", path)
    names = _typed(met["all"], list, "metric.all", path)
    for i, m in enumerate(names):
        _typed(m, str, f"metric.all[{i}]", path)
        if m not in TASK_METRICS[task]:
            raise _fail(path, f"metric.all[{i}]", f"{m!r} is not a {task} metric; choose from "
                        f"{', '.join(TASK_METRICS[task])}")
    if len(set(names)) != len(names):
        raise _fail(path, "metric.all", "lists a metric twice")
    if primary not in TASK_METRICS[task]:
        raise _fail(path, "metric.primary", f"{primary!r} is not a {task} metric; choose from "
                    f"{', '.join(TASK_METRICS[task])}")
    if primary not in names:
        raise _fail(path, "metric.all", f"must include the primary metric {primary!r}")
    if higher != METRIC_DIRECTIONS[primary]:
        right = METRIC_DIRECTIONS[primary]
        raise _fail(path, "metric.higher_is_better", f"{primary} is {'higher' if right else 'lower'}-is-better; "
                    f"set higher_is_better = {str(right).lower()}")

    return Benchmark(
        name=name, version=version, task=task, description=description,
        hub_id=strings["hub_id"], mirror=strings["mirror"], train_split=strings["train_split"],
        validation_split=validation, validation_fraction=fraction, validation_seed=seed,
        test_split=strings["test_split"], columns=columns, metric=primary, higher_is_better=higher,
        metrics=list(names), path=path.resolve() if path is not None else None, validation_unit=unit,
        test_fraction=test_fraction,
    )
