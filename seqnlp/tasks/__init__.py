"""The one registry of task kinds, and the recipes (`seqnlp/tasks/<kind>.py`) behind them.

*How* a kind of task is trained and scored is code: a recipe module that exports `SPEC`, a
`seqnlp.tasks.runner.TaskSpec` (the runner owns the command line, run folders and results). *Which* dataset,
split and metric make a benchmark is data, in the top-level tasks/*.toml files, whose `task` key names a kind
here. The benchmark loader, the scorers, the leaderboard, the baselines and `seqnlp.load` all read `KINDS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from seqnlp.errors import SeqnlpError


@dataclass(frozen=True)
class Kind:
    """What a benchmark of this kind must name, and what it can report."""

    columns: tuple[str, ...]  # column roles, in [columns] of a benchmark file and --<role>-column flags
    metrics: tuple[str, ...]  # metrics its scorer computes; the first is the default primary one
    carve_unit: str = "row"  # what a validation/test part carved from train is made of (row | character)
    carve_fraction: float = 0.1  # the share of train such a part takes, unless --validation/test-fraction say
    pipeline: str = ""  # the Hugging Face hub's pipeline tag for models of this kind (their model cards)


KINDS: dict[str, Kind] = {
    "sentiment": Kind(("text", "label"), ("accuracy", "macro_f1"), pipeline="text-classification"),
    "generation": Kind(("text",), ("nats_per_char", "bits_per_char", "perplexity"), carve_unit="character",
                       carve_fraction=0.05, pipeline="text-generation"),
    "translation": Kind(("source", "target"), ("bleu", "chrf", "perplexity"), pipeline="translation"),
    "tagging": Kind(("tokens", "tags"), ("f1", "precision", "recall", "token_accuracy"),
                    pipeline="token-classification"),
}


def kind(name: str) -> Kind:
    """The registered kind `name`; SeqnlpError listing the known ones otherwise."""
    if name not in KINDS:
        raise SeqnlpError(f"unknown task {name!r}; the task kinds are {', '.join(KINDS)}")
    return KINDS[name]


def spec(name: str) -> Any:
    """The recipe of kind `name` (its module's SPEC), imported on first use so `import seqnlp` stays cheap."""
    kind(name)
    return importlib.import_module(f"{__name__}.{name}").SPEC
