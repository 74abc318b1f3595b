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


def load(run_dir: str | Path) -> Any:
    """Load a saved run folder as a ready-to-use model: the task is read from its config.json."""
    from seqnlp.tasks.runner import load_run, read_config

    run, _ = read_config(run_dir)
    try:
        return load_run(run)
    except (MemoryError, RuntimeError) as err:
        # A config.json whose sizes do not fit in memory (damaged, or not ours) fails inside torch's allocator.
        if not is_out_of_memory(err):
            raise
        raise SeqnlpError(f"{Path(run) / 'config.json'} describes a model too large for this machine's memory; "
                          "is the file damaged?") from None
