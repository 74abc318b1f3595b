"""Baselines give the expected numbers on fixtures, deterministically; the n-gram model is a distribution."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from seqnlp.baselines import CharNGramLM, CopySource, TfidfLogReg, run_baseline
from seqnlp.errors import SeqnlpError
from seqnlp.results import read_results

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "leaderboard"


@pytest.fixture(autouse=True)
def _fixture_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    monkeypatch.delenv("SEQNLP_DATA_DIR", raising=False)


def test_tfidf_logreg_separates_a_separable_set(tmp_path: Path) -> None:
    r, outputs = run_baseline("tiny_sentiment", results_dir=tmp_path)
    assert r["metrics"]["accuracy"]["value"] == 100.0 and r["metrics"]["macro_f1"]["value"] == 100.0
    assert r["model"] == "baseline: tf-idf + logreg" and r["split"] == "test" and r["params"] > 0
    assert r["config"]["C"] in r["config"]["C_grid"]
    (written,) = read_results(tmp_path)  # with its outputs beside it, named by their sha256
    assert {**written, "extra": None} == {**r, "extra": None} and len(outputs["predicted"]) == 10
    assert len(list(tmp_path.rglob("*.outputs.json.gz"))) == 1 and "sha256" in written["extra"]["outputs"]
    model = TfidfLogReg().fit(["good good", "bad bad", "good film", "bad film"], [1, 0, 1, 0])
    assert model.predict(["a good one", "a bad one"]) == [1, 0]


def test_copy_source_on_identical_pairs_scores_100() -> None:
    r, _ = run_baseline("tiny_translation")
    assert r["metrics"]["bleu"]["value"] == pytest.approx(100.0)
    assert r["metrics"]["chrf"]["value"] == pytest.approx(100.0)
    assert "perplexity" not in r["metrics"]  # copying has no probabilities
    assert CopySource().translate(["ein Hund"]) == ["ein Hund"]


def test_ngram_on_a_repeated_string_is_nearly_certain() -> None:
    r, _ = run_baseline("tiny_text")
    nats = r["metrics"]["nats_per_char"]["value"]
    assert nats < 0.05
    assert r["metrics"]["bits_per_char"]["value"] == pytest.approx(nats / math.log(2))
    assert r["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(nats))
    assert r["model"].startswith("baseline: char ") and r["config"]["order"] in r["config"]["order_grid"]


def test_same_inputs_same_numbers() -> None:
    for name in ("tiny_sentiment", "tiny_text"):
        (a, _), (b, _) = run_baseline(name), run_baseline(name)
        assert a["metrics"] == b["metrics"] and a["config"] == b["config"] and a["params"] == b["params"]


TEXT = "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. " * 20


@pytest.mark.parametrize("order", [1, 3, 6])
def test_ngram_probabilities_sum_to_one(order: int) -> None:
    model = CharNGramLM(order).fit([TEXT])
    chars = [chr(c) for c in model.vocab] + ["\u2603"]  # every training character, plus one unseen
    for context in ["", "Fir", "zzq", "speak. Al"]:
        lp = model.char_log_probs([context + c for c in chars])  # (rows * len,)
        last = np.cumsum([len(context) + 1] * len(chars)) - 1
        assert np.exp(lp[last]).sum() == pytest.approx(1.0, abs=1e-9)


def test_ngram_log_prob_matches_per_row_scoring_and_higher_order_helps() -> None:
    low, high = CharNGramLM(2).fit([TEXT]), CharNGramLM(5).fit([TEXT])
    rows = ["Before we proceed", "hear me speak", "xyz"]
    joined = low.char_log_probs(rows)
    assert sum(low.log_prob(r) for r in rows) == pytest.approx(float(joined.sum()))
    assert high.log_prob(rows[0]) > low.log_prob(rows[0])  # more context, better prediction
    assert math.isfinite(high.log_prob("\u2603\u2603")) and high.log_prob("") == 0.0
    with pytest.raises(SeqnlpError, match="order"):
        CharNGramLM(0)
    with pytest.raises(SeqnlpError, match="not fitted"):
        CharNGramLM(3).log_prob("a")
