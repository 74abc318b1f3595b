"""Pictures saved next to the numbers (confusion matrices, attention maps), when matplotlib is installed."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqnlp.io import atomic_write_bytes


def heatmap(path: str | Path, matrix: Any, columns: Sequence[str], rows: Sequence[str], *, xlabel: str,
            ylabel: str, title: str | None = None, counts: bool = False, cmap: str = "viridis",
            vmin: float | None = None, vmax: float | None = None, dpi: int = 100) -> bool:
    """Save `matrix` (len(rows), len(columns)) as a labelled heatmap PNG, written atomically; `counts` writes
    each cell's value in it. False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    values = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * len(columns) + 2), max(3, 0.4 * len(rows) + 1.5)))
    ax.imshow(values, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if counts:
        peak = values.max() or 1
        for (r, c), n in np.ndenumerate(values):
            ax.text(c, r, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return True
