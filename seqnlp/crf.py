"""A linear-chain CRF layer over per-token scores: batched forward algorithm and Viterbi decoding.

Both loop over time steps only (vectorised over the batch and the tags), on right-padded batches. Optional
masks of legal transitions and first tags (`seqnlp.spans.allowed_transitions`) make forbidden moves score
NEG in training and decoding alike, so the model normalises over legal sequences and never decodes an
illegal one. Chosen over pytorch-crf by measurement (see the tagging results file): the same F1, faster
here, and it takes the constraints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NEG = -1.0e4  # score of a forbidden transition: exp(NEG) == 0 in fp32, and NEG + NEG stays finite


class CRF(nn.Module):
    """Linear-chain CRF over emissions (B, T, C) of right-padded batches; batched, loops over time steps only.

    allowed / starts: optional (C, C) / (C,) bool masks of legal transitions and first tags; forbidden ones
    score NEG in training and decoding alike, so the model normalises over legal sequences only and Viterbi
    never returns an illegal one.
    """

    def __init__(self, num_tags: int, allowed: Tensor | None = None, starts: Tensor | None = None) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # (C, C) from → to
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))  # (C,)
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))  # (C,)
        penalty = torch.zeros(num_tags, num_tags)  # (C, C)
        if allowed is not None:
            penalty = penalty.masked_fill(~allowed, NEG)  # (C, C)
        start_penalty = torch.zeros(num_tags)  # (C,)
        if starts is not None:
            start_penalty = start_penalty.masked_fill(~starts, NEG)  # (C,)
        self.register_buffer("penalty", penalty, persistent=False)
        self.register_buffer("start_penalty", start_penalty, persistent=False)

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """(transitions (C, C), start (C,), end (C,)) with the forbidden moves at NEG: what `viterbi` takes."""
        return (self.transitions + self.penalty,  # (C, C)
                self.start + self.start_penalty,  # (C,)
                self.end)  # (C,)

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B,) log Z of each row: the forward algorithm, vectorised over the batch."""
        trans, start, end = self.scores()
        alpha = start + emissions[:, 0]  # (B, C)
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]  # (B, C)
            alpha = torch.where(mask[:, t : t + 1], step, alpha)  # (B, C): padded rows keep their alpha
        return torch.logsumexp(alpha + end, dim=1)  # (B,)

    def gold_score(self, emissions: Tensor, tags: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """(B,) score of the given tag paths (tags at padded positions are ignored)."""
        trans, start, end = self.scores()
        tags = tags.clamp(min=0)  # (B, T): padding -100 → 0, masked out below
        maskf = mask.to(emissions.dtype)  # (B, T)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        moves = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return ((emit * maskf).sum(1) + (moves * maskf[:, 1:]).sum(1)  # (B,)
                + start[tags[:, 0]] + end[last])

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """(B,) negative log-likelihood of the gold paths."""
        emissions = emissions.float()  # (B, T, C)
        return self.log_partition(emissions, mask) - self.gold_score(emissions, tags, mask, lengths)  # (B,)

    def viterbi(self, emissions: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) best tag paths (entries past each row's length are meaningless)."""
        return viterbi(emissions, mask, *self.scores())


@torch.no_grad()
def viterbi(emissions: Tensor, mask: Tensor, trans: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """(B, T) best tag paths of emissions (B, T, C) under transition scores (C, C), start (C,) and end (C,)
    (entries past each row's length are meaningless)."""
    emissions = emissions.float()  # (B, T, C)
    batch, time, tags = emissions.shape
    score = start + emissions[:, 0]  # (B, C)
    identity = torch.arange(tags, device=emissions.device).expand(batch, tags)  # (B, C)
    pointers = []
    for t in range(1, time):
        best, arg = (score.unsqueeze(2) + trans).max(dim=1)  # (B, C), (B, C)
        real = mask[:, t : t + 1]  # (B, 1)
        score = torch.where(real, best + emissions[:, t], score)  # (B, C)
        pointers.append(torch.where(real, arg, identity))  # (B, C): padded steps point to themselves
    path = torch.empty(batch, time, dtype=torch.long, device=emissions.device)  # (B, T)
    path[:, -1] = (score + end).argmax(dim=1)  # (B,)
    for t in range(time - 1, 0, -1):
        path[:, t - 1] = pointers[t - 1].gather(1, path[:, t : t + 1]).squeeze(1)  # (B,)
    return path
