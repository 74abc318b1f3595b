import math

import pytest
import sacrebleu

from seqnlp import metrics
from seqnlp.errors import SeqnlpError


def test_accuracy_and_macro_f1_known_values():
    refs = [0, 0, 1, 1, 1, 2]
    hyps = [0, 1, 1, 1, 0, 2]
    assert metrics.accuracy(refs, hyps).value == pytest.approx(400 / 6)
    # per-class F1: class0 P=1/2 R=1/2 → .5; class1 P=2/3 R=2/3 → .6667; class2 → 1.0
    assert metrics.macro_f1(refs, hyps).value == pytest.approx(100 * (0.5 + 2 / 3 + 1.0) / 3)
    assert metrics.confusion(refs, hyps, [0, 1, 2]) == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]


def test_bleu_matches_sacrebleu_reference_value():
    # Pinned value: sacrebleu 2.x corpus BLEU (13a, cased) for this fixed pair; a change means the scorer changed.
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
    score = metrics.bleu(hyps, refs)
    assert score.value == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert score.value == pytest.approx(45.07, abs=0.01)
    assert score.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert metrics.bleu(refs, refs).value == pytest.approx(100.0)


def test_chrf_matches_sacrebleu():
    hyps = ["a cat sat on the mat", "hello world"]
    refs = ["the cat sat on the mat", "hello there world"]
    assert metrics.chrf(hyps, refs).value == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)


def test_perplexity_family_known_values():
    # 4 tokens each with probability 1/2 → perplexity 2, 1 bit per char
    nll = 4 * math.log(2)
    assert metrics.perplexity(nll, 4).value == pytest.approx(2.0)
    assert metrics.bits_per_char(nll, 4).value == pytest.approx(1.0)
    assert metrics.nats_per_char(nll, 4).value == pytest.approx(math.log(2))
    # a uniform model over 65 characters
    assert metrics.perplexity(10 * math.log(65), 10).value == pytest.approx(65.0)
    assert not metrics.perplexity(nll, 4).higher_is_better


def test_perplexity_is_not_a_mean_of_batch_means():
    # batch A: 1 token at NLL 3.0; batch B: 3 tokens at NLL 1.0 each → total 6 over 4 tokens
    assert metrics.perplexity(3.0 + 3 * 1.0, 4).value == pytest.approx(math.exp(1.5))


@pytest.mark.parametrize("call", [
    lambda: metrics.accuracy([1, 2], [1]),
    lambda: metrics.accuracy([], []),
    lambda: metrics.perplexity(1.0, 0),
    lambda: metrics.perplexity(float("nan"), 3),
    lambda: metrics.bleu(["a"], [None]),
])
def test_bad_inputs_are_clear_errors(call):
    with pytest.raises(SeqnlpError):
        call()


def test_importing_metrics_does_not_import_sklearn_or_sacrebleu():
    import subprocess
    import sys

    code = "import sys, seqnlp.metrics; print('sklearn' in sys.modules, 'sacrebleu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
