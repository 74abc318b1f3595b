"""Every benchmark file in tasks/ loads and validates; broken files are refused naming file and key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from seqnlp.benchmark import (
    METRIC_DIRECTIONS,
    TASK_COLUMNS,
    list_benchmarks,
    load_benchmark,
    tasks_dir,
)
from seqnlp.errors import SeqnlpError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = Path(__file__).resolve().parents[1] / "tasks"
GOOD = (TASKS / "imdb.toml").read_text(encoding="utf-8")


def test_the_four_benchmarks_are_listed() -> None:
    assert tasks_dir().resolve() == TASKS
    assert {"imdb", "sst2", "tiny_shakespeare", "multi30k_de_en"} <= set(list_benchmarks())
    assert "references" not in list_benchmarks()


@pytest.mark.parametrize("name", list_benchmarks())
def test_every_benchmark_file_loads_and_is_consistent(name: str) -> None:
    b = load_benchmark(name)
    assert b.name == name and b.version >= 1
    assert set(b.columns) == set(TASK_COLUMNS[b.task])
    assert b.metric == b.metrics[0] or b.metric in b.metrics
    assert b.higher_is_better == METRIC_DIRECTIONS[b.metric]
    assert b.validation_split != b.test_split
    assert load_benchmark(TASKS / f"{name}.toml") == b  # by path, same result


def test_specific_protocols() -> None:
    sst2 = load_benchmark("sst2")
    # GLUE test labels are hidden: score the official validation split, select on a split carved from train.
    assert sst2.test_split == "validation" and sst2.validation_split is None
    assert load_benchmark("imdb").validation_split is None and load_benchmark("imdb").validation_fraction == 0.1
    ts = load_benchmark("tiny_shakespeare")
    assert (ts.metric, ts.higher_is_better, ts.test_split) == ("nats_per_char", False, "test")
    mt = load_benchmark("multi30k_de_en")
    assert mt.columns == {"source": "de", "target": "en"} and mt.metric == "bleu"


def _write(tmp_path: Path, text: str, name: str = "imdb") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('version = 1', 'version = "1"', "version"),
        ('version = 1', 'version = true', "version"),
        ('version = 1', 'version = 0', "version"),
        ('task = "sentiment"', 'task = "parsing"', "task"),
        ('higher_is_better = true', 'higher_is_better = false', "metric.higher_is_better"),
        ('primary = "accuracy"', 'primary = "bleu"', "metric.primary"),
        ('all = ["accuracy", "macro_f1"]', 'all = ["macro_f1"]', "metric.all"),
        ('all = ["accuracy", "macro_f1"]', 'all = ["accuracy", "bleu"]', "metric.all[1]"),
        ('label = "label"', 'labels = "label"', "columns.labels"),
        ('label = "label"\n', '', "columns.label"),
        ('mirror = "imdb"\n', '', "dataset.mirror"),
        ('mirror = "imdb"', 'mirror = "imdb"\nmirrors = "x"', "dataset.mirrors"),
        ('validation_fraction = 0.1', 'validation_fraction = 1.5', "dataset.validation_fraction"),
        ('validation_fraction = 0.1', 'validation_fraction = 0.1\nvalidation_unit = "phrase"',
         "dataset.validation_unit"),
        ('test_split = "test"', 'test_split = "train"', "dataset.test_split"),
        ('name = "imdb"', 'name = "other"', "name"),
        ('version = 1', 'version = 1\nlearning_rate = 0.1', "learning_rate"),
    ],
)
def test_broken_file_is_rejected_naming_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(SeqnlpError) as info:
        load_benchmark(path)
    message = str(info.value)
    assert str(path) in message and f"{key}:" in message, message


def test_invalid_toml_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(SeqnlpError, match="not valid TOML"):
        load_benchmark(_write(tmp_path, "name = ["))
    with pytest.raises(SeqnlpError, match="unknown benchmark 'nope'.*imdb"):
        load_benchmark("nope")
    with pytest.raises(SeqnlpError, match="does not exist"):
        load_benchmark(tmp_path / "missing.toml")


def test_tasks_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, GOOD)
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(tmp_path))
    assert list_benchmarks() == ["imdb"]
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(tmp_path / "absent"))
    with pytest.raises(SeqnlpError, match="SEQNLP_TASKS_DIR"):
        list_benchmarks()


def test_references_file_matches_benchmarks() -> None:
    path = TASKS / "references.toml"
    if not path.exists():
        pytest.skip("tasks/references.toml not written yet")
    from seqnlp.leaderboard import load_references

    refs = load_references(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert refs and len(refs) == sum(len(v) for v in raw.values())
    names = set(list_benchmarks())
    for ref in refs:
        assert ref["benchmark"] in names
        assert ref["metric"] in METRIC_DIRECTIONS and ref["source"] and ref["system"]
