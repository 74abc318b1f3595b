"""Leaderboard: bring-your-own-model scoring, ranking by direction, run/show end to end on fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest

from seqnlp import leaderboard, scoring
from seqnlp.tasks import runner
from seqnlp.benchmark import load_benchmark
from seqnlp.errors import SeqnlpError
from seqnlp.leaderboard import evaluate, load_references, main, rank, render_markdown
from seqnlp.metrics import Score
from seqnlp.results import append_result, build_result, write_result

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "leaderboard"


@pytest.fixture
def fixture_tasks(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the benchmark loader at the fixture benchmarks (tiny_sentiment, tiny_text, tiny_translation)."""
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    monkeypatch.delenv("SEQNLP_DATA_DIR", raising=False)
    return FIXTURES


class KeywordModel:
    """A bring-your-own sentiment model trained nowhere: positive words → 1."""

    def predict(self, texts: list[str]) -> list[int]:
        return [int(any(w in t for w in ("good", "great", "excellent", "wonderful", "lovely"))) for t in texts]


class AlwaysPositive:
    def predict(self, texts: list[str]) -> list[str]:
        return ["1"] * len(texts)


class Uniform4:
    """Every character has probability 1/4."""

    def log_prob(self, text: str) -> float:
        return -len(text) * math.log(4)


class Identity:
    def translate(self, texts: list[str]) -> list[str]:
        return list(texts)

    def target_nll(self, sources: list[str], targets: list[str]) -> tuple[float, int]:
        n = sum(len(t.split()) for t in targets)
        return n * math.log(2), n


def test_byo_sentiment_scored_with_the_metric_code(fixture_tasks: Path) -> None:
    scores = evaluate(KeywordModel(), "tiny_sentiment")
    assert {k: s.value for k, s in scores.items()} == {"accuracy": 100.0, "macro_f1": 100.0}
    assert all(isinstance(s, Score) and s.higher_is_better for s in scores.values())
    assert "n:10" in scores["accuracy"].signature
    assert evaluate(KeywordModel(), "tiny_sentiment", limit=3)["accuracy"].signature.count("n:3") == 1
    # validation is carved from train: 10% of 40 rows
    assert "n:4|" in evaluate(KeywordModel(), "tiny_sentiment", split="validation")["accuracy"].signature


def test_byo_sentiment_label_names_and_constant_predictor() -> None:
    bench = load_benchmark(FIXTURES / "tiny_sentiment.toml")
    ds = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c", "d"], "label": [0, 1, 1, 0]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))

    class Names:
        def predict(self, texts: list[str]) -> list[str]:
            return ["pos"] * len(texts)

    scores = {s.name: s.value for s in _score_sentiment(Names(), ds, bench)}
    # constant "pos": accuracy 50; F1(pos) = 2/3, F1(neg) = 0 → macro 33.33
    assert scores["accuracy"] == 50.0 and scores["macro_f1"] == pytest.approx(100 / 3)
    class Dicts:  # the shape of seqnlp's own SentimentPredictor.predict
        def predict(self, texts: list[str]) -> list[dict]:
            return [{"text": t, "label": "neg" if t in "ad" else "pos"} for t in texts]

    assert {s.name: s.value for s in _score_sentiment(Dicts(), ds, bench)}["accuracy"] == 100.0
    with pytest.raises(SeqnlpError, match="'1', which is not one of"):
        _score_sentiment(AlwaysPositive(), ds, bench)


def test_byo_generation_and_translation(fixture_tasks: Path) -> None:
    gen = evaluate(Uniform4(), "tiny_text")
    assert gen["nats_per_char"].value == pytest.approx(math.log(4))
    assert gen["bits_per_char"].value == pytest.approx(2.0)
    assert gen["perplexity"].value == pytest.approx(4.0)
    assert not gen["nats_per_char"].higher_is_better
    tr = evaluate(Identity(), "tiny_translation")
    assert tr["bleu"].value == pytest.approx(100.0) and tr["chrf"].value == pytest.approx(100.0)
    assert tr["perplexity"].value == pytest.approx(2.0)
    assert tr["bleu"].signature.startswith("nrefs:1")


