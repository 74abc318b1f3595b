"""seqnlp: sequence NLP with recurrent networks on Hugging Face data.

    import seqnlp
    model = seqnlp.load("runs/sentiment-...")     # any saved run folder
    model.predict(["a great film", "a dull film"])   # sentiment; .generate(...) / .translate(...) for the others
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqnlp.errors import SeqnlpError, is_out_of_memory

__version__ = "0.1.0"
__all__ = ["SeqnlpError", "__version__", "load"]


def _task_module(kind: str) -> Any:
    # Imported on demand so `import seqnlp` stays cheap; a plain dict, no dotted-path construction.
    if kind == "sentiment":
        from seqnlp.tasks import sentiment as module
    elif kind == "generation":
        from seqnlp.tasks import generation as module
    elif kind == "translation":
        from seqnlp.tasks import translation as module
    else:
        raise SeqnlpError(f"unknown task {kind!r} in config.json; expected sentiment, generation or translation")
    return module


def load(run_dir: str | Path) -> Any:
    """Load a saved run folder as a ready-to-use model: the task is read from its config.json."""
    from seqnlp.io import read_json

    run = Path(run_dir)
    if not run.is_dir():
        raise SeqnlpError(f"{run} is not a folder; pass the run folder that training printed")
    config = read_json(run / "config.json")
    if not isinstance(config, dict) or "task" not in config:
        raise SeqnlpError(f"{run / 'config.json'} has no 'task' entry; is this a seqnlp run folder?")
    try:
        return _task_module(config["task"]).load(run)
    except (MemoryError, RuntimeError) as err:
        # A config.json whose sizes do not fit in memory (damaged, or not ours) fails inside torch's allocator.
        if not is_out_of_memory(err):
            raise
        raise SeqnlpError(f"{run / 'config.json'} describes a model too large for this machine's memory; "
                          "is the file damaged?") from None
