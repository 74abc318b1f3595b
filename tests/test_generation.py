"""Character-level generation: state carried across windows equals one pass, scoring protocol, sampling
determinism, prime and argument errors, and a tiny train → generate → evaluate run on a fixture text."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seqnlp.errors import SeqnlpError
from seqnlp.tasks import generation as gen
from seqnlp.tokenization import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "generation" / "sonnets.txt"
TINY = ["--layers", "1", "--hidden-size", "24", "--embedding-size", "8", "--dropout", "0", "--batch-size", "4",
        "--seq-length", "16", "--time-budget", "0", "--progress", "off", "--no-curves", "--precision", "fp32"]


def _model(cell: str = "lstm", layers: int = 2, batch_size: int = 2, vocab: int = 11) -> gen.CharRNN:
    torch.manual_seed(0)
    config = gen.ModelConfig(cell=cell, layers=layers, hidden_size=8, embedding_size=6, dropout=0.0)
    return gen.CharRNN(config, vocab, batch_size, precision="fp32")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_windows_with_carried_state_equal_one_pass_over_each_stream(cell: str) -> None:
    model = _model(cell).train()
    stream = torch.randint(4, 11, (2 * 30 + 1,))  # (N,)
    windows = gen.Windows(stream, batch_size=2, seq_length=5)
    assert len(windows) == 6
    logits = torch.cat([model(windows[j]).logits for j in range(len(windows))], dim=1)  # (B, 30, V)
    whole, _ = model.run(windows.inputs[:, :30], torch.full((2,), 30))  # (B, 30, V)
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-5)


def test_state_is_not_carried_into_a_window_that_does_not_continue() -> None:
    model = _model().train()
    stream = torch.randint(4, 11, (2 * 20 + 1,))
    first = gen.Windows(stream, 2, 5, offset=0)
    model(first[0])
    shifted = gen.Windows(stream, 2, 5, offset=3)[0]  # another epoch's first window
    fresh, _ = model.run(shifted.ids, shifted.lengths)  # zero state
    torch.testing.assert_close(model(shifted).logits, fresh)
    with torch.no_grad():  # and evaluation never touches (or uses) the training carry
        before = model.carry_state.clone()
        model.eval()
        torch.testing.assert_close(model(first[1]).logits, model.run(first[1].ids, first[1].lengths)[0])
        assert torch.equal(model.carry_state, before)


def test_carried_state_is_saved_with_the_weights_so_a_resumed_run_continues_exactly() -> None:
    model = _model().train()
    stream = torch.randint(4, 11, (2 * 20 + 1,))
    windows = gen.Windows(stream, 2, 5)
    model(windows[0])
    model(windows[1])
    state = model.state_dict()
    assert {"carry_state", "carry_next"} <= set(state)
    restored = _model().train()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored(windows[2]).logits, model(windows[2]).logits)


@torch.no_grad()
def test_scoring_in_chunks_equals_one_pass_from_bos() -> None:
    model = _model(batch_size=1)
    rows = [torch.randint(4, 11, (n,)).tolist() for n in (37, 5, 1, 20)]
    chunked = gen.split_nll(model, rows, bos_id=2, device=torch.device("cpu"), chunk=7, max_rows=3)
    total = 0.0
    for row in rows:  # reference: each row alone, in one pass, from <bos> with a zero state
        ids = torch.tensor([[2] + row])  # (1, L+1)
        logits, _ = model.run(ids[:, :-1], torch.tensor([len(row)]))  # (1, L, V)
        total += float(F.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
    assert chunked[1] == sum(len(r) for r in rows)
    assert chunked[0] == pytest.approx(total, rel=1e-5)


def test_windows_cover_the_stream_in_order_with_targets_shifted_by_one() -> None:
    stream = torch.arange(103)
    w = gen.Windows(stream, batch_size=3, seq_length=10, offset=2)
    assert w.row_length == 33 and len(w) == 3
    b = w[1]
    assert b.ids[0].tolist() == list(range(12, 22)) and b.targets[0].tolist() == list(range(13, 23))
    assert b.ids[2, 0].item() == 2 + 2 * 33 + 10 and b.index.tolist() == [12, 45, 78]
    with pytest.raises(IndexError):
        w[3]
    assert gen.epoch_offset(0, 0, 128) == 0
    assert gen.epoch_offset(3, 0, 128) == gen.epoch_offset(3, 0, 128)
    assert all(0 <= gen.epoch_offset(e, 5, 16) < 16 for e in range(20))
    # a shift never costs a window: every epoch has as many as the first
    tight = torch.arange(4 * 16 * 3 + 1 + 2)  # 2 characters of slack
    assert {len(gen.epoch_windows(tight, 4, 16, e, seed=1)) for e in range(30)} == {3}
    assert max(gen.epoch_windows(tight, 4, 16, e, seed=1).starts[0].item() for e in range(30)) <= 2


def test_stream_puts_bos_before_every_row_and_carving_keeps_every_character() -> None:
    assert gen.to_stream([[5, 6], [7]], bos_id=2).tolist() == [2, 5, 6, 2, 7]
    head, tail = gen.carve_characters(["abcdef", "ghij"], 0.3)
    assert head == ["abcdef", "g"] and tail == ["hij"]
    assert "".join(head + tail) == "abcdefghij"


# ---------------------------------------------------------------------- end to end on a fixture text

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    results = out.parent / "result.json"
    code = gen.main(["--dataset", str(FIXTURE), *TINY, "--max-steps", "12", "--eval-every", "6",
                     "--output", str(out), "--results", str(results)])
    assert code == 0
    return out


def test_train_writes_a_run_and_a_results_file(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("config.json", "tokenizer.json", "model.safetensors", "last.safetensors", "evaluation_test.json"):
        assert (run_dir / name).exists(), name
    result = json.loads((run_dir.parent / "result.json").read_text())
    assert result["task"] == "generation" and result["benchmark"] == "sonnets"
    assert set(result["metrics"]) == {"nats_per_char", "bits_per_char", "perplexity"}
    nats = result["metrics"]["nats_per_char"]["value"]
    assert result["metrics"]["bits_per_char"]["value"] == pytest.approx(nats / math.log(2))
    assert result["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(nats))
    assert "carved test 0.05" in result["split"] and 0 < nats < math.log(60)


def test_log_prob_follows_the_scoring_protocol(run_dir: Path) -> None:
    lm = gen.load(run_dir)
    assert isinstance(lm, gen.CharLM)
    text = "Love is not love"
    total, count = lm.nll([text])
    assert count == len(text) and lm.log_prob(text) == pytest.approx(-total)
    assert lm.log_prob("") == 0.0
    # the same characters scored one at a time, each from <bos> + the text before it, with a fresh state
    ids = [lm.tokenizer.bos_id] + lm.tokenizer.encode(text)
    by_hand = 0.0
    with torch.no_grad():
        for i in range(1, len(ids)):
            logits, _ = lm.model.run(torch.tensor([ids[:i]]), torch.tensor([i]))  # (1, i, V)
            by_hand += float(logits[0, -1].float().log_softmax(-1)[ids[i]])
    assert lm.log_prob(text) == pytest.approx(by_hand, rel=1e-4)
    probs = lm.next_char_probabilities("Love is")  # what sampling draws from: characters only
    assert sum(probs.values()) == pytest.approx(1.0) and "<unk>" not in probs and "" not in probs
    unseen = lm.log_prob("Love{")  # '{' never occurs in the fixture: <unk>, finite and heavily penalised
    assert math.isfinite(unseen) and unseen < lm.log_prob("Love")


def test_sampling_is_deterministic_with_a_seed(run_dir: Path) -> None:
    lm = gen.load(run_dir)
    a = lm.generate("Shall", 60, temperature=0.9, seed=7)
    assert a.startswith("Shall") and len(a) == len("Shall") + 60
    assert lm.generate("Shall", 60, temperature=0.9, seed=7) == a
    assert lm.generate("Shall", 60, temperature=0.9, seed=8) != a
    assert len(lm.generate("", 30, top_k=3, top_p=0.9, seed=1)) == 30
    assert lm.generate("Shall", 10, greedy_decoding=True) == lm.generate("Shall", 10, greedy_decoding=True)
    streamed: list[str] = []
    assert lm.generate("So", 25, seed=3, on_text=streamed.append) == "So" + "".join(streamed)


def test_generate_cli_streams_the_same_text_for_the_same_seed(run_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--model", str(run_dir), "--prime", "My ", "--length", "40", "--seed", "5"]
    assert gen.main(args) == 0
    first = capsys.readouterr().out
    assert gen.main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("My ")
    assert gen.main(args + ["--num-samples", "2", "--top-k", "5"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2


def test_evaluate_cli_matches_training_report(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["evaluate", "--model", str(run_dir)]) == 0
    out = capsys.readouterr().out
    expected = json.loads((run_dir / "evaluation_test.json").read_text())["nats_per_char"]
    assert f"nats_per_char {expected:.4f}" in out


def test_unknown_prime_characters_are_named_and_nothing_is_printed(run_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["generate", "--model", str(run_dir), "--prime", "Zebra{"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "never seen in training" in captured.err and "'Z'" in captured.err and "'{'" in captured.err
    with pytest.raises(SeqnlpError, match="never seen"):
        gen.load(run_dir).generate("{", 5)


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--temperature", "-1"], "--temperature must be > 0"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--length", "-1"], "--length must be >= 0"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
])
def test_invalid_sampling_values_are_clear_errors(flags: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # checked before the model is read: the folder need not exist
    assert gen.main(["generate", "--model", "no/such/run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(SeqnlpError, match=message):
        gen.check_sampling(**{"length": 1, "temperature": 1.0, "top_k": None, "top_p": None,
                              **_as_kwargs(flags)})


def _as_kwargs(flags: list[str]) -> dict[str, float]:
    name, value = flags[0].lstrip("-").replace("-", "_"), float(flags[1])
    return {name: int(value) if name in ("length", "top_k", "num_samples") else value}


def test_bad_run_folders_and_too_short_texts_are_clear_errors(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["generate", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("tiny text " * 5)
    assert gen.main(["--dataset", str(short), *TINY, "--output", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert "too short" in captured.err
    assert "data:" not in captured.out and "note:" not in captured.err  # the error comes first, alone


def test_char_tokenizer_round_trips_the_fixture() -> None:
    text = FIXTURE.read_text()
    tok = Tokenizer.train([text], level="char")
    assert tok.decode(tok.encode(text)) == text


def _stepped(decoder: gen._StepDecoder, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
    """ids (N, T) fed one step at a time → the scores of every step (N, T, V) and the final state."""
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = decoder.step(ids[:, t], state)  # (N, V)
        steps.append(logits)
    return torch.stack(steps, dim=1), state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@torch.no_grad()
def test_sampling_steps_compute_the_same_scores_as_the_model(cell: str) -> None:
    model = _model(cell, batch_size=1).eval()
    decoder = gen._StepDecoder(model, banned=[0, 1, 2, 3])
    ids = torch.randint(4, 11, (3, 6))  # (N, T)
    whole, _ = model.run(ids, torch.full((3,), 6))  # (N, T, V)
    stepped, _ = _stepped(decoder, ids)  # (N, T, V)
    assert torch.isinf(stepped[..., :4]).all()  # special tokens are never sampled
    torch.testing.assert_close(stepped[..., 4:], whole[..., 4:], rtol=1e-5, atol=1e-5)


def test_the_leaderboard_scores_a_loaded_run_like_its_own_evaluation(run_dir: Path) -> None:
    from seqnlp.benchmark import Benchmark
    from seqnlp.leaderboard import evaluate

    bench = Benchmark(name="sonnets", version=1, task="generation", description="fixture", hub_id=str(FIXTURE),
                      mirror="", train_split="train", validation_split="train", validation_fraction=0.1,
                      validation_seed=0, test_split="train", columns={"text": "text"}, metric="nats_per_char",
                      higher_is_better=False, metrics=["nats_per_char", "bits_per_char", "perplexity"])
    lm = gen.load(run_dir)
    ours = {s.name: s.value for s in lm.score([FIXTURE.read_text()])}
    theirs = evaluate(lm, bench)
    assert theirs["nats_per_char"].value == pytest.approx(ours["nats_per_char"], rel=1e-6)
    assert theirs["perplexity"].value == pytest.approx(ours["perplexity"], rel=1e-6)


def test_regularisation_scales_with_the_passes_the_budget_allows() -> None:
    from seqnlp.trainer import TrainConfig

    data = gen.DataConfig()
    budget = TrainConfig(epochs=100, time_budget=25.0)
    speed = 11_000  # tokens/s
    one = gen.ModelConfig(ensemble=1)
    small, passes = gen.regularisation(one, 1_000_000, budget, data, speed)  # Tiny Shakespeare's size
    assert passes == pytest.approx(16.5) and small.dropout == gen.REGULARISATION["dropout"] and small.ensemble == 1
    slower, passes = gen.regularisation(gen.ModelConfig(), 1_000_000, budget, data, speed / 2)  # half the machine
    assert passes == pytest.approx(8.25) and 0.0 < slower.dropout < small.dropout and slower.ensemble == 1
    # Where one network would see the text 16+ times, two share the budget, each sized to its own passes.
    pair, passes = gen.regularisation(gen.ModelConfig(), 1_000_000, budget, data, speed)
    assert pair.ensemble == 2 and passes == pytest.approx(8.25)
    assert (pair.distill, small.distill) == (gen.DISTILL, 0.0)  # codistillation by default only for an ensemble
    # ... at a share of a lone network's regularisation: the mixture already averages part of the variance away
    assert pair.dropout == pytest.approx(slower.dropout * gen.MEMBER_SHARE, abs=1e-3) and 0.0 < pair.dropout
    assert pair.weight_dropout == pytest.approx(slower.weight_dropout * gen.MEMBER_SHARE, abs=1e-3)
    three, passes = gen.regularisation(gen.ModelConfig(ensemble=3), 1_000_000, budget, data, speed / 2)  # a flag wins
    assert three.ensemble == 3 and passes == pytest.approx(2.75)
    assert gen.regularisation(gen.ModelConfig(), 1_000_000, TrainConfig(epochs=30), data)[0].ensemble == 1
    big, _ = gen.regularisation(gen.ModelConfig(), 100_000_000, budget, data, speed)  # seen less than once
    assert big.dropout == big.embedding_dropout == big.weight_dropout == 0.0
    middle, _ = gen.regularisation(gen.ModelConfig(), 6_000_000, budget, data, speed)  # about 3 passes
    assert 0.0 < middle.weight_dropout < small.weight_dropout
    few_epochs, passes = gen.regularisation(gen.ModelConfig(), 1_000_000, TrainConfig(epochs=2), data)
    assert passes == 2.0 and few_epochs.dropout < middle.dropout
    given, _ = gen.regularisation(gen.ModelConfig(dropout=0.05, ensemble=1), 1_000_000, budget, data, speed)
    assert given.dropout == 0.05 and given.weight_dropout == gen.REGULARISATION["weight_dropout"]  # a flag wins
    fixed = gen.ModelConfig(dropout=0.1, embedding_dropout=0.0, weight_dropout=0.0, ensemble=2)
    assert gen.regularisation(fixed, 1_000_000, budget, data, speed)[0].distill == gen.DISTILL
    assert gen.regularisation(replace(fixed, distill=0.0), 1_000_000, budget, data, speed)[0].distill == 0.0
    with pytest.raises(SeqnlpError, match="speed"):
        gen.regularisation(gen.ModelConfig(), 1_000_000, budget, data)
    every = gen.ModelConfig(dropout=0.1, embedding_dropout=0.0, weight_dropout=0.2)
    assert gen.regularisation(every, 1_000_000, budget, data)[0] == replace(every, ensemble=1, distill=0.0)  # no speed


@pytest.mark.parametrize("dropouts", [[], ["--embedding-dropout", "0.05", "--weight-dropout", "0.1"]])
def test_a_budgeted_run_trains_with_its_dropouts_given_or_measured(tmp_path: Path, dropouts: list[str]) -> None:
    at = TINY.index("--time-budget")
    flags = TINY[:at] + TINY[at + 2:]  # TINY gives --dropout 0
    assert gen.main(["--dataset", str(FIXTURE), *flags, *dropouts, "--time-budget", "0.01", "--output",
                     str(tmp_path / "run")]) == 0
    model = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert model["dropout"] == 0.0
    if dropouts:
        assert (model["embedding_dropout"], model["weight_dropout"]) == (0.05, 0.1)
    else:  # scaled to the passes the measured speed allows
        assert model["embedding_dropout"] is not None and model["weight_dropout"] is not None


def test_training_speed_is_measured_without_touching_the_random_stream() -> None:
    stream = torch.randint(4, 30, (4000,))
    config = gen.ModelConfig(hidden_size=16, embedding_size=8)
    data = gen.DataConfig(batch_size=4, seq_length=16)
    before = torch.get_rng_state()
    speed = gen.training_speed(config, 30, stream, data, "fp32", torch.device("cpu"), adaptive=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert 0 < speed < float("inf")


# ---------------------------------------------------------------------- ensembles (--ensemble K)

def _ensemble(cell: str = "lstm", batch_size: int = 1) -> gen.CharEnsemble:
    torch.manual_seed(0)
    config = gen.ModelConfig(cell=cell, layers=2, hidden_size=8, embedding_size=6, dropout=0.0, ensemble=2)
    model = gen.build_model(config, 11, batch_size, precision="fp32")
    assert isinstance(model, gen.CharEnsemble)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@torch.no_grad()
def test_an_ensemble_scores_the_mean_of_its_members_distributions(cell: str) -> None:
    model = _ensemble(cell).eval()
    a, b = model.members
    assert not torch.equal(a.embedding.weight, b.embedding.weight)  # each member its own initialisation
    rows = [torch.randint(4, 11, (n,)).tolist() for n in (37, 5, 20)]
    total = 0.0
    for row in rows:  # reference: p = (p_a + p_b) / 2 at every position, each member read in one pass
        ids = torch.tensor([[2] + row])  # (1, L+1)
        probs = sum(m.run(ids[:, :-1], torch.tensor([len(row)]))[0].softmax(-1) for m in (a, b)) / 2  # (1, L, V)
        total -= float(probs[0].gather(-1, ids[0, 1:, None]).log().sum())
    chunked = gen.split_nll(model, rows, bos_id=2, device=torch.device("cpu"), chunk=7, max_rows=2)
    assert chunked[0] == pytest.approx(total, rel=1e-5)
    # Sampling steps carry both members' states (stacked on the layer axis) and give the same scores.
    decoder = gen._StepDecoder(model, banned=[0, 1, 2, 3])
    ids = torch.randint(4, 11, (3, 6))  # (N, T)
    whole, _ = model.run(ids, torch.full((3,), 6))  # (N, T, V)
    stepped, state = _stepped(decoder, ids)  # (N, T, V)
    torch.testing.assert_close(stepped[..., 4:], whole[..., 4:], rtol=1e-5, atol=1e-5)
    parts = state if isinstance(state, tuple) else (state,)
    assert all(p.shape == (4, 3, 8) for p in parts)  # (members x layers, N, H)
    moved = decoder.reorder(state, torch.tensor([2, 0]))
    torch.testing.assert_close((moved if isinstance(moved, tuple) else (moved,))[0][:, 1], parts[0][:, 0])


def test_an_ensemble_trains_each_member_on_its_own_loss_and_carries_each_state() -> None:
    model = _ensemble(batch_size=2).train()
    stream = torch.randint(4, 11, (2 * 30 + 1,))
    windows = gen.Windows(stream, batch_size=2, seq_length=5)
    out = model(windows[0])
    losses = [m(windows[0]).loss for m in model.members]  # the members alone (their carry moved on: reset it)
    for m in model.members:
        m.carry_next.fill_(-1)
    assert float(out.loss.detach()) == pytest.approx(float(sum(x.detach() for x in losses) / 2), rel=1e-5)  # type: ignore[union-attr]
    model.zero_grad()
    model(windows[0]).loss.backward()  # type: ignore[union-attr]
    assert all(p.grad is not None for p in model.parameters())
    # Carried state across windows equals one pass over each stream, member by member.
    model = _ensemble(batch_size=2).train()
    logits = torch.cat([model(windows[j]).logits for j in range(len(windows))], dim=1)  # (B, 30, V)
    with torch.no_grad():
        whole, _ = model.run(windows.inputs[:, :30], torch.full((2,), 30))  # (B, 30, V)
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-5)


def test_codistillation_mixes_each_members_loss_with_its_peers_predictions() -> None:
    model = _ensemble(batch_size=2).train()
    model.config = replace(model.config, distill=0.25)
    window = gen.Windows(torch.randint(4, 11, (2 * 30 + 1,)), batch_size=2, seq_length=5)[0]

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
        model.zero_grad()
        for m in model.members:  # the next forward starts from the zero state again
            m.carry_next.fill_(-1)
        return out

    loss = model(window).loss
    loss.backward()  # type: ignore[union-attr]
    ours = grads()
    plain = [m(window) for m in model.members]
    logp = [torch.log_softmax(o.logits, -1).flatten(0, 1) for o in plain]  # (N, V) each
    # Each member's cross-entropy on the other's distribution, which is a target (no gradient flows into it).
    soft = [-(logp[1 - k].detach().exp() * logp[k]).sum(-1).mean() for k in range(2)]
    expected = sum(0.75 * o.loss + 0.25 * x for o, x in zip(plain, soft)) / 2  # type: ignore[operator]
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)  # type: ignore[union-attr]
    expected.backward()  # type: ignore[union-attr]
    for a, b in zip(ours, grads()):
        torch.testing.assert_close(a, b)
    model.config = replace(model.config, distill=0.0)  # none: the plain mean of the members' losses
    assert float(model(window).loss.detach()) == pytest.approx(  # type: ignore[union-attr]
        float(sum(o.loss.detach() for o in plain) / 2), rel=1e-5)  # type: ignore[union-attr]


def test_an_ensemble_run_trains_generates_scores_and_is_named(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert gen.main(["--dataset", str(FIXTURE), *TINY, "--ensemble", "2", "--max-steps", "6", "--eval-every", "3",
                     "--output", str(out), "--results", str(tmp_path / "r.json")]) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"].endswith(", ensemble of 2, codistilled 0.5")  # an ensemble codistills by default
    assert result["config"]["model"]["ensemble"] == 2 and result["config"]["model"]["distill"] == gen.DISTILL
    lm = gen.load(out)
    assert isinstance(lm.model, gen.CharEnsemble) and len(lm.model.members) == 2
    text = lm.generate("Love", 40, seed=3)
    assert text.startswith("Love") and text == lm.generate("Love", 40, seed=3)
    assert lm.score([FIXTURE.read_text()[:500]])[0].value == pytest.approx(
        -lm.log_prob(FIXTURE.read_text()[:500]) / 500, rel=1e-6)
    from seqnlp.tasks import sentiment
    capsys.readouterr()
    assert sentiment.main(["--dataset", str(FIXTURE), "--init-from", str(out), "--output", str(tmp_path / "clf")]) != 0
    assert "is an ensemble of 2 networks; a classifier starts from one" in capsys.readouterr().err
    assert not (tmp_path / "clf").exists()