def test_byo_protocol_errors(fixture_tasks: Path) -> None:
    with pytest.raises(SeqnlpError, match="no predict"):
        evaluate(Identity(), "tiny_sentiment")

    class Short:
        def predict(self, texts: list[str]) -> list[int]:
            return [0]

    with pytest.raises(SeqnlpError, match="returned 1 labels for 10"):
        evaluate(Short(), "tiny_sentiment")

    class Positive:
        def log_prob(self, text: str) -> float:
            return 1.0

    with pytest.raises(SeqnlpError, match="<= 0"):
        evaluate(Positive(), "tiny_text")
    with pytest.raises(SeqnlpError, match="split must be one of"):
        evaluate(KeywordModel(), "tiny_sentiment", split="dev")


def _result(bench: str, value: float, *, version: int = 1, split: str = "test", model: str = "m",
            metric: str = "nats_per_char", higher: bool = False, seed: int | None = 0) -> dict:
    return build_result(benchmark=bench, version=version, task="generation", split=split,
                        scores=[Score(metric, value, higher)], model=model, params=None, train_seconds=None,
                        tokens_per_second=None, seed=seed, config={})


def test_ranking_respects_direction_version_and_split(fixture_tasks: Path) -> None:
    lower = load_benchmark("tiny_text")  # nats_per_char, lower is better, version 2
    entries = [(Path(f"{i}.json"), _result("tiny_text", v, version=2, model=f"m{i}"))
               for i, v in enumerate([1.5, 0.9, 1.2, 0.9])]
    entries.append((Path("old.json"), _result("tiny_text", 0.1, version=1)))
    entries.append((Path("val.json"), _result("tiny_text", 0.2, version=2, split="validation")))
    ranked, skipped = rank(entries, lower)
    assert [(rk, r["metrics"]["nats_per_char"]["value"]) for rk, _, r in ranked] == [
        (1, 0.9), (1, 0.9), (3, 1.2), (4, 1.5)]
    assert [p.name for p, _ in skipped] == ["old.json", "val.json"]
    assert "stale" in skipped[0][1] and "scored split" in skipped[1][1]

    higher = load_benchmark("tiny_translation")  # bleu, higher is better
    entries = [(Path(f"{i}.json"), _result("tiny_translation", v, metric="bleu", higher=True))
               for i, v in enumerate([10.0, 30.0, 20.0])]
    assert [r["metrics"]["bleu"]["value"] for _, _, r in rank(entries, higher)[0]] == [30.0, 20.0, 10.0]


def test_ranking_a_benchmark_whose_test_part_is_carved(tmp_path: Path, fixture_tasks: Path) -> None:
    toml = (FIXTURES / "tiny_text.toml").read_text().replace('test_split = "test"', 'test_split = ""\ntest_fraction = 0.1')
    (tmp_path / "tiny_text.toml").write_text(toml.replace("./tiny_text", str(FIXTURES / "tiny_text")))
    carved = load_benchmark(tmp_path / "tiny_text.toml")
    assert carved.split_name() == "train[carved test 0.1]"
    entries = [(Path("a.json"), _result("tiny_text", 0.9, version=2, split="train[carved test 0.1]")),
               (Path("b.json"), _result("tiny_text", 0.8, version=2, split="test"))]
    ranked, skipped = rank(entries, carved)
    assert [p.name for _, p, _ in ranked] == ["a.json"]
    assert skipped == [(Path("b.json"), "split 'test' is not the scored split 'train[carved test 0.1]'")]


