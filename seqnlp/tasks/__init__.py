"""Task recipes: how each kind of task is trained and scored (code).

Which dataset, split and metric make a benchmark is data, in the top-level tasks/*.toml files.
Every task module exports the `TaskModule` protocol below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class TaskModule(Protocol):
    """What `seqnlp.tasks.<kind>` modules export."""

    TASK: str  # the kind: "sentiment" | "generation" | "translation" (stored in every run's config.json)

    def main(self, argv: list[str] | None = None) -> int:
        """The command line: train (default), evaluate, and the task's own subcommands."""

    def load(self, run_dir: str | Path) -> Any:
        """Load a saved run as a ready-to-use object (predict / generate / translate)."""
