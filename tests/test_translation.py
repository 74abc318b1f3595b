"""Translation task: the attention model learns a toy task, decoding agrees with training, masking, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import sacrebleu
import torch

from seqnlp.data import Batch
from seqnlp.decoding import beam_search, greedy
from seqnlp import scoring
from seqnlp.benchmark import load_benchmark
from seqnlp.errors import SeqnlpError
from seqnlp.tasks import translation as tr
from seqnlp.tokenization import BOS, EOS, PAD, Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "translation"  # reversal task: "a b c" → "C B A"
TINY = ["--layers", "1", "--hidden-size", "32", "--embedding-size", "16", "--dropout", "0", "--tokenizer", "word",
        "--vocab-size", "100", "--batch-size", "32", "--eval-batch-size", "64", "--lr", "0.01", "--warmup", "0",
        "--progress", "off", "--no-curves", "--seed", "0"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run fastest on one thread, and the suite shares two cores with other jobs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(**overrides: object) -> tr.Seq2Seq:
    cfg = tr.ModelConfig(**{"layers": 2, "decoder_layers": 2, "hidden_size": 16, "embedding_size": 8,
                            "dropout": 0.0, "rnn_precision": "fp32", **overrides})  # type: ignore[arg-type]
    torch.manual_seed(0)
    return tr.Seq2Seq(cfg, 13, 13).eval()


def random_batch(rows: int = 4, vocab: int = 13) -> Batch:
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 4, 1][:rows])  # (B,)
    ids = torch.randint(4, vocab, (rows, 5), generator=gen)  # (B, T)
    ids = ids.masked_fill(torch.arange(5)[None, :] >= lengths[:, None], PAD)  # (B, T)
    tgt = torch.randint(4, vocab, (rows, 6), generator=gen)  # (B, U)
    tgt[:, 0] = BOS
    return Batch(ids=ids, lengths=lengths, target_ids=tgt, target_lengths=torch.full((rows,), 6))


VARIANTS = [{}, {"cell": "lstm"}, {"attention": "additive"}, {"input_feeding": True},
            {"cell": "lstm", "attention": "additive", "input_feeding": True, "tie_embeddings": False},
            {"share_embeddings": True}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_step_by_step_decoding_equals_teacher_forcing(variant: dict) -> None:
    # The decoding path (step/reorder) must compute exactly what training computes for the same prefix.
    model = tiny_model(**variant)
    batch = random_batch()
    with torch.no_grad():
        teacher = model(batch).logits  # (B, U, V)
        state = model.start(batch.ids, batch.lengths)
        stepped = []
        for t in range(batch.target_ids.size(1) - 1):
            logits, state = model.step(batch.target_ids[:, t], state)
            stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped, 1), teacher, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", [{}, {"cell": "lstm", "input_feeding": True}], ids=str)
def test_reorder_selects_rows(variant: dict) -> None:
    # After an arbitrary reorder (rows repeated, out of source order) each row must decode as its source.
    model = tiny_model(**variant)
    batch = random_batch()
    index = torch.tensor([2, 0, 0, 3, 1])  # (N',)
    with torch.no_grad():
        state = model.reorder(model.start(batch.ids, batch.lengths), index)
        logits, state = model.step(batch.target_ids[index, 0], state)
        logits, _ = model.step(batch.target_ids[index, 1], state)
        expected = model(batch).logits[index, 1]  # (N', V)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS[:4], ids=str)
def test_beam_of_one_is_greedy(variant: dict) -> None:
    model = tiny_model(**variant)
    batch = random_batch()
    start = torch.full((4,), BOS)  # (B,)
    with torch.no_grad():
        g = greedy(model, model.start(batch.ids, batch.lengths), start, 12, EOS)
        b = beam_search(model, model.start(batch.ids, batch.lengths), start, 1, 12, EOS)
    assert g == b


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_padding_gets_no_attention_and_changes_nothing(attention: str) -> None:
    model = tiny_model(attention=attention)
    short = torch.tensor([[5, 6, 7]])  # (1, T)
    padded = torch.tensor([[5, 6, 7, PAD, PAD, PAD], [8, 9, 10, 11, 12, 4]])  # (2, T')
    target = torch.tensor([[BOS, 4, 9, 11]])  # (1, U)
    with torch.no_grad():
        m1, k1, s1 = model.encode(short, torch.tensor([3]))
        logits1, w1 = model.decode_teacher(target, m1, k1, s1)  # (1, U, V), (1, U, 3)
        m2, k2, s2 = model.encode(padded, torch.tensor([3, 6]))
        logits2, w2 = model.decode_teacher(target.repeat(2, 1), m2, k2, s2)  # (2, U, V), (2, U, 6)
    assert torch.all(w2[0, :, 3:] == 0)
    torch.testing.assert_close(w2[0, :, :3], w1[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits2[0], logits1[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w2.sum(-1), torch.ones(2, 4))


def reversal_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    src = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(n)]
    return src, [" ".join(reversed(s.split())).upper() for s in src]


def test_attention_model_learns_to_reverse() -> None:
    # One thread keeps this tiny model fast and its arithmetic the same on every run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _learn_to_reverse()
    finally:
        torch.set_num_threads(threads)


def _learn_to_reverse() -> None:
    torch.manual_seed(0)
    src, tgt = reversal_pairs(600, 0)
    tok = Tokenizer.train(src + tgt, level="word")
    data = tr.DataConfig(batch_size=16, eval_batch_size=100)
    train = tr.encode_corpus(src, tgt, tok, tok, None, "train")
    model = tr.Seq2Seq(tr.ModelConfig(layers=1, hidden_size=64, embedding_size=32, dropout=0.0, label_smoothing=0.0,
                                      rnn_precision="fp32"), tok.vocab_size, tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = tr.training_batches(train, data, seed=0)
    model.train()
    for epoch in range(12):
        for batch in batches(epoch):
            loss = model(batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    test_src, test_tgt = reversal_pairs(50, 1)
    translator = tr.Translator(model, tok, tok, tr.DecodeConfig(beam=3), data)
    hyps = translator.translate(test_src, beam=1)
    assert sum(h == t for h, t in zip(hyps, test_tgt)) >= 45, list(zip(hyps, test_tgt))[:5]
    translator.beam = 3
    scores, details = scoring.translation(translator, {"source": test_src, "target": test_tgt}, {},
                                          load_benchmark("multi30k_de_en"))
    result = {s.name: s for s in scores}
    assert result["bleu"].value > 90
    # BLEU is sacreBLEU's own corpus score of the detokenized hypotheses against the raw references
    expected = sacrebleu.corpus_bleu(translator.translate(test_src), [test_tgt]).score
    assert result["bleu"].value == pytest.approx(expected)
    assert result["perplexity"].value < 1.5


def run_cli(argv: list[str]) -> int:
    return tr.main(argv)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tr") / "run"
    rc = tr.main(["--dataset", str(FIXTURE), "--source-column", "src", "--target-column", "tgt", *TINY,
                  "--epochs", "2", "--beam", "2", "--output", str(out), "--results", str(out.parent / "res.json")])
    assert rc == 0
    return out


def test_cli_train_writes_a_complete_run(trained_run: Path) -> None:
    for name in ("config.json", "tokenizer.json", "model.safetensors", "last.safetensors", "evaluation_test.json"):
        assert (trained_run / name).exists(), name
    config = json.loads((trained_run / "config.json").read_text())
    assert config["task"] == "translation"
    result = json.loads((trained_run.parent / "res.json").read_text())
    assert set(result["metrics"]) == {"bleu", "chrf", "perplexity"}
    assert result["split"] == "test"
    assert "tok:13a" in result["metrics"]["bleu"]["signature"]


def test_cli_translate_evaluate_attention(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["translate", "--model", str(trained_run), "--beam", "2", "a b c", "h g"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines == tr.load(trained_run).translate(["a b c", "h g"], beam=2)
    assert run_cli(["evaluate", "--model", str(trained_run), "--split", "validation", "--beam", "1"]) == 0
    assert "(40 sentences): bleu" in capsys.readouterr().out
    report = json.loads((trained_run / "evaluation_validation.json").read_text())
    assert report["n"] == 40 and report["beam"] == 1
    png = tmp_path / "heat.png"
    assert run_cli(["attention", "--model", str(trained_run), "--text", "a b c d", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_column_lists_existing(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    rc = run_cli(["--dataset", str(FIXTURE), "--source-column", "de", "--target-column", "tgt", *TINY,
                  "--epochs", "1", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "'de'" in err and "src, tgt" in err


def test_bad_pairs_are_clear_errors() -> None:
    tok = Tokenizer.train(["a b", "B A"], level="word")
    with pytest.raises(SeqnlpError, match="row 1 has an empty source"):
        tr.encode_corpus(["a b", "  "], ["B A", "A"], tok, tok, None, "train")
    with pytest.raises(SeqnlpError, match="row 0 has an empty target text"):
        tr.encode_corpus(["a b"], [None], tok, tok, None, "train")  # type: ignore[list-item]
    with pytest.raises(SeqnlpError, match="row 0 has an empty source text"):
        tr.encode_corpus([None], ["A"], tok, tok, None, "train")  # type: ignore[list-item]
    with pytest.raises(SeqnlpError, match="parallel"):
        tr.encode_corpus(["a", "b"], ["A"], tok, tok, None, "train")
    with pytest.raises(SeqnlpError, match="decoder-layers"):
        tr.Seq2Seq(tr.ModelConfig(layers=1, decoder_layers=2), 10, 10)


def test_translate_refuses_empty_input_and_wrong_runs(trained_run: Path, tmp_path: Path) -> None:
    translator = tr.load(trained_run)
    with pytest.raises(SeqnlpError, match="empty source"):
        translator.translate(["a b", ""])
    # finding R17: a source far past the training length is refused, naming the fix
    cap = tr.MAX_SOURCE_FACTOR * translator.data_config.max_length
    with pytest.raises(SeqnlpError, match=f"text 1 has {cap + 1} tokens, over {cap}.*split it into sentences"):
        translator.translate(["a b", " ".join(["a"] * (cap + 1))])
    with pytest.raises(SeqnlpError, match="does not exist"):
        tr.load(tmp_path / "nothing")
    (tmp_path / "config.json").write_text(json.dumps({"task": "sentiment"}))
    with pytest.raises(SeqnlpError, match="holds a sentiment model, not a translation model"):
        tr.load(tmp_path)
