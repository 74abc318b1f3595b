"""Word vectors pretrained with word2vec (seqnlp.embeddings) and their use by the sentiment task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqnlp.embeddings import pretrain_vectors
from seqnlp.errors import SeqnlpError
from seqnlp.tasks import sentiment
from seqnlp.tokenization import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "sentiment"

# "good" and "great" share every context; "bad" and "awful" share another.
TEXTS = ([f"the film was {w} and the cast was {w} too" for w in ("good", "great")] * 60
         + [f"what a {w} script , a {w} ending" for w in ("bad", "awful")] * 60)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_vectors_are_deterministic_cover_seen_ids_and_place_shared_contexts_together() -> None:
    tok = Tokenizer.train(TEXTS + ["unseen"], level="word")
    ids = tok.encode_batch(TEXTS)
    vectors, found = pretrain_vectors(ids, tok.vocab_size, 16, epochs=20, seed=3)
    again, _ = pretrain_vectors(ids, tok.vocab_size, 16, epochs=20, seed=3)
    assert vectors.shape == (tok.vocab_size, 16) and torch.equal(vectors, again)
    seen = {i for row in ids for i in row}
    assert set(found.nonzero().flatten().tolist()) == seen  # pad, specials and "unseen" get no vector
    assert not found[tok.pad_id] and not found[tok.token_to_id("unseen")]
    assert float(vectors[found].std(correction=0)) == pytest.approx(1.0, abs=1e-3)
    v = {w: vectors[tok.token_to_id(w)] for w in ("good", "great", "bad", "awful")}
    assert _cos(v["good"], v["great"]) > _cos(v["good"], v["bad"]) + 0.2
    assert _cos(v["bad"], v["awful"]) > _cos(v["bad"], v["great"]) + 0.2
    other, _ = pretrain_vectors(ids, tok.vocab_size, 16, epochs=20, seed=4)
    assert not torch.equal(vectors, other)


def test_nothing_to_learn_from_is_a_clear_error() -> None:
    with pytest.raises(SeqnlpError, match="no text to pretrain"):
        pretrain_vectors([[0, 0], []], 10, 8)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster on one thread, and the same on every run
    yield
    torch.set_num_threads(threads)


def test_sentiment_pretrain_flag_starts_the_embedding_and_counts_its_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[list[str]] = []  # the texts word2vec learns from
    pretrain = sentiment.pretrain_embedding

    def spy(model: torch.nn.Module, tokenizer: Tokenizer, texts: list[str], *args: object, **kwargs: object) -> float:
        read.append(list(texts))
        return pretrain(model, tokenizer, texts, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sentiment, "pretrain_embedding", spy)
    run = tmp_path / "run"
    flags = ["--dataset", str(FIXTURE), "--tokenizer", "word", "--embedding-size", "16", "--hidden-size", "16",
             "--batch-size", "8", "--max-length", "24", "--lr", "0.01", "--device", "cpu", "--progress", "off",
             "--no-curves", "--epochs", "2", "--seed", "0"]
    assert sentiment.main([*flags, "--pretrain", str(FIXTURE), "--output", str(run),
                           "--results", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["config"]["model"]["pretrain"] == str(FIXTURE)
    assert f", word2vec ({FIXTURE})" in result["model"]  # the leaderboard row says where its vectors came from
    assert 0 < result["extra"]["pretrain_seconds"] <= result["train_seconds"]
    # the pretraining text is the train split itself: word2vec reads each text once, not twice
    assert len(read) == 1 and sorted(read[0]) == sorted(set(sentiment.pretraining_texts(str(FIXTURE))))
    # the vectors are the model's starting point: the same seed without --pretrain starts elsewhere
    tok = Tokenizer.load(run / "tokenizer.json")
    rows = sentiment.pretraining_texts(str(FIXTURE))
    cfg = sentiment.ModelConfig(embedding_size=16, hidden_size=16, pretrain=str(FIXTURE))
    torch.manual_seed(0)
    model = sentiment.SentimentClassifier(cfg, tok.vocab_size, 2, tok.pad_id)
    before = model.embedding.weight.detach().clone()
    assert sentiment.pretrain_embedding(model, tok, rows, cfg, seed=0) > 0
    changed = (model.embedding.weight != before).any(1)
    assert changed.sum() > 10 and not changed[tok.pad_id]
    with pytest.raises(SeqnlpError, match="a translation benchmark"):
        sentiment.pretraining_texts("multi30k_de_en")


def test_freeze_embedding_keeps_the_pretrained_vectors_and_members_share_one_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqnlp.checkpoint import read_model_weights
    from seqnlp.io import load_weights

    started: list[torch.Tensor] = []  # the table as pretraining left it
    pretrain = sentiment.pretrain_embedding

    def spy(model: torch.nn.Module, *args: object, **kwargs: object) -> float:
        seconds = pretrain(model, *args, **kwargs)  # type: ignore[arg-type]
        started.append(model.members[0].embedding.weight.detach().clone())
        return seconds

    monkeypatch.setattr(sentiment, "pretrain_embedding", spy)
    run = tmp_path / "run"
    flags = ["--dataset", str(FIXTURE), "--tokenizer", "word", "--embedding-size", "16", "--hidden-size", "16",
             "--batch-size", "8", "--max-length", "24", "--lr", "0.01", "--device", "cpu", "--progress", "off",
             "--no-curves", "--epochs", "2", "--seed", "0", "--ensemble", "2"]
    assert sentiment.main([*flags, "--pretrain", str(FIXTURE), "--pretrain-epochs", "2", "--freeze-embedding",
                           "--output", str(run)]) == 0
    saved = read_model_weights(run / "model.safetensors")
    assert torch.equal(saved["members.0.embedding.weight"], started[0])  # training never moved a row
    assert torch.equal(saved["members.1.embedding.weight"], started[0])
    assert "members.1.embedding.weight" not in load_weights(run / "model.safetensors")  # stored once
    predictor = sentiment.load(run)
    members = predictor.model.members
    assert members[0].embedding is members[1].embedding and not members[0].embedding.weight.requires_grad
    assert not torch.equal(members[0].head.weight, members[1].head.weight)
    out = predictor.predict(["a great film"])
    assert out[0]["label"] in out[0]["probabilities"]
