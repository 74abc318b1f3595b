"""Transfer between tasks (issue 17): word and subword language models, a classifier started from one
(--init-from), its fine-tuning schedule (discriminative learning rates, gradual unfreezing) and the one-command
chain (--recipe pretrained), on the tiny fixture benchmarks."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import seqnlp
from seqnlp import scoring
from seqnlp.benchmark import parse_benchmark
from seqnlp.checkpoint import read_model_weights
from seqnlp.data import Batch
from seqnlp.errors import SeqnlpError
from seqnlp.tasks import runner, spec
from seqnlp.trainer import TrainConfig, Trainer

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
COMMON = ["--progress", "off", "--no-curves", "--seed", "0", "--device", "cpu", "--precision", "fp32"]
LM = ["--benchmark", "tiny_text", "--layers", "1", "--hidden-size", "24", "--embedding-size", "8", "--batch-size", "4",
      "--seq-length", "8", "--epochs", "2", "--time-budget", "0", "--vocab-size", "300", "--min-frequency", "1"]
CLASSIFIER = ["--benchmark", "tiny_sentiment", "--batch-size", "8", "--max-length", "24", "--lr", "0.01", "--epochs",
              "2", "--time-budget", "0"]


@pytest.fixture(scope="module")
def fixtures() -> None:  # type: ignore[misc]
    mp = pytest.MonkeyPatch()
    mp.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    mp.delenv("SEQNLP_DATA_DIR", raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory, fixtures: None) -> dict[str, Path]:
    runs = {}
    for level in ("word", "bpe"):
        runs[level] = tmp_path_factory.mktemp(level) / "lm"
        assert runner.main(spec("generation"), [*LM, *COMMON, "--level", level, "--output", str(runs[level])]) == 0
    return runs


@pytest.fixture(scope="module")
def backward(lms: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backward bpe language model trained with the forward one's flags (the same tokenizer)."""
    run = tmp_path_factory.mktemp("backward") / "lm"
    assert runner.main(spec("generation"), [*LM, *COMMON, "--level", "bpe", "--reverse", "--output", str(run)]) == 0
    return run


