"""One trainer for every task. OWNED BY THE TRAINER HELPER (issue 4): everything below `Output`."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Output(NamedTuple):
    """What every seqnlp model's `forward(batch)` returns. The trainer reads only `loss`.

    logits: task-shaped scores, e.g. (B, C) for classification, (B, T, V) for language models
    loss:   scalar mean loss to minimise (None when the batch carries no targets)
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
