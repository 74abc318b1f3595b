"""Simple non-neural baselines, scored by the same code as every model, so a neural number has context.

- sentiment: TF-IDF (word 1–2-grams) + logistic regression (scikit-learn), C chosen on validation;
- generation: an interpolated Kneser-Ney character n-gram model, order chosen on validation;
- translation: copy the source sentence as the translation;
- tagging: window features and a linear-chain CRF (sklearn-crfsuite).

Each baseline is a bring-your-own model for `seqnlp.scoring.score` (`predict`, `log_prob`,
`translate`), so its numbers come from exactly the metric code that scores seqnlp's own runs.

    python -m seqnlp.leaderboard run --baselines            # all benchmarks, results into results/
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqnlp.benchmark import Benchmark, load_benchmark
from seqnlp.errors import SeqnlpError
from seqnlp.results import append_result, build_result
from seqnlp.scoring import score
from seqnlp.spans import read_tags, to_iob2
from seqnlp.tasks import spec

MAX_ORDER = 10  # n-gram codes are base-V integers; V^order must stay inside int64 for V up to ~70


# ----------------------------------------------------------------------------------------------
# Sentiment: TF-IDF + logistic regression


class TfidfLogReg:
    """TF-IDF features over word uni- and bigrams, then L2 logistic regression (deterministic, liblinear)."""

    name = "baseline: tf-idf + logreg"

    def __init__(self, C: float = 4.0, ngram_max: int = 2, min_df: int = 2, max_features: int | None = 200_000):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.C = C
        self.pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, max_features=max_features,
                            sublinear_tf=True, strip_accents="unicode", dtype=np.float32),
            LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=0),
        )

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> TfidfLogReg:
        """Fit vocabulary, IDF weights and the classifier."""
        self.pipeline.fit(list(texts), np.asarray(labels))
        return self

    def predict(self, texts: Sequence[str]) -> list[int]:
        """Label ids for `texts` (the bring-your-own sentiment protocol)."""
        return [int(y) for y in self.pipeline.predict(list(texts))]

    @property
    def num_parameters(self) -> int:
        """Learned weights: one per feature and class (binary: one row), plus biases."""
        clf = self.pipeline[-1]
        return int(clf.coef_.size + clf.intercept_.size)


# ----------------------------------------------------------------------------------------------
# Generation: interpolated Kneser-Ney character n-grams, vectorised with numpy


@dataclass
class _Order:
    """Counts for n-grams of one length L: sorted codes and (continuation) counts, and per-context sums."""

    keys: np.ndarray  # (K,) int64 sorted n-gram codes
    counts: np.ndarray  # (K,) float64 count (highest order) or continuation count (lower orders)
    ctx_keys: np.ndarray  # (Hc,) int64 sorted context codes (code // V)
    ctx_total: np.ndarray  # (Hc,) float64 sum of counts over continuations
    ctx_types: np.ndarray  # (Hc,) float64 number of distinct continuations
    discount: float


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    # Vectorised dictionary lookup: 0 where the query is absent.
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=np.float64)
    pos = np.searchsorted(sorted_keys, queries).clip(max=sorted_keys.size - 1)
    return np.where(sorted_keys[pos] == queries, values[pos], 0.0)


class CharNGramLM:
    """Interpolated Kneser-Ney character language model of a fixed order (context = order - 1 characters).

    Modified-KN-style single discount per order, D = n1 / (n1 + 2 n2); lower orders use continuation
    counts; the bottom is uniform over the training characters plus one unknown-character slot.
    Every row of text is scored from its first character, with no context across rows.
    """

    @property
    def name(self) -> str:
        """Its name in results."""
        return f"baseline: char {self.order}-gram (Kneser-Ney)"

    def __init__(self, order: int = 6):
        if not 1 <= order <= MAX_ORDER:
            raise SeqnlpError(f"n-gram order must be between 1 and {MAX_ORDER}, not {order}")
        self.order = order
        self.vocab = np.zeros(0, dtype=np.uint32)  # sorted code points seen in training
        self.tables: list[_Order] = []

    @property
    def V(self) -> int:
        """Vocabulary size including the unknown-character slot."""
        return int(self.vocab.size) + 1

    def _codes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate rows → (char ids (N,), distance of each char from its row start (N,))."""
        joined = "".join(texts)
        points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)  # (N,) code points
        if self.vocab.size:
            pos = np.searchsorted(self.vocab, points).clip(max=self.vocab.size - 1)  # (N,)
            ids = np.where(self.vocab[pos] == points, pos, self.V - 1)  # (N,) unseen chars → unknown slot
        else:
            ids = np.full(points.shape, self.V - 1)  # (N,)
        lengths = np.array([len(t) for t in texts], dtype=np.int64)  # (R,)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)  # (N,) start offset of each char's row
        dist = np.arange(points.size, dtype=np.int64) - starts  # (N,)
        return ids.astype(np.int64), dist

    def _ngram_keys(self, ids: np.ndarray, dist: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """For L = 1..order: (codes of the L-gram ending at each position (N,), valid mask (N,))."""
        V = self.V
        out = []
        key = ids.copy()  # (N,) code of the 1-gram
        for L in range(1, self.order + 1):
            if L > 1:
                prev = np.zeros_like(ids)  # (N,) the char L-1 positions back (0 where out of range)
                prev[L - 1:] = ids[: ids.size - (L - 1)]
                key = prev * V ** (L - 1) + key  # first char is the most significant digit
            out.append((key.copy(), dist >= L - 1))
        return out

    def fit(self, texts: Sequence[str]) -> CharNGramLM:
        """Count n-grams of every length up to `order` in `texts` (rows do not run into each other)."""
        joined = "".join(texts)
        self.vocab = np.unique(np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32))
        if self.V ** self.order >= 2**62:
            raise SeqnlpError(f"{self.V - 1} distinct characters are too many for order {self.order}; use a "
                              "lower order")
        ids, dist = self._codes(texts)
        grams = self._ngram_keys(ids, dist)
        V = self.V
        counts_by_L: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # Highest order: raw counts.
        key, valid = grams[-1]
        uk, uc = np.unique(key[valid], return_counts=True)
        counts_by_L[self.order] = (uk, uc.astype(np.float64))
        # Lower orders: continuation counts N1+(• g) = distinct one-char left extensions of g.
        for L in range(self.order - 1, 0, -1):
            longer = counts_by_L[L + 1][0]
            suffix = longer % V**L
            k, c = np.unique(suffix, return_counts=True)
            counts_by_L[L] = (k, c.astype(np.float64))
        self.tables = []
        for L in range(1, self.order + 1):
            k, c = counts_by_L[L]
            ctx = k // V
            ck, inverse = np.unique(ctx, return_inverse=True)
            total = np.bincount(inverse, weights=c, minlength=ck.size)  # (Hc,)
            types = np.bincount(inverse, minlength=ck.size).astype(np.float64)  # (Hc,)
            n1, n2 = float((c == 1).sum()), float((c == 2).sum())
            discount = n1 / (n1 + 2 * n2) if n1 > 0 else 0.5
            self.tables.append(_Order(k, c, ck, total, types, min(max(discount, 0.05), 0.95)))
        return self

    def char_log_probs(self, texts: Sequence[str]) -> np.ndarray:
        """Natural-log probability of every character of `texts` given the characters before it in its row."""
        if not self.tables:
            raise SeqnlpError("the n-gram model is not fitted; call fit(texts) first")
        ids, dist = self._codes(texts)
        grams = self._ngram_keys(ids, dist)
        V = self.V
        p = np.full(ids.shape, 1.0 / V)  # (N,) uniform bottom
        for (key, valid), t in zip(grams, self.tables):
            c = _lookup(t.keys, t.counts, key)  # (N,)
            ctx = key // V
            total = _lookup(t.ctx_keys, t.ctx_total, ctx)  # (N,)
            types = _lookup(t.ctx_keys, t.ctx_types, ctx)  # (N,)
            seen = valid & (total > 0)
            safe = np.where(seen, total, 1.0)
            mixed = np.maximum(c - t.discount, 0.0) / safe + t.discount * types / safe * p
            p = np.where(seen, mixed, p)
        return np.log(p)

    def log_prob(self, text: str) -> float:
        """Total natural-log probability of the characters of `text` (the bring-your-own generation protocol)."""
        return float(self.char_log_probs([text]).sum()) if text else 0.0

    @property
    def num_parameters(self) -> int:
        """Stored n-gram counts (all orders)."""
        return int(sum(t.keys.size for t in self.tables))


