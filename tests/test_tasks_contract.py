"""The task-layer contract, run the same way over every registered task on tiny fixture benchmarks:
train (interrupted, then resumed) → evaluate → results JSON → seqnlp.load → leaderboard run --model, with the
same numbers from every path, and no import circle anywhere in seqnlp."""

from __future__ import annotations

import ast
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import seqnlp
from seqnlp import leaderboard, scoring
from seqnlp.tasks import KINDS, runner, spec

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
COMMON = ["--progress", "off", "--no-curves", "--seed", "0", "--device", "cpu", "--precision", "fp32"]
# Small enough to train in seconds; the benchmark files are the leaderboard fixtures.
TINY: dict[str, list[str]] = {
    "sentiment": ["--benchmark", "tiny_sentiment", "--embedding-size", "16", "--hidden-size", "16", "--batch-size",
                  "8", "--max-length", "24", "--lr", "0.01", "--epochs", "4", "--time-budget", "0"],
    "generation": ["--benchmark", "tiny_text", "--layers", "1", "--hidden-size", "24", "--embedding-size", "8",
                   "--batch-size", "4", "--seq-length", "16", "--epochs", "3", "--time-budget", "0"],
    "translation": ["--benchmark", "tiny_translation", "--layers", "1", "--hidden-size", "32", "--embedding-size",
                    "16", "--tokenizer", "word", "--vocab-size", "100", "--batch-size", "8", "--lr", "0.01",
                    "--warmup", "0", "--epochs", "3", "--beam", "2", "--time-budget", "0"],
    "tagging": ["--benchmark", "tiny_tagging", "--word-dim", "16", "--char-dim", "8", "--char-channels", "8",
                "--hidden-size", "16", "--batch-size", "8", "--epochs", "3", "--time-budget", "0"],
}


def test_every_registered_task_has_a_contract_case() -> None:
    assert set(TINY) == set(KINDS)
    for name in KINDS:
        assert spec(name).name == name and spec(name).metric in (*KINDS[name].metrics, "loss")


def _interrupted_at_epoch_one(task_spec: runner.TaskSpec) -> runner.TaskSpec:
    """The same task, but Ctrl-C arrives when the second epoch's batches are asked for."""

    def prepare(run: runner.Run) -> runner.Prepared:
        prepared = task_spec.prepare(run)

        def batches(epoch: int):
            if epoch == 1 and not run.resume:
                os.kill(os.getpid(), signal.SIGINT)  # the trainer checkpoints at the next step and stops
            return prepared.train_batches(epoch)

        return replace(prepared, train_batches=batches)

    return replace(task_spec, prepare=prepare)


