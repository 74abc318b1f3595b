"""Sentiment task: tiny end-to-end CLI runs on a local fixture, round trips, the real SST-2 split, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import seqnlp
from seqnlp.results import read_result
from seqnlp.tasks import sentiment

FIXTURE = Path(__file__).parent / "fixtures" / "sentiment"
# A model small enough to train in about a second on one thread; the fixture is separable by its words.
TINY = ["--tokenizer", "word", "--embedding-size", "16", "--hidden-size", "16", "--batch-size", "8",
        "--max-length", "24", "--lr", "0.01", "--dropout", "0.1", "--embedding-dropout", "0.0",
        "--device", "cpu", "--progress", "off", "--no-curves", "--time-budget", "0"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster on one thread, and stay off the other helpers' core
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run on the fixture (train on train.jsonl, validation carved from it, scored on test.jsonl)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("sentiment") / "run"
    rc = sentiment.main(["--dataset", str(FIXTURE), *TINY, "--epochs", "12", "--seed", "0", "--output", str(run),
                         "--results", str(run.parent / "result.json")])
    assert rc == 0
    return run


def test_end_to_end_cli_learns_the_fixture(trained: Path) -> None:
    evaluation = json.loads((trained / "evaluation_test.json").read_text())
    assert evaluation["split"] == "test" and evaluation["n"] == 16
    assert evaluation["accuracy"] == 100.0 and evaluation["macro_f1"] == 100.0
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in log if r["type"] == "eval"]
    assert losses[-1] < 0.5 * losses[0]  # the loss falls
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "sentiment" and config["labels"] == ["negative", "positive"]
    assert config["model"]["hidden_size"] == 16 and config["source"]["dataset"] == str(FIXTURE)
    for name in ("model.safetensors", "last.safetensors", "tokenizer.json", "log.jsonl"):
        assert (trained / name).is_file(), name
    result = read_result(trained.parent / "result.json")
    assert result["benchmark"] == "sentiment" and result["split"] == "test" and result["task"] == "sentiment"
    assert result["metrics"]["accuracy"]["value"] == 100.0 and result["params"] > 0
    assert result["train_seconds"] > 0 and result["tokens_per_second"] > 0 and result["seed"] == 0


def test_save_load_predict_round_trip(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predictor = seqnlp.load(trained)  # dispatches on config.json's task
    assert isinstance(predictor, sentiment.SentimentPredictor)
    texts = ["The film was wonderful, and the cast felt superb.", "The plot was awful and the acting dull."]
    rows = predictor.predict(texts)
    assert [r["label"] for r in rows] == ["positive", "negative"] == predictor.predict_labels(texts)
    for r in rows:
        assert set(r["probabilities"]) == {"negative", "positive"}
        assert abs(sum(r["probabilities"].values()) - 1.0) < 1e-5
    again = sentiment.load(trained).probabilities(texts)
    assert torch.equal(predictor.probabilities(texts), again)  # loading twice gives identical probabilities
    # The saved best weights reproduce the score training reported on the test split.
    test = [json.loads(line) for line in (FIXTURE / "test.jsonl").read_text().splitlines()]
    labels = predictor.predict_labels([r["text"] for r in test])
    assert np.mean([a == r["label"] for a, r in zip(labels, test)]) == 1.0
    # The CLI prints the same probabilities as the library, one JSON line per text.
    capsys.readouterr()
    assert sentiment.main(["predict", "--model", str(trained), *texts]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == rows


def test_evaluate_on_the_real_sst2_validation_split(trained: Path, mirror: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The fixture's classes are named like SST-2's, so its ClassLabel ids map onto the model's classes.
    out = tmp_path / "sst2.json"
    rc = sentiment.main(["evaluate", "--model", str(trained), "--benchmark", "sst2", "--results", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sst2 validation (872 texts): accuracy" in printed
    result = read_result(out)
    assert result["benchmark"] == "sst2" and result["split"] == "validation"
    assert sum(map(sum, result["extra"]["confusion"])) == 872
    assert 0.0 <= result["metrics"]["accuracy"]["value"] <= 100.0


def test_truncation_keeps_head_and_tail() -> None:
    ids = list(range(10))
    assert sentiment.truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert sentiment.truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert sentiment.truncate(ids, 8, "head+tail") == [0, 1, 4, 5, 6, 7, 8, 9]  # a quarter from the head
    assert sentiment.truncate(ids, 20, "head+tail") == ids
    assert sentiment.clean("good<br /><br />film<BR>") == "good  film "


def test_labels_int_classlabel_and_names() -> None:
    assert sentiment.label_names(["pos", "neg", "pos"], None, "x") == ["neg", "pos"]
    assert sentiment.label_ids(["pos", "neg", None], None, ["neg", "pos"], "x").tolist() == [1, 0, -1]
    # in a plain integer column -1 is a class (issue 19); None is a row without a label
    assert sentiment.label_names([3, 1, -1, 3], None, "x") == ["-1", "1", "3"]
    assert sentiment.label_ids([3, 1, None], None, ["1", "3"], "x").tolist() == [1, 0, -1]
    assert sentiment.label_ids([1.0, 0.0], None, ["0", "1"], "x").tolist() == [1, 0]  # csv floats of ints
    # Integer ids of a dataset without names, scored with a model trained on class names.
    assert sentiment.label_ids([0, 1], None, ["negative", "positive"], "x").tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------- bad input

def _write(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    capsys.readouterr()
    assert sentiment.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


GOOD = [{"text": f"text {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(12)]


def test_missing_column_lists_the_existing_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _fails(["--dataset", str(FIXTURE), "--text-column", "review", *TINY, "--output", str(run)], capsys,
           "no column 'review'", "text, label")
    assert not run.exists()  # nothing half-written


def test_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write(data, "train", [{"text": "x", "label": 0}])
    (data / "train.jsonl").write_text("")
    _write(data, "test", GOOD[:2])
    run = tmp_path / "run"
    _fails(["--dataset", str(data), *TINY, "--output", str(run)], capsys)
    assert not run.exists()


def test_labels_must_be_integers_or_class_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write(data, "train", [{"text": f"t {i}", "label": 0.5 + i} for i in range(12)])
    _write(data, "test", [{"text": "t", "label": 0.5}])
    run = tmp_path / "run"
    _fails(["--dataset", str(data), *TINY, "--output", str(run)], capsys, "labels must be integers or class names",
           "0.5")
    assert not run.exists()


def test_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write(data, "train", [{"text": f"t {i}", "label": "pos"} for i in range(12)])
    _write(data, "test", [{"text": "t", "label": "pos"}])
    _fails(["--dataset", str(data), *TINY, "--output", str(tmp_path / "run")], capsys, "at least 2 classes")


def test_empty_text_names_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    rows = [dict(r) for r in GOOD]
    rows[5]["text"] = "   "
    _write(data, "train", rows)
    _write(data, "test", GOOD[:2])
    run = tmp_path / "run"
    _fails(["--dataset", str(data), *TINY, "--output", str(run)], capsys, "row 5 has an empty text")
    assert not run.exists()


def test_unlabeled_rows_are_left_out_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _write(data, "train", GOOD + [{"text": "no label here", "label": None}])  # (-1 is a class in a plain column)
    _write(data, "test", GOOD[:4])
    capsys.readouterr()
    assert sentiment.main(["--dataset", str(data), *TINY, "--max-steps", "2", "--output", str(tmp_path / "run")]) == 0
    assert "have no label" in capsys.readouterr().err


def test_unreadable_model_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["predict", "--model", str(tmp_path / "missing"), "hi"], capsys, "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    _fails(["predict", "--model", str(broken), "hi"], capsys, "not valid JSON")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "generation", "model": {}}))
    _fails(["evaluate", "--model", str(other)], capsys, "generation model, not a sentiment model")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"task": "sentiment", "model": {}, "labels": ["a", "b"]}))
    _fails(["predict", "--model", str(no_weights), "hi"], capsys, "tokenizer.json")


def test_existing_output_is_refused_without_overwrite(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (trained / "model.safetensors").read_bytes()
    _fails(["--dataset", str(FIXTURE), *TINY, "--output", str(trained)], capsys, "--overwrite")
    assert (trained / "model.safetensors").read_bytes() == before


def test_predict_refuses_empty_text(trained: Path) -> None:
    with pytest.raises(seqnlp.SeqnlpError, match="empty text"):
        seqnlp.load(trained).predict(["fine", ""])


@pytest.mark.parametrize("benchmark, result", [("imdb", "bilstm-word-ensemble3.json"), ("sst2", "bilstm-word-128.json")])
def test_presets_are_the_measured_runs(benchmark: str, result: str) -> None:
    """`--benchmark X` with no other flags trains exactly what the committed result measured."""
    from seqnlp.config import resolve, to_dict
    from seqnlp.trainer import TrainConfig

    path = Path(__file__).resolve().parents[1] / "results" / benchmark / result
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    measured = read_result(path)["config"]
    preset = sentiment.PRESETS[benchmark]
    # Fields added since the run (with their defaults) resolve the same on both sides.
    assert to_dict(resolve(sentiment.ModelConfig, None, preset["model"])) == \
        to_dict(resolve(sentiment.ModelConfig, None, measured["model"]))
    train = to_dict(resolve(TrainConfig, None, {**sentiment.TRAIN_DEFAULTS, **preset["train"]}))
    cosmetic = {"progress", "overwrite", "log_every", "curves"}  # output only; they do not change the numbers
    assert {k: v for k, v in train.items() if k not in cosmetic} == \
        {k: v for k, v in measured["train"].items() if k not in cosmetic}


def test_ensemble_trains_side_by_side_and_predicts_the_mean_probability(tmp_path: Path) -> None:
    run = tmp_path / "ens"
    assert sentiment.main(["--dataset", str(FIXTURE), *TINY, "--epochs", "12", "--seed", "0", "--ensemble", "2",
                           "--precision", "fp32", "--output", str(run), "--results", str(tmp_path / "r.json")]) == 0
    assert json.loads((run / "evaluation_test.json").read_text())["accuracy"] >= 87.5  # 14 of the 16 at least
    result = read_result(tmp_path / "r.json")
    assert result["model"].endswith("ensemble of 2") and result["config"]["model"]["ensemble"] == 2
    predictor = seqnlp.load(run)
    model = predictor.model
    assert isinstance(model, sentiment.Ensemble) and len(model.members) == 2
    a, b = model.members
    # --precision fp32 holds for the recurrence too (the encoders' own "auto" would measure and may pick bf16)
    assert a.encoder.precision == b.encoder.precision == "fp32"
    assert sentiment.build_classifier(model.config, 50, 2).members[0].encoder.precision == "auto"
    assert not torch.equal(a.embedding.weight, b.embedding.weight)  # members start apart
    batch = sentiment.Batches(sentiment.Split("x", ["a"], [[5, 6, 7], [8, 9]], np.array([0, 1])), [[0, 1]], 0)[0]
    with torch.no_grad():
        mean = (a(batch).logits.softmax(-1) + b(batch).logits.softmax(-1)) / 2
        assert torch.allclose(model(batch).logits.exp(), mean, atol=1e-6)
    probs = predictor.predict(["the film felt superb"])[0]["probabilities"]
    assert abs(sum(probs.values()) - 1.0) < 1e-4


def test_word_dropout_replaces_real_tokens_by_unk_in_training_only() -> None:
    from seqnlp.config import resolve
    from seqnlp.data import Batch
    from seqnlp.tokenization import PAD, UNK

    config = resolve(sentiment.ModelConfig, None, {"word_dropout": 0.5, "embedding_size": 8, "hidden_size": 8})
    model = sentiment.SentimentClassifier(config, vocab_size=50, num_classes=2, pad_id=PAD)
    seen: list[torch.Tensor] = []
    model.embedding.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    torch.manual_seed(0)
    ids = torch.randint(4, 50, (64, 20))  # (B, T) no special ids
    lengths = torch.randint(1, 21, (64,))
    ids[torch.arange(20) >= lengths.unsqueeze(1)] = PAD
    batch = Batch(ids=ids, lengths=lengths, labels=torch.zeros(64, dtype=torch.long))
    model.train()
    model(batch)
    real = ids != PAD
    changed = seen[-1] != ids
    assert torch.equal(seen[-1][changed], torch.full_like(seen[-1][changed], UNK))  # only ever to <unk>
    assert not changed[~real].any()  # padding stays padding
    assert abs(changed[real].float().mean().item() - 0.5) < 0.05
    model.eval()
    model(batch)
    assert torch.equal(seen[-1], ids)