# ----------------------------------------------------------------------------------------------
# Translation: copy the source


class CopySource:
    """Translate by returning the source sentence unchanged (shared names, numbers and cognates score)."""

    name = "baseline: copy source"

    def translate(self, texts: Sequence[str]) -> list[str]:
        """The bring-your-own translation protocol."""
        return list(texts)


# ----------------------------------------------------------------------------------------------
# Tagging: window features → a linear-chain CRF (crfsuite)


_UPPER, _LOWER, _DIGIT = re.compile(r"[A-ZÁÉÍÓÚÜÑ]"), re.compile(r"[a-záéíóúüñ]"), re.compile(r"\d")


def shape(word: str) -> str:
    """'Madrid' → 'Xx', 'EFE' → 'X', '1996' → 'd', 'F-16' → 'X-d': character classes with repeats collapsed."""
    s = _DIGIT.sub("d", _LOWER.sub("x", _UPPER.sub("X", word)))
    return re.sub(r"(.)\1+", r"\1", s)


def _token_features(word: str) -> dict[str, Any]:
    lower = word.lower()
    return {
        "w": lower, "shape": shape(word),
        "p1": lower[:1], "p2": lower[:2], "p3": lower[:3], "s1": lower[-1:], "s2": lower[-2:], "s3": lower[-3:],
        "title": word[:1].isupper(), "upper": word.isupper(), "digit": any(c.isdigit() for c in word),
        "alpha": word.isalpha(), "punct": not any(c.isalnum() for c in word), "len": min(len(word), 8),
    }


