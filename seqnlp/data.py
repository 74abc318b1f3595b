"""Load dataset splits (local mirror → Hugging Face hub → local files), and batch them by length.

OWNED BY THE DATA HELPER (issue 2): everything below `Batch` is to be written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """A right-padded batch. Optional fields are set by the tasks that need them.

    ids:            (B, T) input token ids, right-padded with the tokenizer's pad id
    lengths:        (B,)   real lengths of `ids` rows (>= 1), on the same device as ids
    labels:         (B,)   class ids (classification)
    targets:        (B, T) next-token targets aligned with ids (language modelling)
    target_ids:     (B, U) target sequences with bos/eos (seq2seq), right-padded
    target_lengths: (B,)   real lengths of `target_ids` rows
    index:          (B,)   positions of the examples in their dataset (to restore order after bucketing)
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    target_lengths: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor field to `device`."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool, True at real positions of `ids`."""
        return torch.arange(self.ids.size(1), device=self.ids.device)[None, :] < self.lengths[:, None]

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) input tokens in the batch, for tokens/s."""
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return self.ids.size(0)
