"""One interface over every task's loaded run: what the server (and any other front end) talks to.

    from seqnlp.predictor import Predictor
    p = Predictor.load("runs/sentiment-...")          # any run folder; the task is read from config.json
    p.task, p.name, p.info()                          # task, benchmark score, config
    p.classify(["a great film"])                      # [{"label": "pos", "probabilities": {...}}]

Each task answers one operation (`OPERATIONS`): sentiment `classify`, generation `generate_stream`, translation
`translate`, tagging `tag`. Calls are batched (a list of texts in, one result per text out) and go through the
task predictors' public methods only; asking a model for another task's operation is a SeqnlpError.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from seqnlp.errors import SeqnlpError

OPERATIONS = {"sentiment": "classify", "generation": "generate", "translation": "translate", "tagging": "tag"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # model names appear in URLs


class Predictor:
    """A loaded run folder with a uniform, batched interface (see the module docstring)."""

    def __init__(self, model: Any, task: str, run_dir: str | Path, config: dict[str, Any], name: str | None = None) -> None:
        self.model, self.task, self.run_dir, self.config = model, task, Path(run_dir), config
        self.name = name or self.run_dir.resolve().name
        if not NAME.fullmatch(self.name):
            raise SeqnlpError(f"model name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-' "
                              "(it is part of the URL); give one with NAME=RUN_DIR")

    @classmethod
    def load(cls, run_dir: str | Path, name: str | None = None, device: str = "cpu") -> Predictor:
        """Load a run folder (what `seqnlp.load` does) behind this interface."""
        from seqnlp.tasks.runner import load_run, read_config

        run, config = read_config(run_dir)
        return cls(load_run(run, device), config["task"], run, config, name)

    @property
    def operation(self) -> str:
        """The one operation this model answers: classify, generate, translate or tag."""
        return OPERATIONS[self.task]

    def info(self) -> dict[str, Any]:
        """{"name", "task", "operation", "benchmark", "split", "metric", "scores", "config"} of the loaded run.

        The scores are those of the run's evaluation file written by training (else evaluation_test.json,
        else any evaluation_*.json); without one they are empty and the benchmark is the configured one.
        """
        from seqnlp.io import read_json
        from seqnlp.tasks import KINDS

        metrics = KINDS[self.task].metrics
        found = []
        for path in self.run_dir.glob("evaluation_*.json"):
            try:
                data = read_json(path)
            except SeqnlpError:
                continue
            if isinstance(data, dict):
                found.append((("best_step" not in data, path.name != "evaluation_test.json", path.name), data))
        evaluation = min(found, key=lambda f: f[0])[1] if found else {}
        source = self.config.get("source") or {}
        return {"name": self.name, "task": self.task, "operation": self.operation,
                "benchmark": evaluation.get("benchmark") or source.get("benchmark") or source.get("dataset") or None,
                "split": evaluation.get("split"), "metric": metrics[0],
                "scores": {m: evaluation[m] for m in metrics if isinstance(evaluation.get(m), (int, float))},
                "config": {k: v for k, v in self.config.items() if k not in ("task", "seqnlp_version")}}

    def _need(self, operation: str) -> None:
        if self.operation != operation:
            raise SeqnlpError(f"model {self.name!r} is a {self.task} model: it answers {self.operation}, not {operation}")

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: {"label", "probabilities": {class name: probability}}."""
        self._need("classify")
        return [{"label": r["label"], "probabilities": r["probabilities"]} for r in self.model.predict(list(texts))]

    def generate_stream(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, seed: int | None = None) -> Iterator[str]:
        """The characters sampled after `prime`, one by one as they are drawn (the prime is not repeated).

        The settings and the prime are checked now, before the first character (a SeqnlpError names the bad one).
        """
        from seqnlp.decoding import check_decoding

        self._need("generate")
        check_decoding(temperature, top_k, top_p, length=length)
        self.model.check_prime(prime)
        return self.model.stream(prime, length, temperature, top_k, top_p, seed)

    def generate(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None) -> str:
        """The prime followed by `length` sampled characters (the joined stream)."""
        return prime + "".join(self.generate_stream(prime, length, temperature, top_k, top_p, seed))

    def translate(self, texts: Sequence[str], beam_size: int | None = None, attention: bool = False) -> list[dict[str, Any]]:
        """Per text: {"translation"}, plus {"source_tokens", "target_tokens" (incl. eos), "attention" (U x T
        nested lists, rows summing to 1)} when `attention` is asked for. beam_size None: the run's."""
        self._need("translate")
        if not attention:
            return [{"translation": t} for t in self.model.translate(list(texts), beam=beam_size)]
        return [{"translation": r["translation"], "source_tokens": r["source_tokens"], "target_tokens": r["target_tokens"],
                 "attention": [[round(float(w), 4) for w in row] for row in r["weights"]]}
                for r in self.model.translate_with_attention(list(texts), beam=beam_size)]

    def tag(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: {"tokens": [{"text", "start", "end", "tag"}], "entities": [{"type", "text", "start", "end"}]}."""
        self._need("tag")
        return [{"tokens": r["tokens"], "entities": r["entities"]} for r in self.model.tag(list(texts))]
