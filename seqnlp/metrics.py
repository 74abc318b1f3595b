"""Metrics for every task, each returning a `Score` that records how the number was made.

Classification numbers come from scikit-learn, BLEU/chrF from sacrebleu's corpus scorers (on detokenized
text, with sacrebleu's own signature), language-model numbers from a total NLL and a token count — never a
mean of batch means. Accuracy and F1 are reported in percent, like BLEU and chrF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from seqnlp.errors import SeqnlpError

# scikit-learn and sacrebleu are imported inside the functions that use them: importing them costs ~1.5 s,
# which every command (even --help or a usage error) would otherwise pay.


@dataclass(frozen=True)
class Score:
    """One metric value with its direction and a signature describing how it was computed."""

    name: str
    value: float
    higher_is_better: bool
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used in results files."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.name} = {self.value:.4f}"


def _check_pair(refs: Sequence[Any], hyps: Sequence[Any]) -> None:
    if len(refs) != len(hyps):
        raise SeqnlpError(f"{len(hyps)} predictions for {len(refs)} references; they must match one to one")
    if len(refs) == 0:
        raise SeqnlpError("cannot score an empty set of predictions")


def accuracy(refs: Sequence[Any], hyps: Sequence[Any]) -> Score:
    """Percentage of predictions equal to their reference label."""
    import sklearn
    from sklearn.metrics import accuracy_score

    _check_pair(refs, hyps)
    value = 100.0 * float(accuracy_score(list(refs), list(hyps)))
    return Score("accuracy", value, True, f"accuracy|percent|n:{len(refs)}|sklearn:{sklearn.__version__}")


def macro_f1(refs: Sequence[Any], hyps: Sequence[Any], labels: Sequence[Any] | None = None) -> Score:
    """Unweighted mean of per-class F1, in percent (classes absent from both sides are ignored unless `labels`)."""
    import sklearn
    from sklearn.metrics import f1_score

    _check_pair(refs, hyps)
    value = 100.0 * float(f1_score(list(refs), list(hyps), labels=labels, average="macro", zero_division=0))
    return Score("macro_f1", value, True, f"macro_f1|percent|n:{len(refs)}|sklearn:{sklearn.__version__}")


def confusion(refs: Sequence[Any], hyps: Sequence[Any], labels: Sequence[Any]) -> list[list[int]]:
    """Confusion matrix as nested lists: row = reference label, column = predicted label, in `labels` order."""
    from sklearn.metrics import confusion_matrix

    _check_pair(refs, hyps)
    return confusion_matrix(list(refs), list(hyps), labels=list(labels)).tolist()


def _check_text_pair(hyps: Sequence[str], refs: Sequence[str]) -> None:
    _check_pair(refs, hyps)
    if not all(isinstance(s, str) for s in list(hyps) + list(refs)):
        raise SeqnlpError("BLEU/chrF need detokenized strings for both hypotheses and references")


def bleu(hyps: Sequence[str], refs: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False) -> Score:
    """sacreBLEU corpus BLEU of detokenized hypotheses against one reference each (cased, 13a by default)."""
    import sacrebleu

    _check_text_pair(hyps, refs)
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return Score("bleu", float(result.score), True, str(metric.get_signature()))


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> Score:
    """sacreBLEU corpus chrF (character n-gram F-score) against one reference each."""
    import sacrebleu

    _check_text_pair(hyps, refs)
    metric = sacrebleu.CHRF()
    result = metric.corpus_score(list(hyps), [list(refs)])
    return Score("chrf", float(result.score), True, str(metric.get_signature()))


def _check_nll(total_nll: float, count: int) -> None:
    if count <= 0:
        raise SeqnlpError("perplexity needs at least one predicted token")
    if not math.isfinite(total_nll) or total_nll < 0:
        raise SeqnlpError(f"total negative log-likelihood must be finite and >= 0, not {total_nll}")


def perplexity(total_nll: float, count: int, unit: str = "token") -> Score:
    """exp(total NLL in nats / number of predicted tokens): the per-token perplexity of a whole split."""
    _check_nll(total_nll, count)
    return Score("perplexity", math.exp(total_nll / count), False, f"perplexity|per:{unit}|n:{count}")


def nats_per_char(total_nll: float, count: int) -> Score:
    """Mean negative log-likelihood in nats per predicted character (the cross-entropy loss)."""
    _check_nll(total_nll, count)
    return Score("nats_per_char", total_nll / count, False, f"nats_per_char|n:{count}")


def bits_per_char(total_nll: float, count: int) -> Score:
    """Mean negative log-likelihood in bits per predicted character (nats / ln 2)."""
    _check_nll(total_nll, count)
    return Score("bits_per_char", total_nll / count / math.log(2), False, f"bits_per_char|n:{count}")


def span_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                ) -> tuple[list[Score], dict[str, dict[str, float]]]:
    """Entity-level scores of IOB2 tag lists with seqeval's default (conlleval-compatible) mode.

    Returns the Scores f1, precision, recall (micro over entities) and token_accuracy, all in percent, and the
    per-type table {type: {"precision", "recall", "f1", "support"}}. An I-X that does not continue an X
    entity opens one, as conlleval reads it.
    """
    try:
        from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
    except ImportError:
        raise SeqnlpError("span F1 needs seqeval: pip install seqeval") from None
    if len(gold) != len(predicted):
        raise SeqnlpError(f"{len(gold)} gold and {len(predicted)} predicted sentences; they must pair up")
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise SeqnlpError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    if not gold:
        raise SeqnlpError("cannot score an empty set of sentences")
    gold, predicted = [list(g) for g in gold], [list(p) for p in predicted]
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {name: {"precision": 100 * float(row["precision"]), "recall": 100 * float(row["recall"]),
                       "f1": 100 * float(row["f1-score"]), "support": int(row["support"])}
                for name, row in report.items() if not name.endswith(" avg")}
    from importlib.metadata import version

    sig = f"entity|micro|conlleval|n:{len(gold)}|seqeval:{version('seqeval')}"
    scores = [Score("f1", 100 * float(f1_score(gold, predicted, zero_division=0)), True, f"f1|{sig}"),
              Score("precision", 100 * float(precision_score(gold, predicted, zero_division=0)), True,
                    f"precision|{sig}"),
              Score("recall", 100 * float(recall_score(gold, predicted, zero_division=0)), True, f"recall|{sig}"),
              Score("token_accuracy", 100 * float(accuracy_score(gold, predicted)), True,
                    f"token_accuracy|percent|tokens:{sum(map(len, gold))}")]
    return scores, per_type