def test_references_file_is_validated(tmp_path: Path, fixture_tasks: Path) -> None:
    refs = load_references()
    assert refs == [{"benchmark": "tiny_text", "system": "a published model", "metric": "nats_per_char",
                     "value": 0.5, "notes": "measured on another split", "source": "somewhere, Table 1",
                     "params": None}]
    bad = tmp_path / "references.toml"
    bad.write_text('[[x]]\nsystem = "s"\nmetric = "accuracy"\nvalue = 1\nnotes = ""\n')
    with pytest.raises(SeqnlpError, match=r"x\[0\]\.source: missing"):
        load_references(bad)


def test_run_baselines_and_show_end_to_end(tmp_path: Path, fixture_tasks: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    assert main(["run", "--baselines", "--results-dir", str(results)]) == 0
    files = sorted(p.relative_to(results).parts[0] for p in results.rglob("*.json"))
    assert files == ["tiny_sentiment", "tiny_tagging", "tiny_text", "tiny_translation"]
    # a stale result (older benchmark version) and a corrupt file are listed, not ranked
    append_result(results, _result("tiny_text", 0.01, version=1, model="old model"))
    (results / "tiny_text" / "corrupt.json").write_text("{")
    capsys.readouterr()
    assert main(["show", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "### tiny_sentiment: accuracy ↑ on `test` (benchmark version 1)" in out
    assert "| 1 | baseline: tf-idf + logreg | 100.00 | 100.00 |" in out
    assert "| 1 | baseline: copy source | 100.00 | 100.00 | – |" in out
    assert "| ref | a published model | nats_per_char ↓ | 0.5000 |" in out
    assert "stale: benchmark version 1, current is 2" in out
    assert "corrupt.json" in out and "| old model |" not in out
    assert render_markdown(results) == out  # the command prints exactly the rendered tables
    # runs of one model that differ only in their seed are told apart by the seed column
    for seed, value in ((1, 0.31), (2, 0.32), (None, 0.33)):
        append_result(results, _result("tiny_text", value, version=2, model="seeded", seed=seed))
    lines = render_markdown(results, benchmarks=["tiny_text"], references=False).splitlines()
    head = next(line for line in lines if line.startswith("| rank |")).split(" | ")
    seeds = [line.split(" | ")[head.index("seed")] for line in lines if "| seeded |" in line]
    assert seeds == ["1", "2", "–"]
    target = tmp_path / "board.md"
    assert main(["show", "--results-dir", str(results), "--output", str(target), "tiny_text"]) == 0
    assert target.read_text().startswith("### tiny_text")
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n<!-- leaderboard:start -->\nold table\n<!-- leaderboard:end -->\n\nafter\n")
    assert main(["show", "--results-dir", str(results), "--update", str(readme), "tiny_text"]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.endswith("<!-- leaderboard:end -->\n\nafter\n")
    assert target.read_text() in text
    readme.write_text("no markers")
    assert main(["show", "--results-dir", str(results), "--update", str(readme)]) == 2
    # finding R19: a mistyped --results-dir is an error, not an empty leaderboard
    capsys.readouterr()
    assert main(["show", "--results-dir", str(tmp_path / "resluts")]) == 2
    err = capsys.readouterr().err
    assert "resluts is not a folder" in err and len(err.strip().splitlines()) == 1


def _score_sentiment(model: object, ds: datasets.Dataset, bench: object) -> list[Score]:
    return scoring.classification(model, {"text": ds["text"], "label": ds["label"]}, dict(ds.features), bench)[0]


def _fake_task(calls: list[list[str]]):
    def fake_main(spec: object, argv: list[str]) -> int:
        calls.append(list(argv))
        result = build_result(benchmark="tiny_sentiment", version=1, task="sentiment", split="test",
                              scores=[Score("accuracy", 88.0, True)], model="fake rnn", params=1000,
                              train_seconds=60.0, tokens_per_second=1e4, seed=0, config={"argv": argv})
        write_result(argv[argv.index("--results") + 1], result)
        return 0

    return fake_main


def test_run_model_and_train_call_the_task_module(tmp_path: Path, fixture_tasks: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(runner, "main", _fake_task(calls))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"task": "sentiment", "data": {"benchmark": "tiny_sentiment"}}))
    results = tmp_path / "results"
    assert main(["run", "--model", str(run_dir), "--results-dir", str(results)]) == 0
    assert calls[0][:5] == ["evaluate", "--model", str(run_dir), "--benchmark", "tiny_sentiment"]
    assert main(["run", "tiny_sentiment", "--time-budget", "2.5", "--results-dir", str(results),
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    argv = calls[1]
    assert argv[:3] == ["train", "--benchmark", "tiny_sentiment"]
    assert argv[argv.index("--time-budget") + 1] == "2.5"
    assert Path(argv[argv.index("--output") + 1]).parent == tmp_path / "runs"
    assert len(list((results / "tiny_sentiment").glob("*.json"))) == 2
    # a run of another task kind is refused before anything runs
    (run_dir / "config.json").write_text(json.dumps({"task": "translation"}))
    assert main(["run", "tiny_sentiment", "--model", str(run_dir), "--results-dir", str(results)]) == 2


def test_cli_errors(fixture_tasks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--baselines"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["run", "--time-budget", "0"]) == 2
    assert main(["list"]) == 0
    assert "tiny_text\tv2\tgeneration\tnats_per_char ↓ on test" in capsys.readouterr().out


def test_verify_recomputes_stored_outputs_and_flags_tampering(tmp_path: Path, fixture_tasks: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    assert main(["run", "--baselines", "tiny_sentiment", "tiny_text", "tiny_translation",
                 "--results-dir", str(results)]) == 0
    files = sorted(results.rglob("*.json"))
    assert len(files) == 3 and all(leaderboard.verify_result(f)[0] == "verified" for f in files)
    assert main(["verify", "--results-dir", str(results)]) == 0
    assert "3 verified" in capsys.readouterr().out
    # a hand-edited number: the stored outputs no longer give it
    sentiment_file = next(f for f in files if "tiny_sentiment" in str(f))
    edited = json.loads(sentiment_file.read_text())
    edited["metrics"]["accuracy"]["value"] = 99.0
    sentiment_file.write_text(json.dumps(edited))
    status, message = leaderboard.verify_result(sentiment_file)
    assert status == "mismatch" and "accuracy 99.0 (recomputed 100.0)" in message
    # edited outputs: their sha256 no longer matches the one the result records
    text_file = next(f for f in files if "tiny_text" in str(f))
    outputs = text_file.with_name(text_file.name.removesuffix(".json") + ".outputs.json.gz")
    blob = outputs.read_bytes()
    outputs.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    assert leaderboard.verify_result(text_file) == ("mismatch", f"{outputs} does not match the sha256 its result "
                                                    "records; the outputs were changed")
    # a result without outputs is flagged too, and shown as such in the table
    plain = build_result(benchmark="tiny_translation", version=1, task="translation", split="test",
                         scores=[Score("bleu", 50.0, True)], model="no outputs", params=None, train_seconds=None,
                         tokens_per_second=None, seed=0, config={})
    write_result(results / "tiny_translation" / "plain.json", plain)
    assert leaderboard.verify_result(results / "tiny_translation" / "plain.json")[0] == "no outputs"
    assert main(["verify", "--results-dir", str(results)]) == 1
    out = capsys.readouterr().out
    assert "2 mismatch" in out and "1 no outputs" in out and "1 verified" in out
    table = render_markdown(results, references=False)
    assert "| ✗ MISMATCH |" in table and "| no outputs |" in table and "| ✓ |" in table
    # an impossible number is refused when read, so it is never ranked
    edited["metrics"]["accuracy"]["value"] = 150.0
    sentiment_file.write_text(json.dumps(edited))
    assert "between 0 and 100" in leaderboard.verify_result(sentiment_file)[1]
    assert "150" not in render_markdown(results, references=False).split("Skipped result files")[0]