@pytest.fixture()
def fixture_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    monkeypatch.delenv("SEQNLP_DATA_DIR", raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(KINDS))
def test_train_resume_evaluate_load_and_leaderboard_agree(task: str, tmp_path: Path, fixture_benchmarks: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    task_spec = spec(task)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert runner.main(task_spec, [*TINY[task], *COMMON, "--output", str(whole)]) == 0
    # Interrupted: exit 130 with a checkpoint; resumed: the run ends exactly as the uninterrupted one.
    assert runner.main(_interrupted_at_epoch_one(task_spec), [*TINY[task], *COMMON, "--output", str(cut)]) == 130
    assert "interrupted: saved the checkpoint" in capsys.readouterr().err
    assert runner.main(task_spec, ["--resume", str(cut), "--results", str(tmp_path / "train.json")]) == 0
    trained = json.loads((cut / "evaluation_test.json").read_text())
    expected = json.loads((whole / "evaluation_test.json").read_text())
    metrics = KINDS[task].metrics
    assert {m: trained[m] for m in metrics} == {m: expected[m] for m in metrics}

    # evaluate writes its own results JSON with the same numbers as training's
    assert runner.main(task_spec, ["evaluate", "--model", str(cut), "--results", str(tmp_path / "eval.json"),
                                   "--output", str(tmp_path / "eval")]) == 0
    from_train = json.loads((tmp_path / "train.json").read_text())["metrics"]
    from_eval = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert from_eval == from_train and set(from_eval) == set(metrics)

    # the library: seqnlp.load gives a predictor the bring-your-own scorer takes, with the same numbers
    predictor = seqnlp.load(cut)
    direct = scoring.score(predictor, trained["benchmark"]).values()
    assert direct == {m: v["value"] for m, v in from_train.items()}

    # the leaderboard scores the run through the same path
    results = tmp_path / "results"
    assert leaderboard.main(["run", "--model", str(cut), "--results-dir", str(results)]) == 0
    (board,) = (results / trained["benchmark"]).glob("*.json")
    assert json.loads(board.read_text())["metrics"] == from_train


@pytest.mark.parametrize("task", sorted(KINDS))
def test_the_common_flags_are_the_same_everywhere(task: str, capsys: pytest.CaptureFixture[str]) -> None:
    train = runner.parser(spec(task), "train")
    flags = {o for a in train._actions for o in a.option_strings}
    assert {"--output", "--resume", "--results", "--seed", "--device", "--time-budget", "--progress", "--benchmark",
            "--dataset", "--train-split", "--eval-split"} <= flags
    assert {f"--{role}-column" for role in KINDS[task].columns} <= flags
    evaluate = {o for a in runner.parser(spec(task), "evaluate")._actions for o in a.option_strings}
    assert {"--model", "--split", "--benchmark", "--dataset", "--results", "--output", "--device"} <= evaluate
    with pytest.raises(SystemExit):
        runner.parser(spec(task), "train").parse_args(["--resume"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--resume RUN_DIR" in err and "--help" in err
    if task == "translation":  # a flag the task layer retired names what to type now
        with pytest.raises(SystemExit):
            runner.parser(spec(task), "evaluate").parse_args(["--model", "m", "--greedy-too"])
        assert "--greedy-too is gone" in capsys.readouterr().err


def _imports(package: Path) -> dict[str, set[str]]:
    """Module → the seqnlp modules it imports (at module level or inside functions)."""
    modules = {".".join(("seqnlp", *f.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): f
               for f in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            # a module importing its own package's __init__ (for a name defined there) is not a circle
            graph[m] |= {t for t in targets if t in modules and t != m and not m.startswith(t + ".")}
    return graph


@pytest.mark.parametrize("task", sorted(KINDS))
def test_help_shows_the_training_defaults_the_task_starts_from(task: str) -> None:
    actions = {a.dest: a for a in runner.parser(spec(task), "train")._actions}
    for name, value in spec(task).train_defaults.items():
        assert f"(default: {value})" in actions[name].help, name
    for action in actions.values():  # a help that explains its own default is not followed by a second one
        assert (action.help or "").count("(default") <= 1, action.dest


def test_no_import_circles_in_seqnlp() -> None:
    graph = _imports(Path(seqnlp.__file__).parent)
    seen: set[str] = set()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in done:
            return
        assert m not in seen, " -> ".join([*path[path.index(m):], m])
        seen.add(m)
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        done.add(m)

    for module in sorted(graph):
        visit(module, [])


def train_tiny(tmp_path_factory: pytest.TempPathFactory, tasks: Sequence[str]) -> dict[str, Path]:
    """task → a one-epoch run of it on its fixture benchmark (for module fixtures of other test files too)."""
    with pytest.MonkeyPatch.context() as mp:  # undone even when a run fails
        mp.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
        mp.delenv("SEQNLP_DATA_DIR", raising=False)
        runs = {}
        for task in tasks:
            runs[task] = tmp_path_factory.mktemp(task) / "run"
            argv = [*TINY[task], *COMMON, "--output", str(runs[task]), "--epochs", "1"]
            assert runner.main(spec(task), argv) == 0
    return runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory, sorted(KINDS))


@pytest.mark.parametrize("task", sorted(KINDS))
def test_precision_fp32_holds_for_every_recurrence(task: str, tiny_runs: dict[str, Path],
                                                   fixture_benchmarks: None) -> None:
    from seqnlp.encoders import RNNEncoder

    # the tiny runs trained with --precision fp32 (COMMON); an encoder's own "auto" or bf16 must not win over it
    encoders = [m for m in seqnlp.load(tiny_runs[task]).model.modules() if isinstance(m, RNNEncoder)]
    assert encoders and {e.precision for e in encoders} == {"fp32"}


@pytest.mark.parametrize("task", sorted(KINDS))
def test_a_model_with_nan_weights_is_an_error_naming_the_run_never_a_score(task: str, tiny_runs: dict[str, Path],
                                                                            fixture_benchmarks: None) -> None:
    import torch

    predictor = seqnlp.load(tiny_runs[task])
    with torch.no_grad():
        for p in predictor.model.parameters():
            p.fill_(float("nan"))
    uses = {"sentiment": lambda: predictor.predict(["a fine film"]),
            "tagging": lambda: predictor.tag(["Ana vive en Lima ."]),
            "generation": lambda: predictor.log_prob("to be"),
            "translation": lambda: predictor.translate(["a b"])}
    with pytest.raises(seqnlp.SeqnlpError, match=f"the model in {tiny_runs[task]} produced non-finite outputs"):
        uses[task]()
    if task == "generation":
        with pytest.raises(seqnlp.SeqnlpError, match="non-finite outputs"):
            predictor.generate("to", 5, seed=0)
    with pytest.raises(seqnlp.SeqnlpError, match="non-finite outputs"):
        scoring.score(predictor, {"sentiment": "tiny_sentiment", "generation": "tiny_text",
                                  "translation": "tiny_translation", "tagging": "tiny_tagging"}[task])


# ---------------------------------------------------------------------------------------------- issue 19, task side


def _rows(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_overwrite_leaves_nothing_of_the_old_run(tiny_runs: dict[str, Path], tmp_path: Path,
                                                  fixture_benchmarks: None) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["sentiment"], run)
    (run / "evaluation_validation.json").write_text("{}")  # what an earlier `evaluate --split validation` left
    (run / "confusion_validation.png").write_bytes(b"png")
    argv = [*TINY["sentiment"], *COMMON, "--output", str(run), "--overwrite", "--epochs", "1"]
    assert runner.main(spec("sentiment"), argv) == 0
    assert not (run / "evaluation_validation.json").exists() and not (run / "confusion_validation.png").exists()
    assert (run / "evaluation_test.json").exists()


def test_evaluate_reads_a_read_only_run_and_writes_elsewhere(tiny_runs: dict[str, Path], tmp_path: Path,
                                                             fixture_benchmarks: None, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "ro"
    shutil.copytree(tiny_runs["generation"], run)
    (run / "evaluation_test.json").unlink()
    real_access = os.access  # root may write anywhere, so the read-only folder is simulated
    monkeypatch.setattr(runner.os, "access", lambda p, mode: Path(p) != run and real_access(p, mode))
    assert runner.main(spec("generation"), ["evaluate", "--model", str(run)]) == 0
    assert "is not writable" in capsys.readouterr().err and not (run / "evaluation_test.json").exists()
    assert runner.main(spec("generation"), ["evaluate", "--model", str(run), "--output", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "evaluation_test.json").exists()


def test_results_never_overwrite_a_run_file(tiny_runs: dict[str, Path], fixture_benchmarks: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_runs["sentiment"]
    before = (run / "config.json").read_bytes()
    assert runner.main(spec("sentiment"), ["evaluate", "--model", str(run), "--results", str(run / "config.json")]) == 2
    assert "run" in capsys.readouterr().err and (run / "config.json").read_bytes() == before


def test_minus_one_is_a_class_in_a_plain_integer_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "three"
    words = {-1: "awful", 0: "fine", 1: "great"}
    rows = [{"text": f"{words[y]} film {i}", "label": y} for i in range(20) for y in (-1, 0, 1)]
    _rows(data, "train", rows)
    _rows(data, "test", rows[:9])
    argv = ["--dataset", str(data), "--embedding-size", "8", "--hidden-size", "8", "--epochs", "1", *COMMON,
            "--output", str(tmp_path / "run")]
    assert runner.main(spec("sentiment"), argv) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["labels"] == ["-1", "0", "1"]
    assert "label -1 is read as a class of its own" in capsys.readouterr().err


def test_integer_labels_against_class_names_say_how_they_were_read(tiny_runs: dict[str, Path], tmp_path: Path,
                                                                   fixture_benchmarks: None,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    named, data, run = tmp_path / "named", tmp_path / "ints", tmp_path / "run"
    _rows(named, "train", [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}] * 10)
    _rows(named, "test", [{"text": "good film", "label": "pos"}])
    assert runner.main(spec("sentiment"), ["--dataset", str(named), "--epochs", "1", "--embedding-size", "8",
                                           "--hidden-size", "8", *COMMON, "--output", str(run)]) == 0
    _rows(data, "test", [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}])
    assert json.loads((run / "config.json").read_text())["labels"] == ["neg", "pos"]
    assert runner.main(spec("sentiment"), ["evaluate", "--model", str(run), "--dataset", str(data)]) == 0
    assert "integer labels were read as the model's classes in its order (0 = neg, 1 = pos)" in capsys.readouterr().err


def test_mixed_label_kinds_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "mixed"
    _rows(data, "train", [{"text": "good", "label": "positive"}, {"text": "bad", "label": 1}] * 5)
    _rows(data, "test", [{"text": "good", "label": "positive"}])
    assert runner.main(spec("sentiment"), ["--dataset", str(data), *COMMON, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "int and str found" in err and "Traceback" not in err


@pytest.mark.parametrize(("task", "call", "needle"), [
    ("sentiment", lambda p: p.predict(None), "expected a list of texts, not NoneType"),
    ("sentiment", lambda p: p.predict([1, 2]), "row 0 has a int text"),
    ("generation", lambda p: p.generate(length=3.5), "length must be an integer"),
    ("generation", lambda p: p.generate(temperature=1e-45), "temperature must be between 0.01 and 100"),
    ("generation", lambda p: p.log_prob(None), "row 0 has an empty text"),
    ("translation", lambda p: p.translate(["a b"], beam=2.5), "beam size must be an integer"),
    ("translation", lambda p: p.translate(["a b"], beam=100_000_000), "beam size must be"),
    ("translation", lambda p: p.translate(None), "expected a list of source texts"),
])
def test_library_calls_with_wrong_values_name_the_argument(task: str, call, needle: str,
                                                           tiny_runs: dict[str, Path]) -> None:
    with pytest.raises(seqnlp.SeqnlpError, match=needle):
        call(seqnlp.load(tiny_runs[task]))


def test_tagging_reads_schemes_checks_rows_and_tags_raw_text(tiny_runs: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from seqnlp.spans import detect_scheme, read_tags, spans, to_iob2

    assert detect_scheme([["I-PER", "I-PER", "O", "B-PER"]]) == "IOB1"
    assert to_iob2(["I-PER", "I-PER", "B-PER"], "IOB1") == ["B-PER", "I-PER", "B-PER"]
    assert to_iob2(["S-LOC", "B-ORG", "E-ORG"], "BIOES") == ["B-LOC", "B-ORG", "I-ORG"]
    assert spans(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"]) == [("PER", 1, 3), ("LOC", 3, 4), ("ORG", 4, 5)]
    with pytest.raises(seqnlp.SeqnlpError, match="row 0: the tag column holds str"):
        read_tags(["B-PER O"], None, "x")
    with pytest.raises(seqnlp.SeqnlpError, match="row 1 has tag 'B-DATE', which the model does not know"):
        read_tags([["O"], ["B-DATE"]], None, "x", known=["O", "B-PER", "I-PER"])
    bad = tmp_path / "bad"
    for rows, needle in [([{"tokens": ["Ana", "vive"], "ner_tags": ["B-PER"]}], "2 tokens but 1 tags"),
                         ([{"tokens": [], "ner_tags": []}], "empty sentence"),
                         ([{"tokens": ["Ana"], "ner_tags": "B-PER"}], "not a list of tags"),
                         ([{"tokens": ["Ana"], "ner_tags": ["B-PERSONA-X"]}], None)]:
        _rows(bad, "train", rows * 4)
        _rows(bad, "test", rows)
        code = runner.main(spec("tagging"), ["--dataset", str(bad), *COMMON, "--output", str(tmp_path / "r")])
        err = capsys.readouterr().err
        if needle is None:  # a well-formed tag of an unusual type is fine
            continue
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    tagger = seqnlp.load(tiny_runs["tagging"])
    (row,) = tagger.tag(["Ana vive en Lima."])
    assert [t["text"] for t in row["tokens"]] == ["Ana", "vive", "en", "Lima", "."]
    for entity in row["entities"]:
        assert row["text"][entity["start"]:entity["end"]] == entity["text"] and entity["type"] in ("PER", "LOC", "ORG")
