"""One way to score a predictor on a benchmark split: each task's `evaluate`, the end of training, the
leaderboard and a user's own model all call `score`, so the same model gets the same numbers every way.

Each recipe names its `Scorer` (`TaskSpec.score`; the three below), a `predict` step and a `measure` step. A predictor is any object with the method its benchmark's kind needs (the bring-your-own protocol):

- sentiment:   `predict(texts) -> list[label name | label id | {"label": ...}]`; optional `labels` (class names);
- generation:  `log_prob(text) -> total nats` (or `score`); optional `nll(texts) -> (total nats, characters)`,
               which scores many rows in one batched call (a word or subword model may add the tokens it
               predicted: (nats, characters, tokens), reported as `token_perplexity`);
- translation: `translate(texts) -> list[str]` (detokenized); optional `target_nll(sources, targets) ->
               (total nats, target tokens)` for perplexity and `lowercase` (references are then lowercased);
- tagging:     `predict_tags(token_lists) -> list[list[str]]`, one IOB2 tag per token (an I- that opens an
               entity is read as conlleval reads it).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqnlp import metrics
from seqnlp.benchmark import Benchmark, load_benchmark
from seqnlp.data import check_columns
from seqnlp.errors import SeqnlpError, check_finite
from seqnlp.metrics import Score
from seqnlp.spans import check_sentences, read_tags
from seqnlp.tasks import spec

SPLIT_ROLES = ("test", "validation", "train")


@dataclass
class Evaluation:
    """The scores of one split, with what they were computed from."""

    benchmark: Benchmark
    role: str  # test | validation | train
    split: str  # the dataset split behind the role, as recorded in results
    scores: list[Score]
    details: dict[str, Any] = field(default_factory=dict)  # per-kind extras: n, confusion, labels, ...
    outputs: Any = None  # what the model produced (labels, hypotheses, NLL), from which `measure` scores again

    def values(self) -> dict[str, float]:
        """{metric: value}."""
        return {s.name: s.value for s in self.scores}

    def line(self) -> str:
        """One line for people: '<benchmark> <split> (<n> ...): metric value, ...'."""
        shown = ", ".join(f"{s.name} {s.value:.4f}" if s.name.endswith("per_char") else f"{s.name} {s.value:.2f}"
                          for s in self.scores)
        return f"{self.benchmark.name} {self.split} ({self.details.get('n', '?')} {self.details.get('unit', 'rows')}): {shown}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: benchmark, split, each metric's value, then the details."""
        return {"benchmark": self.benchmark.name, "split": self.split, **self.values(),
                "signatures": {s.name: s.signature for s in self.scores}, **self.details}


def _method(model: Any, names: Sequence[str], task: str) -> Callable[..., Any]:
    for name in names:
        fn = getattr(model, name, None)
        if callable(fn):
            return fn
    raise SeqnlpError(f"{type(model).__name__} has no {' or '.join(names)}() method, which a {task} model needs "
                      "(see seqnlp.scoring's predictor protocol)")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- per kind


