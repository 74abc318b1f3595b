"""The results JSON schema: built from Scores, validated, written atomically, read back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from seqnlp.errors import SeqnlpError
from seqnlp.metrics import Score, accuracy, bleu
from seqnlp.results import append_result, build_result, read_results, validate_result, write_result


def _result(**overrides: object) -> dict:
    kwargs = dict(benchmark="sst2", version=1, task="sentiment", split="validation",
                  scores=[accuracy([0, 1, 1, 0], [0, 1, 0, 0])], model="test model", params=10,
                  train_seconds=1.5, tokens_per_second=100.0, seed=0, config={"path": Path("/x"), "k": (1, 2)})
    kwargs.update(overrides)
    return build_result(**kwargs)  # type: ignore[arg-type]


def test_build_result_fills_every_field() -> None:
    r = _result(scores=[accuracy([0, 1, 1, 0], [0, 1, 0, 0]), bleu(["a cat sat"], ["a cat sat"])])
    assert r["metrics"]["accuracy"] == {"value": 75.0, "higher_is_better": True,
                                        "signature": r["metrics"]["accuracy"]["signature"]}
    assert r["metrics"]["bleu"]["signature"].startswith("nrefs:1")  # sacrebleu's own signature
    assert r["config"] == {"path": "/x", "k": [1, 2]}  # plain JSON
    assert r["hardware"]["cpu"] and r["hardware"]["cpu_count"] >= 1
    assert r["versions"]["python"] and r["versions"]["seqnlp"] and "sacrebleu" in r["versions"]
    assert r["git_commit"] is None or isinstance(r["git_commit"], str)
    assert r["date"].endswith("+00:00")
    json.dumps(r)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.pop("model"), "missing key 'model'"),
        (lambda r: r.update(colour="red"), "unknown key 'colour'"),
        (lambda r: r.update(version="1"), "version must be int"),
        (lambda r: r.update(version=True), "version must be int"),
        (lambda r: r.update(params=-1), "params must be >= 0"),
        (lambda r: r.update(train_seconds=float("nan")), "train_seconds must be finite"),
        (lambda r: r.update(metrics={}), "metrics is empty"),
        (lambda r: r["metrics"]["accuracy"].update(value="high"), "metrics.accuracy.value"),
        (lambda r: r["metrics"]["accuracy"].update(higher_is_better=False), "higher-is-better"),
        (lambda r: r["metrics"]["accuracy"].pop("signature"), "metrics.accuracy must be an object"),
        (lambda r: r.update(date="yesterday"), "ISO 8601"),
        (lambda r: r.update(model=" "), "model must not be empty"),
    ],
)
def test_validate_rejects(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    r = copy.deepcopy(_result())
    mutate(r)
    with pytest.raises(SeqnlpError, match=match):
        validate_result(r)


def test_duplicate_scores_rejected() -> None:
    with pytest.raises(SeqnlpError, match="given twice"):
        _result(scores=[Score("accuracy", 1.0, True), Score("accuracy", 2.0, True)])


def test_write_append_and_read(tmp_path: Path) -> None:
    r = _result()
    path = write_result(tmp_path / "one.json", r)
    assert json.loads(path.read_text()) == r
    a = append_result(tmp_path / "results", r)
    b = append_result(tmp_path / "results", r)  # same date and model: a new file, never an overwrite
    assert a != b and a.parent.name == "sst2" and b.parent == a.parent
    (tmp_path / "results" / "sst2" / "broken.json").write_text("{not json")
    with pytest.raises(SeqnlpError, match="broken.json"):
        read_results(tmp_path / "results")
    errors: list = []
    assert read_results(tmp_path / "results", errors=errors) == [r, r]
    assert [p.name for p, _ in errors] == ["broken.json"]
    assert read_results(tmp_path / "absent") == []
    bad = copy.deepcopy(r)
    bad["metrics"] = {}
    with pytest.raises(SeqnlpError):
        write_result(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()
