import itertools
import math

import pytest
import torch

from seqnlp import decoding
from seqnlp.errors import SeqnlpError

EOS = 0


class MarkovDecoder:
    """Toy decoder: logits depend on the last token and on a state (the running sum of emitted tokens),
    so beam search must reorder the state correctly to reproduce exhaustive search."""

    def __init__(self, vocab: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g) * 2  # (V, V)
        self.bias = torch.randn(vocab, vocab, generator=g)  # (V, V) added when the running sum is odd

    def step(self, tokens, state):
        logits = self.table[tokens] + (state % 2)[:, None].float() * self.bias[tokens]  # (N, V)
        return logits, state + tokens

    def reorder(self, state, index):
        return state[index]

    def log_prob(self, start, seq):
        """Sum of log-probs of `seq` (ids incl. final eos) after `start`."""
        tokens, state, total = torch.tensor([start]), torch.tensor([0]), 0.0
        for tok in seq:
            logits, state = self.step(tokens, state)
            total += float(logits.log_softmax(-1)[0, tok])
            tokens = torch.tensor([tok])
        return total


def test_filter_logits_top_k_top_p_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(decoding.filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = torch.isfinite(decoding.filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7, 0.5+0.3 >= 0.7
    assert torch.isfinite(decoding.filter_logits(logits, top_p=0.1))[0].tolist() == [True, False, False, False]
    scaled = decoding.filter_logits(logits, temperature=0.5)
    assert torch.allclose(scaled, logits * 2)
    for bad in [dict(temperature=0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)]:
        with pytest.raises(SeqnlpError):
            decoding.filter_logits(logits, **bad)


def test_sampling_is_deterministic_with_a_seed_and_top_k_1_is_greedy():
    dec = MarkovDecoder(6, seed=1)
    start = torch.tensor([1, 2, 3])
    a = decoding.sample(dec, torch.zeros(3, dtype=torch.long), start, 12, generator=torch.Generator().manual_seed(7))
    b = decoding.sample(dec, torch.zeros(3, dtype=torch.long), start, 12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (3, 12)
    top1 = decoding.sample(dec, torch.zeros(3, dtype=torch.long), start, 8, top_k=1)
    assert top1.tolist() == decoding.greedy(dec, torch.zeros(3, dtype=torch.long), start, 8, eos_id=None)


def test_sample_streams_tokens_and_stops_at_eos():
    dec = MarkovDecoder(5, seed=3)
    seen = []
    out = decoding.sample(dec, torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]), 50, eos_id=EOS,
                          generator=torch.Generator().manual_seed(0), on_token=seen.append)
    assert len(seen) == out.size(1)
    for row in out.tolist():  # after the first eos, only eos
        if EOS in row:
            assert set(row[row.index(EOS):]) == {EOS}


@pytest.mark.parametrize("seed", range(6))
def test_beam_of_one_equals_greedy(seed):
    dec = MarkovDecoder(7, seed)
    start = torch.arange(1, 6)
    limits = torch.tensor([3, 9, 1, 6, 12])
    state = torch.zeros(5, dtype=torch.long)
    assert decoding.beam_search(dec, state, start, 1, limits, EOS) == decoding.greedy(dec, state, start, limits, EOS)


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_equals_exhaustive_search(seed):
    vocab, max_len, alpha = 4, 3, 1.0
    dec = MarkovDecoder(vocab, seed)
    best, best_score = None, -math.inf
    for n in range(0, max_len + 1):  # n real tokens, then eos (forced after max_len)
        for body in itertools.product(range(1, vocab), repeat=n):
            seq = list(body) + [EOS]
            score = dec.log_prob(2, seq) / len(seq) ** alpha
            if score > best_score:
                best, best_score = list(body), score
    got = decoding.beam_search(dec, torch.zeros(1, dtype=torch.long), torch.tensor([2]), 64, max_len, EOS, alpha)
    assert got == [best]


def test_beam_beats_greedy_when_the_greedy_first_step_is_a_trap():
    class Trap:
        # from start 1: token 2 (p=.6) then eos with p=.1 at best; token 3 (p=.4) then eos with p=.99
        def step(self, tokens, state):
            p = torch.full((tokens.size(0), 4), 1e-9)
            for i, t in enumerate(tokens.tolist()):
                p[i] = {1: torch.tensor([1e-9, 1e-9, .6, .4]), 2: torch.tensor([.1, .3, .3, .3]),
                        3: torch.tensor([.99, .0033, .0033, .0034])}.get(t, torch.tensor([1.0, 1e-9, 1e-9, 1e-9]))
            return p.log(), state

        def reorder(self, state, index):
            return state[index]

    state = torch.zeros(1)
    assert decoding.greedy(Trap(), state, torch.tensor([1]), 2, EOS) == [[2, 1]]
    assert decoding.beam_search(Trap(), state, torch.tensor([1]), 2, 2, EOS) == [[3]]


def test_greedy_respects_per_row_limits_and_zero_length():
    dec = MarkovDecoder(5, seed=0)
    out = decoding.greedy(dec, torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3]), torch.tensor([0, 2, 4]), None)
    assert [len(r) for r in out] == [0, 2, 4]
    with pytest.raises(SeqnlpError):
        decoding.beam_search(dec, torch.zeros(1, dtype=torch.long), torch.tensor([1]), 0, 3, EOS)