def unlabelled(value: Any, classlabel: bool = True) -> bool:
    """Whether a raw label marks a row without a label: None, NaN, or -1 in a ClassLabel column (the hub's
    "no label", e.g. GLUE's hidden test labels). In a plain integer column -1 is a class like any other."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        classlabel and not isinstance(value, str) and int(value) == -1)


def _label_kind(values: Sequence[Any], feature: Any, where: str) -> str:
    """'classlabel' | 'int' | 'str' for a label column; SeqnlpError for anything else (mixed kinds included)."""
    if hasattr(feature, "names") and hasattr(feature, "str2int"):
        return "classlabel"
    seen = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not seen:
        raise SeqnlpError(f"{where}: the label column holds no labels")
    if all(isinstance(v, str) for v in seen):
        return "str"
    # csv readers turn an int column with gaps into floats: integral floats are ints
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and float(v).is_integer()
           for v in seen):
        return "int"
    kinds = sorted({type(v).__name__ for v in seen})
    bad = next(v for v in seen if isinstance(v, (bool, list, dict)) or not (
        isinstance(v, str) or float(v).is_integer())) if len(kinds) == 1 else seen[0]
    raise SeqnlpError(f"{where}: labels must be integers or class names ({' and '.join(kinds)} found, e.g. {bad!r}); "
                      "convert the label column (or choose another with --label-column)")


def class_names(values: Sequence[Any], feature: Any, where: str) -> list[str]:
    """The class names a training label column defines: its ClassLabel names, or its sorted distinct labels."""
    kind = _label_kind(values, feature, where)
    if kind == "classlabel":
        return [str(n) for n in feature.names]
    labelled = [v for v in values if not unlabelled(v, classlabel=False)]
    names = sorted(set(labelled)) if kind == "str" else [str(v) for v in sorted({int(v) for v in labelled})]
    if "-1" in names:
        _note(f"{where}: label -1 is read as a class of its own (a plain integer column; only a ClassLabel column, "
              "as on the hub, marks rows without a label by -1)")
    if len(names) < 2:
        raise SeqnlpError(f"{where}: the labels take {len(names)} distinct value(s) ({', '.join(names) or 'none'}); "
                          "a classifier needs at least 2 classes")
    return names


def as_class_names(values: Sequence[Any], feature: Any, names: Sequence[str], where: str) -> list[str | None]:
    """Each raw label as one of `names` (None for an unlabelled row); SeqnlpError naming the first that is none."""
    kind = _label_kind(values, feature, where)
    known = set(names)
    numeric = all(n.lstrip("-").isdigit() for n in names)
    out: list[str | None] = []
    mapped = False
    for i, v in enumerate(values):
        if unlabelled(v, classlabel=kind == "classlabel"):
            out.append(None)
            continue
        if kind == "classlabel":
            if not 0 <= int(v) < len(feature.names):
                raise SeqnlpError(f"{where}: row {i} has label {v}, outside the dataset's classes {feature.names}")
            name = str(feature.names[int(v)])
        elif kind == "str":
            name = v
        else:
            name = str(int(v))
            if name not in known and not numeric and 0 <= int(v) < len(names):
                name, mapped = names[int(v)], True  # integer ids against a model that knows class names
        if name not in known:
            raise SeqnlpError(f"{where}: row {i} has label {v!r}, which is not one of the model's classes "
                              f"({', '.join(names)})")
        out.append(name)
    if mapped:
        _note(f"{where}: integer labels were read as the model's classes in its order "
              f"({', '.join(f'{i} = {n}' for i, n in enumerate(names))})")
    return out


def _references(cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark, labels: Sequence[str] | None,
                ) -> tuple[list[str], list[int], list[str]]:
    """(class names, rows that have a label, their labels as names) of a scored label column."""
    where = f"{bench.name} {bench.split_name()}"
    feature = features.get(bench.columns["label"])
    labels = list(labels or []) or class_names(cols["label"], feature, where)
    given = as_class_names(cols["label"], feature, labels, where)
    keep = [i for i, name in enumerate(given) if name is not None]
    if not keep:
        raise SeqnlpError(f"{where}: the scored split has no labels (-1 or empty); score a labelled split")
    return labels, keep, [given[i] for i in keep]  # type: ignore[misc]


def _predict_classes(model: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark) -> Any:
    labels, keep, _ = _references(cols, features, bench, [str(n) for n in getattr(model, "labels", None) or []])
    if len(keep) < len(cols["label"]):
        _note(f"{bench.name} {bench.split_name()}: {len(cols['label']) - len(keep)} of {len(cols['label'])} rows "
              "have no label (-1 or empty) and are left out")
    hyps = list(_method(model, ["predict"], "sentiment")([cols["text"][i] for i in keep]))
    if len(hyps) != len(keep):
        raise SeqnlpError(f"predict() returned {len(hyps)} labels for {len(keep)} texts; return one per text")
    hyps = as_class_names([h["label"] if isinstance(h, dict) and "label" in h else h for h in hyps], None, labels,
                          f"{type(model).__name__}.predict()")
    if any(h is None for h in hyps):
        raise SeqnlpError(f"{type(model).__name__}.predict() returned no label for some texts; return one per text")
    return {"labels": labels, "predicted": hyps}


def _measure_classes(out: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark,
                     ) -> tuple[list[Score], dict[str, Any]]:
    labels, _, refs = _references(cols, features, bench, out["labels"])
    hyps = out["predicted"]
    if len(hyps) != len(refs):
        raise SeqnlpError(f"{len(hyps)} predicted labels for {len(refs)} labelled rows")
    scores = {"accuracy": lambda: metrics.accuracy(refs, hyps), "macro_f1": lambda: metrics.macro_f1(refs, hyps, labels)}
    details = {"n": len(refs), "unit": "texts", "labels": labels, "confusion": metrics.confusion(refs, hyps, labels)}
    return [scores[m]() for m in bench.metrics if m in scores], details


def _predict_nll(model: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark) -> Any:
    texts = [t for t in cols["text"] if t]
    if not texts:
        raise SeqnlpError(f"benchmark {bench.name}: the scored split holds no text")
    count = sum(len(t) for t in texts)
    tokens = None
    batched = getattr(model, "nll", None)
    if callable(batched):
        nll, count, *rest = batched(texts)
        tokens = int(rest[0]) if rest else None
    else:
        log_prob = _method(model, ["log_prob", "score"], "generation")
        nll = 0.0
        for t in texts:  # rows are documents (Tiny Shakespeare's split is a single row)
            lp = float(log_prob(t))
            if not math.isfinite(lp) or lp > 1e-6 * max(len(t), 1):
                raise SeqnlpError(f"log_prob() returned {lp} for a {len(t)}-character text; it must be a finite "
                                  "total natural-log probability (<= 0)")
            nll -= min(lp, 0.0)
    check_finite(nll, f"{type(model).__name__} on {bench.name}")
    return {"nll": float(nll), "count": int(count), **({"tokens": tokens} if tokens else {})}


def _measure_nll(out: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark,
                 ) -> tuple[list[Score], dict[str, Any]]:
    nll, count = out["nll"], out["count"]
    chars = sum(len(t) for t in cols["text"] if t)
    if count != chars:
        raise SeqnlpError(f"the predictions count {count} characters, the scored split has {chars}")
    scores = {"nats_per_char": lambda: metrics.nats_per_char(nll, count),
              "bits_per_char": lambda: metrics.bits_per_char(nll, count),
              "perplexity": lambda: metrics.perplexity(nll, count, unit="char")}
    details: dict[str, Any] = {"n": count, "unit": "characters", "nll": nll}
    if out.get("tokens"):
        details |= {"tokens": out["tokens"], "token_perplexity": math.exp(nll / out["tokens"])}
    return [scores[m]() for m in bench.metrics if m in scores], details


def _predict_translations(model: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark) -> Any:
    import time

    sources = [str(s) for s in cols["source"]]
    begin = time.perf_counter()
    hyps = list(_method(model, ["translate"], "translation")(list(sources)))
    seconds = time.perf_counter() - begin
    if len(hyps) != len(sources) or not all(isinstance(h, str) for h in hyps):
        raise SeqnlpError(f"translate() must return one string per source sentence ({len(sources)}), "
                          f"got {len(hyps)} items")
    out = {"hypotheses": hyps, "lowercase": bool(getattr(model, "lowercase", False)),
           "beam": getattr(model, "beam", None), "sentences_per_second": round(len(sources) / max(seconds, 1e-9), 2)}
    nll_fn = getattr(model, "target_nll", None)
    if callable(nll_fn):
        refs = [str(t).lower() if out["lowercase"] else str(t) for t in cols["target"]]
        nll, count = nll_fn(sources, refs)
        out |= {"nll": float(check_finite(float(nll), f"{type(model).__name__} on {bench.name}")), "count": int(count)}
    return out


def _measure_translations(out: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark,
                          ) -> tuple[list[Score], dict[str, Any]]:
    hyps = out["hypotheses"]
    # a lowercasing model is scored against lowercased references
    refs = [str(t).lower() if out["lowercase"] else str(t) for t in cols["target"]]
    scores: dict[str, Callable[[], Score]] = {"bleu": lambda: metrics.bleu(hyps, refs),
                                              "chrf": lambda: metrics.chrf(hyps, refs)}
    if "nll" in out:
        scores["perplexity"] = lambda: metrics.perplexity(out["nll"], out["count"], unit="target token")
    details = {"n": len(refs), "unit": "sentences", "beam": out["beam"],
               "sentences_per_second": out["sentences_per_second"], "hypotheses": hyps[:5]}
    return [scores[m]() for m in bench.metrics if m in scores], details


def _predict_tags(model: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark) -> Any:
    where = f"{bench.name} {bench.split_name()}"
    sentences = check_sentences(cols["tokens"], None, where)
    hyps = [list(row) for row in _method(model, ["predict_tags"], "tagging")(sentences)]
    if len(hyps) != len(sentences) or any(len(h) != len(s) for h, s in zip(hyps, sentences)):
        raise SeqnlpError("predict_tags() must return one tag per token of every sentence")
    return {"predicted": hyps}


def _measure_tags(out: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark,
                  ) -> tuple[list[Score], dict[str, Any]]:
    where = f"{bench.name} {bench.split_name()}"
    refs = read_tags(cols["tags"], features.get(bench.columns["tags"]), where)
    check_sentences(cols["tokens"], refs, where)
    hyps = read_tags(out["predicted"], None, "the predicted tags", "IOB2")
    scores, per_type = metrics.span_scores(refs, hyps)
    return [s for s in scores if s.name in bench.metrics], {"n": len(refs), "unit": "sentences", "per_type": per_type}


@dataclass(frozen=True)
class Scorer:
    """How a kind is scored, in two steps kept apart so stored outputs can be scored again (`verify`):
    `predict(model, columns, features, benchmark)` asks a predictor for its outputs (JSON-ready), and
    `measure(outputs, columns, features, benchmark) -> (scores, details)` turns them and the references into scores."""

    predict: Callable[[Any, dict[str, list[Any]], dict[str, Any], Benchmark], Any]
    measure: Callable[[Any, dict[str, list[Any]], dict[str, Any], Benchmark], tuple[list[Score], dict[str, Any]]]

    def __call__(self, model: Any, cols: dict[str, list[Any]], features: dict[str, Any], bench: Benchmark,
                 ) -> tuple[list[Score], dict[str, Any]]:
        """Both steps: (scores, details) of `model` on these columns."""
        return self.measure(self.predict(model, cols, features, bench), cols, features, bench)


classification = Scorer(_predict_classes, _measure_classes)
language_model = Scorer(_predict_nll, _measure_nll)
translation = Scorer(_predict_translations, _measure_translations)
tagging = Scorer(_predict_tags, _measure_tags)


# ---------------------------------------------------------------------------------------------- entry point


def _columns(bench: Benchmark, split: str, limit: int | None, data_dir: str | Path | None,
             ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    if split not in SPLIT_ROLES:
        raise SeqnlpError(f"split must be one of {', '.join(SPLIT_ROLES)} (a role, not a dataset split name), "
                          f"not {split!r}")
    ds = bench.load_split(split, data_dir=data_dir)
    if limit is not None:
        if limit < 1:
            raise SeqnlpError(f"limit must be at least 1, not {limit}")
        ds = ds.select(range(min(limit, len(ds))))
    check_columns(ds, list(bench.columns.values()), source=bench.source(data_dir))
    if len(ds) == 0:
        raise SeqnlpError(f"{bench.name} {bench.split_name(split)} is empty; nothing to score")
    return {role: list(ds[col]) for role, col in bench.columns.items()}, dict(getattr(ds, "features", None) or {})


def measure(outputs: Any, benchmark: str | Path | Benchmark, split: str = "test", *,
            data_dir: str | Path | None = None) -> Evaluation:
    """Score stored outputs of a model (`Evaluation.outputs`) against a benchmark split's references again."""
    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark)
    cols, features = _columns(bench, split, None, data_dir)
    scores, details = spec(bench.task).score.measure(outputs, cols, features, bench)
    return Evaluation(bench, split, bench.split_name(split), scores, details, outputs)


def score(model: Any, benchmark: str | Path | Benchmark, split: str = "test", *, limit: int | None = None,
          data_dir: str | Path | None = None) -> Evaluation:
    """Score `model` on a split role of a benchmark ("test" = its scored split, "validation", "train").

    `limit` scores only the first `limit` rows. The model follows its kind's predictor protocol (module docstring).
    """
    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark)
    cols, features = _columns(bench, split, limit, data_dir)
    scorer = spec(bench.task).score
    outputs = scorer.predict(model, cols, features, bench)
    scores, details = scorer.measure(outputs, cols, features, bench)
    return Evaluation(bench, split, bench.split_name(split), scores, details, outputs)
