"""seqnlp: sequence NLP with recurrent networks on Hugging Face data.

    import seqnlp
    model = seqnlp.load("runs/sentiment-...")     # any saved run folder
    model.predict(["a great film", "a dull film"])   # sentiment; .generate(...) / .translate(...) for the others
    model = seqnlp.load("user/repo")                # a run folder on the Hugging Face hub (or in its local cache)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from seqnlp.errors import SeqnlpError, is_out_of_memory

__version__ = "0.1.0"
__all__ = ["SeqnlpError", "__version__", "load", "run_folder"]

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # user/repo, as the hub spells repo ids


def load(run_dir: str | Path) -> Any:
    """Load a saved run folder, or a hub repo id holding one, as a ready-to-use model (task from its config.json)."""
    from seqnlp.tasks.runner import load_run, read_config

    run, _ = read_config(run_folder(run_dir))
    try:
        return load_run(run)
    except (MemoryError, RuntimeError) as err:
        # A config.json whose sizes do not fit in memory (damaged, or not ours) fails inside torch's allocator.
        if not is_out_of_memory(err):
            raise
        raise SeqnlpError(f"{Path(run) / 'config.json'} describes a model too large for this machine's memory; "
                          "is the file damaged?") from None


def run_folder(model: str | Path) -> Path:
    """The run folder `model` names: a local path when it exists (or its parent does), else a Hugging Face hub repo
    id (user/repo), downloaded through huggingface_hub's cache, which HF_HUB_CACHE and HF_HUB_OFFLINE steer."""
    path = Path(model)
    if path.exists() or (path.parent.is_dir() and str(path.parent) != ".") or not _REPO_ID.fullmatch(str(model)):
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(model), library_name="seqnlp", library_version=__version__))
    except LocalEntryNotFoundError:
        where = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the hub could not be reached"
        raise SeqnlpError(f"{model} is neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                          f"and {where}; download it once with network, or pass a run folder") from None
    except RepositoryNotFoundError:
        raise SeqnlpError(f"{model} is neither a local folder nor a model repository on the Hugging Face hub "
                          "(or it is private: log in with `hf auth login`)") from None
    except (HfHubHTTPError, OSError) as err:
        raise SeqnlpError(f"could not download {model} from the Hugging Face hub: {err}") from None