def sentence_features(tokens: Sequence[str]) -> list[dict[str, Any]]:
    """One feature dict per token (window ±2)."""
    n = len(tokens)
    own = [_token_features(w) for w in tokens]
    out = []
    for i in range(n):
        f: dict[str, Any] = {"bias": 1.0, **own[i]}
        for d in (-2, -1, 1, 2):
            j = i + d
            if 0 <= j < n:
                f[f"{d}:w"] = own[j]["w"]
                f[f"{d}:shape"] = own[j]["shape"]
                f[f"{d}:title"] = own[j]["title"]
                if abs(d) == 1:
                    f[f"{d}:s3"] = own[j]["s3"]
            else:
                f[f"{d}:edge"] = True
        if i > 0:
            f["-1|0"] = own[i - 1]["w"] + "|" + own[i]["w"]
        if i + 1 < n:
            f["0|+1"] = own[i]["w"] + "|" + own[i + 1]["w"]
        out.append(f)
    return out



class FeatureCRF:
    """The classic CoNLL tagger: per token the word lowercased, its shape, 1-3 character prefixes and suffixes,
    casing, digit and punctuation flags, and the words, shapes and casing of the neighbours at ±1 and ±2 (with
    the ±1 bigrams), fed to a linear-chain CRF (sklearn-crfsuite, L-BFGS with L1 + L2)."""

    name = "baseline: feature CRF (crfsuite)"

    def __init__(self, c1: float = 0.05, c2: float = 0.05, max_iterations: int = 150) -> None:
        try:
            import sklearn_crfsuite
        except ImportError:
            raise SeqnlpError("the tagging baseline needs sklearn-crfsuite: pip install sklearn-crfsuite") from None
        self.crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=max_iterations,
                                        all_possible_transitions=True)

    def fit(self, token_lists: Sequence[Sequence[str]], tag_lists: Sequence[Sequence[str]]) -> FeatureCRF:
        """Learn feature and transition weights from token lists and their IOB2 tag lists."""
        self.crf.fit([sentence_features(t) for t in token_lists], [list(t) for t in tag_lists])
        return self

    def predict_tags(self, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
        """IOB2 tags of each token list (the bring-your-own tagging protocol)."""
        return [to_iob2(list(p), "IOB2") for p in self.crf.predict([sentence_features(t) for t in token_lists])]

    @property
    def num_parameters(self) -> int:
        """Learned weights: state features plus transitions."""
        return len(self.crf.state_features_) + len(self.crf.transition_features_)


def fit_feature_crf(bench: Benchmark, data_dir: str | Path | None) -> tuple[Any, dict[str, Any], float, int]:
    """The feature CRF fitted on train (its regularisation fixed, not tuned): (model, config, seconds, chars)."""
    train = bench.load_split("train", data_dir=data_dir)
    tokens = _column(train, bench.columns["tokens"], "train split")
    tags = read_tags(_column(train, bench.columns["tags"], "train split"), train.features[bench.columns["tags"]],
                     f"{bench.name} train split")
    start = time.perf_counter()
    model = FeatureCRF().fit(tokens, tags)
    config = {"baseline": "feature_crf", "c1": 0.05, "c2": 0.05, "max_iterations": 150, "window": 2,
              "features": "word, shape, prefixes/suffixes 1-3, casing/digit/punctuation, neighbours at ±1 and ±2"}
    return model, config, time.perf_counter() - start, sum(len(w) for s in tokens for w in s)


# ----------------------------------------------------------------------------------------------
# Running a baseline on a benchmark


def _column(ds: Any, name: str, where: str) -> list[Any]:
    if name not in ds.column_names:
        raise SeqnlpError(f"{where} has no column {name!r} (columns: {', '.join(ds.column_names)}); "
                          "fix [columns] in the benchmark file")
    return list(ds[name])


def fit_tfidf(bench: Benchmark, data_dir: str | Path | None) -> tuple[Any, dict[str, Any], float, int]:
    """TF-IDF + logistic regression fitted on train, C chosen on validation: (model, config, seconds, chars)."""
    train = bench.load_split("train", data_dir=data_dir)
    texts = _column(train, bench.columns["text"], "train split")
    labels = _column(train, bench.columns["label"], "train split")
    grid = (1.0, 4.0, 16.0)
    start = time.perf_counter()
    tried = {}
    for C in grid:  # choose C on the model-selection split, never on the scored one
        model = TfidfLogReg(C=C).fit(texts, labels)
        tried[C] = score(model, bench, "validation", data_dir=data_dir).values()[bench.metric]
    best = max(grid, key=lambda c: (tried[c], -c))
    model = TfidfLogReg(C=best).fit(texts, labels)
    seconds = time.perf_counter() - start
    config = {"baseline": "tfidf_logreg", "C": best, "C_grid": list(grid), "validation": {str(k): v for k, v in
              tried.items()}, "ngram_range": [1, 2], "min_df": 2, "max_features": 200_000, "sublinear_tf": True,
              "solver": "liblinear"}
    return model, config, seconds, sum(len(t) for t in texts)


def fit_char_ngram(bench: Benchmark, data_dir: str | Path | None) -> tuple[Any, dict[str, Any], float, int]:
    """A Kneser-Ney character n-gram model, order chosen on validation: (model, config, seconds, chars)."""
    texts = _column(bench.load_split("train", data_dir=data_dir), bench.columns["text"], "train split")
    grid = (3, 4, 5, 6, 7, 8)
    start = time.perf_counter()
    tried = {}
    for order in grid:
        model = CharNGramLM(order).fit(texts)
        tried[order] = score(model, bench, "validation", data_dir=data_dir).values()[bench.metric]
    best = min(grid, key=lambda o: (tried[o], o)) if not bench.higher_is_better else max(grid, key=tried.get)
    model = CharNGramLM(best).fit(texts)
    seconds = time.perf_counter() - start
    config = {"baseline": "char_ngram_kn", "order": best, "order_grid": list(grid),
              "validation": {str(k): v for k, v in tried.items()}, "smoothing": "interpolated Kneser-Ney"}
    return model, config, seconds, sum(len(t) for t in texts)


def fit_copy_source(bench: Benchmark, data_dir: str | Path | None) -> tuple[Any, dict[str, Any], float, int]:
    """Copy the source sentence (nothing to fit)."""
    return CopySource(), {"baseline": "copy_source"}, 0.0, 0


def run_baseline(benchmark: str | Path | Benchmark, *, data_dir: str | Path | None = None,
                 results_dir: str | Path | None = None) -> tuple[dict[str, Any], Any]:
    """Fit the task's baseline on train (tuned on validation), score the benchmark's scored split.

    Returns the results dict and the baseline's outputs; with `results_dir`, also appends them as
    results_dir/<benchmark>/<date>-<model>.json (and .outputs.json.gz).
    """
    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(benchmark)
    model, config, seconds, train_chars = spec(bench.task).baseline(bench, data_dir)
    evaluation = score(model, bench, data_dir=data_dir)
    result = build_result(
        benchmark=bench.name, version=bench.version, task=bench.task, split=evaluation.split,
        scores=evaluation.scores, model=model.name, params=getattr(model, "num_parameters", None),
        train_seconds=seconds if seconds > 0 else None,
        tokens_per_second=None, seed=0, config=config,
        extra={"train_chars": train_chars} if train_chars else None,
    )
    if results_dir is not None:
        append_result(results_dir, result, evaluation.outputs)
    return result, evaluation.outputs