def test_a_backward_language_model_learns_the_text_from_its_end_and_writes_what_leads_up_to_a_prime(
        lms: dict[str, Path], backward: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqnlp.tasks.generation import split_nll

    lm, forward = seqnlp.load(backward), seqnlp.load(lms["bpe"])
    assert lm.model.config.reverse and lm.reverse and not forward.reverse
    text = "to be or not to be. " * 4  # the training text
    ids = lm.tokenizer.encode(text)
    nats = lm.nll([text])[0]
    read_back, read_on = (split_nll(m.model, [r], m.tokenizer.bos_id, m.device)[0]
                          for m, r in ((lm, ids[::-1]), (lm, ids)))
    assert nats == pytest.approx(read_back)
    # trained on the text read backwards, it predicts it better that way; the forward model the other way round
    assert read_back < 0.9 * read_on
    assert forward.nll([text])[0] < split_nll(forward.model, [ids[::-1]], forward.tokenizer.bos_id, forward.device)[0]
    written = lm.generate("or not", 6, seed=1)
    assert written.endswith("or not") and len(written) > len("or not") and written == lm.generate("or not", 6, seed=1)
    with pytest.raises(SeqnlpError, match="backward language model"):  # at the call, before anything is drawn
        lm.stream("or not", 6)
    capsys.readouterr()
    argv = ["generate", "--model", str(backward), "--prime", "or not", "--length", "6", "--seed", "1"]
    assert runner.main(spec("generation"), argv) == 0
    assert capsys.readouterr().out == written + "\n"  # the command shows it in reading order too
    assert spec("generation").describe(runner.settings_of(
        spec("generation"), runner.read_config(backward)[1], "config")).endswith(", backward")


@pytest.mark.parametrize("level", ["word", "bpe"])
def test_a_word_or_bpe_language_model_trains_saves_loads_and_scores(level: str, lms: dict[str, Path]) -> None:
    run = lms[level]
    config = json.loads((run / "config.json").read_text())
    assert config["tokens"]["level"] == level and config["tokens"]["softmax"] == "auto"
    lm = seqnlp.load(run)
    assert lm.tokenizer.level == level and lm.model.adaptive
    trained = json.loads((run / "evaluation_test.json").read_text())
    evaluation = scoring.score(lm, "tiny_text")
    # the same numbers from the saved run as at the end of training, per character and per token
    assert evaluation.values() == {m: trained[m] for m in ("nats_per_char", "bits_per_char", "perplexity")}
    tokens = evaluation.details["tokens"]
    assert 0 < tokens < evaluation.details["n"]  # fewer tokens than characters
    assert evaluation.details["token_perplexity"] == pytest.approx(math.exp(evaluation.details["nll"] / tokens))
    # fitting the repeated sentence: far below a uniform guess over the vocabulary, per token
    assert evaluation.details["token_perplexity"] < lm.tokenizer.vocab_size / 2
    assert trained["git_commit"] == seqnlp.results.git_commit() and trained["train_seconds"] > 0
    text = lm.generate("to be", 12, seed=1)
    assert text.startswith("to be") and len(text) > len("to be") and text == lm.generate("to be", 12, seed=1)
    assert lm.log_prob("to be or not") < 0


@pytest.mark.parametrize("level", ["word", "bpe"])
def test_a_word_or_bpe_model_reads_html_line_breaks_as_the_classifier_does(level: str, lms: dict[str, Path]) -> None:
    lm = seqnlp.load(lms[level])
    assert lm.log_prob("to be<br /><br />or not<BR>") == lm.log_prob("to be  or not ")
    # the scoring protocol divides by the characters of the text as given, which the scorer checks against the split
    nats, chars, _ = lm.nll(["to be<br />or"])
    assert nats == lm.nll(["to be or"])[0] and chars == len("to be<br />or")

def test_a_run_whose_final_scoring_failed_is_scored_again_by_evaluate_and_still_starts_a_classifier(
        lms: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    lm = tmp_path / "lm"
    shutil.copytree(lms["bpe"], lm)
    kept = json.loads((lm / "evaluation_test.json").read_text())
    (lm / "evaluation_test.json").unlink()  # as if the scoring after training had crashed
    results = tmp_path / "lm.json"
    assert runner.main(spec("generation"), ["evaluate", "--model", str(lm), "--results", str(results)]) == 0
    again = json.loads((lm / "evaluation_test.json").read_text())
    metrics = json.loads((lm / "metrics.json").read_text())
    assert again["nats_per_char"] == kept["nats_per_char"] and again["best_step"] == kept["best_step"]
    assert again["train_seconds"] == metrics["train_seconds"] and "git_commit" not in again  # not known any more
    written = json.loads(results.read_text())
    assert written["train_seconds"] == metrics["train_seconds"] and written["tokens_per_second"] > 0
    out = tmp_path / "clf"
    assert runner.main(spec("sentiment"), [*CLASSIFIER, *COMMON, "--init-from", str(lm), "--output", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["init_from"]
    assert record["train_seconds"] == metrics["train_seconds"] and record["scores"]["nats_per_char"] == kept[
        "nats_per_char"]

def test_the_char_model_stays_the_default(lms: dict[str, Path], tmp_path: Path) -> None:
    argv = [*LM[:-4], *COMMON, "--output", str(tmp_path / "char"), "--max-steps", "2"]
    assert runner.main(spec("generation"), argv) == 0
    lm = seqnlp.load(tmp_path / "char")
    assert lm.tokenizer.level == "char" and not lm.model.adaptive and isinstance(lm.model.head, torch.nn.Linear)
    assert len(lm.nll(["to be"])) == 2  # (nats, characters), as before


def _capturing(task_spec: runner.TaskSpec, seen: dict) -> runner.TaskSpec:
    """The same task, keeping a copy of the model's weights as `prepare` hands it to the trainer (step 0)."""

    def prepare(run: runner.Run) -> runner.Prepared:
        prepared = task_spec.prepare(run)
        seen.update({k: v.clone() for k, v in prepared.model.state_dict().items()})
        return prepared

    return replace(task_spec, prepare=prepare)


@pytest.mark.parametrize("level", ["word", "bpe"])
def test_init_from_copies_the_embedding_and_encoder_exactly_and_carries_the_tokenizer(
        level: str, lms: dict[str, Path], tmp_path: Path) -> None:
    seen: dict[str, torch.Tensor] = {}
    out = tmp_path / "clf"
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms[level]), "--output", str(out)]
    assert runner.main(_capturing(spec("sentiment"), seen), argv) == 0
    lm = read_model_weights(lms[level] / "model.safetensors")
    copied = [k for k in seen if k.startswith(("embedding.", "encoder."))]
    assert "embedding.weight" in copied and "encoder.weight_hh_l0" in copied
    for name in copied:
        assert torch.equal(seen[name], lm[name]), name
    assert not any(k.endswith("_reverse") for k in seen)  # a forward LM starts a unidirectional classifier
    assert (out / "tokenizer.json").read_text() == (lms[level] / "tokenizer.json").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden_size"] == 24 and config["model"]["tokenizer"] == level
    assert config["init_from"]["run"] == str(lms[level]) and config["init_from"]["task"] == "generation"
    assert seqnlp.load(out).predict(["to be"])[0]["label"] in ("0", "1")


def test_a_forward_and_a_backward_language_model_start_a_bidirectional_encoder_that_reads_both_exactly(
        lms: dict[str, Path], backward: Path, tmp_path: Path) -> None:
    from seqnlp.tasks.generation import load as load_lm

    seen: dict[str, torch.Tensor] = {}
    out, results = tmp_path / "clf", tmp_path / "clf.json"
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), str(backward), "--top-layers", "1",
            "--top-hidden-size", "6", "--output", str(out), "--results", str(results)]
    assert runner.main(_capturing(spec("sentiment"), seen), argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["bidirectional"] and config["model"]["embedding_size"] == 16  # both tables, 8 each
    forward_lm, backward_lm = load_lm(lms["bpe"]), load_lm(backward)
    model = seqnlp.load(out).model
    text = forward_lm.tokenizer.encode("to be or not to be")
    ids, lengths = torch.tensor([text]), torch.tensor([len(text)])
    with torch.no_grad():
        states, _ = model.encoder(model.embedding(ids), lengths)  # (1, T, 2H): the frozen reader, as trained
        ahead, _ = forward_lm.model.features(ids, lengths)  # (1, T, H)
        behind, _ = backward_lm.model.features(ids.flip(1), lengths)  # (1, T, H), last token first
    assert torch.allclose(states[..., :24], ahead, atol=1e-5)
    assert torch.allclose(states[..., 24:], behind.flip(1), atol=1e-5)
    assert torch.equal(seen["embedding.weight"], torch.cat([forward_lm.model.embedding.weight,
                                                            backward_lm.model.embedding.weight], 1))
    # both language models are named, and both times counted
    result = json.loads(results.read_text())
    init = result["extra"]["init_from"]
    assert init["run"] == str(lms["bpe"]) and init["with"][0]["run"] == str(backward)
    assert init["with"][0]["model"].endswith(", backward") and "+ 1xlstm 8/24 bpe 300 adaptive, backward" in \
        result["model"]
    assert result["train_seconds"] == pytest.approx(result["extra"]["finetune_seconds"] + init["train_seconds"]
                                                    + init["with"][0]["train_seconds"])


def test_a_language_model_pair_is_refused_in_one_line_when_it_cannot_start_a_classifier(
        lms: dict[str, Path], backward: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fwd, bwd = str(lms["bpe"]), str(backward)
    cases = {"the first run is a backward language model": ["--init-from", bwd],
             "the second run is not a backward language model": ["--init-from", fwd, fwd],
             "differ in cell, state size or tokens": ["--init-from", str(lms["word"]), bwd],
             "starts from at most 2": ["--init-from", fwd, bwd, bwd],
             "--lm-steps tunes one language model": ["--init-from", fwd, bwd, "--lm-steps", "2"]}
    for i, (message, flags) in enumerate(cases.items()):
        assert runner.main(spec("sentiment"), [*CLASSIFIER, *COMMON, *flags, "--output", str(tmp_path / str(i))]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / str(i)).exists()


def test_a_frozen_reader_keeps_the_language_model_exact_and_trains_only_the_new_layers(
        lms: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "clf"
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--top-layers", "1", "--top-hidden-size", "6",
            "--ensemble", "2", "--output", str(out)]
    assert runner.main(spec("sentiment"), argv) == 0
    lm, clf = read_model_weights(lms["bpe"] / "model.safetensors"), read_model_weights(out / "model.safetensors")
    for name in ("embedding.weight", "encoder.weight_ih_l0", "encoder.weight_hh_l0"):  # trained, yet unchanged
        assert torch.equal(clf["members.0." + name], lm[name]), name
    with safe_open(str(out / "model.safetensors"), "pt") as stored:  # the members share one reader, saved once
        assert not any(k.startswith("members.1.encoder.") for k in stored.keys())
    assert clf["members.0.top.weight_ih_l0_reverse"].shape == (4 * 6, 8 + 24)  # reads embeddings and states
    model = seqnlp.load(out)
    assert model.predict(["to be"])[0]["label"] in ("0", "1")
    reader = model.model.members[0]
    assert reader.read(Batch(ids=torch.tensor([[5, 6, 7]]), lengths=torch.tensor([3]))).shape == (1, 3, 8 + 24)
    task = spec("sentiment")
    settings = runner.settings_of(task, runner.read_config(out)[1], "config")
    assert "read by 1xbi-lstm 6" in task.describe(settings)
    settings["model"].freeze_embedding = True  # as SST-2's preset sets it: the language model's table, not random
    assert "random" not in task.describe(settings) and "embedding" not in task.describe(settings)


def test_word2vec_vectors_beside_a_frozen_reader_are_learnt_kept_fixed_and_shared(
        lms: dict[str, Path], tmp_path: Path) -> None:
    seen: dict[str, torch.Tensor] = {}
    out = tmp_path / "clf"
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--top-layers", "1", "--top-hidden-size", "6",
            "--ensemble", "2", "--vectors", "tiny_sentiment", "--pretrain-epochs", "2", "--output", str(out)]
    assert runner.main(_capturing(spec("sentiment"), seen), argv) == 0
    clf = read_model_weights(out / "model.safetensors")
    vectors = clf["members.0.vectors.weight"]  # (V, E): word2vec's, as the language model's embedding is wide
    assert vectors.shape == clf["members.0.embedding.weight"].shape
    assert torch.equal(vectors, seen["members.0.vectors.weight"])  # learnt before training, fixed during it
    assert vectors[5:].abs().sum(1).gt(0).sum() > 10 and not torch.equal(vectors, clf["members.0.embedding.weight"])
    with safe_open(str(out / "model.safetensors"), "pt") as stored:  # one table for all members
        assert not any(k.startswith("members.1.vectors.") for k in stored.keys())
    assert clf["members.1.top.weight_ih_l0"].shape == (4 * 6, 8 + 24 + 8)  # embeddings, states, vectors
    model = seqnlp.load(out)
    reader = model.model.members[0]
    ids = torch.tensor([[5, 6, 7]])
    features = reader.read(Batch(ids=ids, lengths=torch.tensor([3])))  # (1, 3, 8 + 24 + 8)
    assert features.shape == (1, 3, 40) and torch.equal(features[0, :, 32:], vectors[ids[0]])
    assert model.predict(["to be"])[0]["label"] in ("0", "1")
    task = spec("sentiment")
    settings = runner.settings_of(task, runner.read_config(out)[1], "config")
    assert "read by 1xbi-lstm 6 beside word2vec (tiny_sentiment)," in task.describe(settings)
    from seqnlp import export  # the reader, the table and the new layers ship as one graph

    export.export_onnx(out, tmp_path / "onnx")
    texts = ["to be or not to be", "a great film"]
    shipped = [r["probabilities"] for r in export.load_onnx(tmp_path / "onnx").predict(texts)]
    for ours, theirs in zip([r["probabilities"] for r in model.predict(texts)], shipped):
        assert ours == pytest.approx(theirs, abs=1e-5)


@pytest.mark.parametrize("extra", [[], ["--init-from", "LM"]])
def test_vectors_without_a_frozen_reader_are_refused_in_one_line(
        extra: list[str], lms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [str(lms["bpe"]) if a == "LM" else a for a in extra]
    argv = [*CLASSIFIER, *COMMON, *extra, "--vectors", "tiny_sentiment", "--output", str(tmp_path / "clf")]
    assert runner.main(spec("sentiment"), argv) == 2
    err = capsys.readouterr().err
    assert "--vectors tiny_sentiment puts word vectors beside" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "clf").exists()


def test_the_reader_states_are_computed_once_read_back_exactly_and_a_cached_run_resumes_exactly(
        lms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_tasks_contract import _interrupted_at_epoch_one

    task, seen = spec("sentiment"), {}

    def prepare(run: runner.Run) -> runner.Prepared:
        seen["prepared"] = task.prepare(run)
        return seen["prepared"]

    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--top-layers", "1", "--top-hidden-size", "6"]
    assert runner.main(replace(task, prepare=prepare), [*argv, "--output", str(tmp_path / "whole")]) == 0
    assert "reader states of the train and validation texts computed once" in capsys.readouterr().out
    model = seen["prepared"].model
    assert model.states is not None
    batch = seen["prepared"].train_batches(1)[0]  # other texts side by side than in the batches that cached them
    real = torch.arange(batch.ids.shape[1])[None, :] < batch.lengths[:, None]  # (B, T)
    model.eval()
    cached, cached_logits = model.read(batch), model(batch).logits
    model.states = None
    computed, computed_logits = model.read(batch), model(batch).logits
    assert torch.allclose(cached[real], computed[real], atol=1e-6)
    assert torch.allclose(cached_logits, computed_logits, atol=1e-6)  # padded positions are never read
    # interrupted and resumed, the states computed again: the same weights as the run that went through
    cut = tmp_path / "cut"
    assert runner.main(_interrupted_at_epoch_one(task), [*argv, "--output", str(cut)]) == 130
    assert runner.main(task, ["--resume", str(cut)]) == 0
    whole, resumed = read_model_weights(tmp_path / "whole" / "model.safetensors"), read_model_weights(
        cut / "model.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # without the cache: the same training up to rounding (the states then come from each training batch)
    capsys.readouterr()
    assert runner.main(task, [*argv, "--no-cache-states", "--output", str(tmp_path / "plain")]) == 0
    assert "reader states" not in capsys.readouterr().out
    plain = read_model_weights(tmp_path / "plain" / "model.safetensors")
    assert all(torch.allclose(whole[k], plain[k], atol=1e-5) for k in whole)


def test_reader_states_too_big_for_the_free_memory_are_computed_at_every_step_with_a_note(
        lms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from seqnlp.tasks import sentiment

    monkeypatch.setattr(sentiment, "_free_memory", lambda: 1000)  # bytes
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--top-layers", "1", "--top-hidden-size", "6",
            "--max-steps", "2", "--output", str(tmp_path / "clf")]
    assert runner.main(spec("sentiment"), argv) == 0
    out, err = capsys.readouterr()
    assert "they are computed at every step instead" in err and "reader states of" not in out


def test_top_layers_without_a_language_model_is_refused_in_one_line(
        fixtures: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*CLASSIFIER, *COMMON, "--top-layers", "1", "--output", str(tmp_path / "clf")]
    assert runner.main(spec("sentiment"), argv) == 2
    err = capsys.readouterr().err
    assert "--top-layers reads a trained language model" in err and len(err.strip().splitlines()) == 1, err


def test_init_from_refuses_another_task_other_sizes_and_a_missing_folder(
        lms: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clf = tmp_path / "clf"
    assert runner.main(spec("sentiment"), [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--output", str(clf),
                                           "--max-steps", "1"]) == 0
    capsys.readouterr()
    cases = {"holds a sentiment run; a sentiment model starts from a generation run": ["--init-from", str(clf)],
             "--hidden-size 32 does not fit": ["--init-from", str(lms["bpe"]), "--hidden-size", "32"],
             "--cell gru does not fit": ["--init-from", str(lms["bpe"]), "--cell", "gru"],
             "--bidirectional True does not fit": ["--init-from", str(lms["bpe"]), "--bidirectional"],
             "no such run folder": ["--init-from", str(tmp_path / "nowhere")]}
    for i, (message, flags) in enumerate(cases.items()):
        assert runner.main(spec("sentiment"), [*CLASSIFIER, *COMMON, *flags, "--output", str(tmp_path / str(i))]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / str(i)).exists()


def test_the_recipe_trains_the_language_model_then_the_classifier_and_names_it(
        fixtures: None, tmp_path: Path) -> None:
    out, results = tmp_path / "clf", tmp_path / "results.json"
    lm_flags = '--layers 1 --hidden-size 16 --embedding-size 8 --batch-size 4 --seq-length 8 --epochs 1 ' \
               '--time-budget 0 --vocab-size 300 --min-frequency 1'
    argv = [*CLASSIFIER, *COMMON, "--recipe", "pretrained", "--init-args", lm_flags, "--output", str(out),
            "--results", str(results)]
    assert runner.main(spec("sentiment"), argv) == 0
    lm_dir = tmp_path / "clf-generation"
    assert json.loads((lm_dir / "config.json").read_text())["tokens"]["level"] == "bpe"
    result = json.loads(results.read_text())
    init = result["extra"]["init_from"]
    lm_eval = json.loads((lm_dir / "evaluation_test.json").read_text())
    assert init["run"] == str(lm_dir) and init["scores"]["nats_per_char"] == lm_eval["nats_per_char"]
    assert init["git_commit"] == result["git_commit"] and init["model"] == "1xlstm 8/16 bpe 300 adaptive"
    # both times are counted: the classifier's fine-tuning and the language model's training
    assert result["train_seconds"] == pytest.approx(result["extra"]["finetune_seconds"] + init["train_seconds"])
    assert result["config"]["recipe"] == "pretrained" and result["config"]["model"]["top_layers"] == 1
    # scored again later (evaluate), the results say the same of the language model and of the time
    again = tmp_path / "again.json"
    assert runner.main(spec("sentiment"), ["evaluate", "--model", str(out), "--results", str(again)]) == 0
    rescored = json.loads(again.read_text())
    assert rescored["extra"]["init_from"] == init
    assert rescored["train_seconds"] == pytest.approx(result["train_seconds"])
    assert rescored["extra"]["finetune_seconds"] == result["extra"]["finetune_seconds"]
    # the recipe's classifier resumes like any run (the starting weights come from its checkpoint then)
    assert runner.main(spec("sentiment"), ["--resume", str(out)]) == 0


def test_discriminative_learning_rates_and_gradual_unfreezing(tmp_path: Path) -> None:
    import trainer_prog

    config = TrainConfig(epochs=1, max_steps=6, lr=0.01, progress="off", curves=False, eval_every=3)
    model = trainer_prog.TinyClassifier(dropout=0.0)
    snapshots: list[torch.Tensor] = []
    model.on_forward = lambda calls: snapshots.append(model.embed.weight.detach().clone())
    model.param_groups = lambda: [{"params": list(model.head.parameters()), "lr_scale": 1.0, "start": 0},  # type: ignore[attr-defined]
                                  {"params": list(model.rnn.parameters()), "lr_scale": 0.5, "start": 0},
                                  {"params": [model.embed.weight], "lr_scale": 0.25, "start": 3}]
    trainer = Trainer(model, config, tmp_path / "run", train_batches=trainer_prog.train_batches(8, 1, 0),
                      evaluate=trainer_prog.evaluate, metric="accuracy", higher_is_better=True)
    trainer.fit()
    # frozen for steps 0-2 (forward k sees the weights after k - 1 steps), trained from step 3 on
    assert all(torch.equal(snapshots[0], s) for s in snapshots[:4]) and not torch.equal(snapshots[3], snapshots[4])
    rates = [g["lr"] for g in trainer._optimizer.param_groups]
    assert rates[0] > 0 and rates == pytest.approx([rates[0], rates[0], rates[0] / 2, rates[0] / 2, rates[0] / 4])


def test_the_classifier_groups_its_layers_from_the_top(lms: dict[str, Path]) -> None:
    from seqnlp.tasks.sentiment import FinetuneConfig, ModelConfig, build_classifier

    model = build_classifier(ModelConfig(layers=2, bidirectional=False, embedding_size=8, hidden_size=8), 50, 2)
    assert model.param_groups() == [{"params": list(model.parameters())}]  # no schedule: the plain optimizer
    model.finetune = FinetuneConfig(lr_decay_per_layer=2.0, unfreeze_every=0.3)
    groups = model.param_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 0.5, 0.25, 0.125]  # head, encoder l1, encoder l0, embedding
    assert [g["start"] for g in groups] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert groups[3]["params"] == [model.embedding.weight]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_splits_joined_by_plus_and_a_carved_scored_part(tmp_path: Path) -> None:
    from seqnlp.data import load_split

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(6)))
    (folder / "extra.jsonl").write_text("".join(json.dumps({"text": f"e{i}"}) + "\n" for i in range(4)))
    assert list(load_split(str(folder), "train+extra")["text"]) == [*(f"t{i}" for i in range(6)), *(f"e{i}" for i in range(4))]
    raw = {"name": "b", "version": 1, "task": "generation", "description": "d",
           "dataset": {"hub_id": str(folder), "mirror": "", "train_split": "train+extra", "validation_split": "",
                       "validation_fraction": 0.2, "test_split": "", "test_fraction": 0.2},
           "columns": {"text": "text"},
           "metric": {"primary": "nats_per_char", "higher_is_better": False, "all": ["nats_per_char"]}}
    bench = parse_benchmark(raw)
    parts = {role: list(bench.load_split(role)["text"]) for role in ("train", "validation", "test")}
    assert [len(p) for p in parts.values()] == [6, 2, 2]
    assert sorted(sum(parts.values(), [])) == sorted(load_split(str(folder), "train+extra")["text"])
    with pytest.raises(SeqnlpError, match="test_split = \"\" too"):
        parse_benchmark({**raw, "dataset": {**raw["dataset"], "test_split": "x"}})


def test_the_language_model_can_read_the_target_text_first(lms: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, torch.Tensor] = {}
    argv = [*CLASSIFIER, *COMMON, "--init-from", str(lms["bpe"]), "--lm-steps", "3", "--output", str(tmp_path / "c"),
            "--max-steps", "1", "--results", str(tmp_path / "r.json")]
    assert runner.main(_capturing(spec("sentiment"), seen), argv) == 0
    assert "language model tuned on the target text: 3 windows" in capsys.readouterr().out
    lm = read_model_weights(lms["bpe"] / "model.safetensors")
    assert not torch.equal(seen["encoder.weight_hh_l0"], lm["encoder.weight_hh_l0"])  # moved by the 3 windows
    assert json.loads((tmp_path / "r.json").read_text())["extra"]["pretrain_seconds"] > 0
