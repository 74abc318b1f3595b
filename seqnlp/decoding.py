"""Decoding shared by generation and translation: sampling (temperature, top-k, top-p), greedy, beam search.

A model decodes through the `Decoder` protocol: `step` maps the last tokens of N rows and a state to
next-token logits, `reorder` selects/repeats rows of a state (beam search uses it to follow the beams).
The loops here are per *step*, batched over rows and beams; nothing loops per token in Python inside a step.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from seqnlp.errors import SeqnlpError

State = Any  # a tensor or a nested tuple of tensors, whatever the model carries between steps


class Decoder(Protocol):
    """What a model implements to be decoded."""

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (N,) → logits (N, V) for the next token, and the new state."""

    def reorder(self, state: State, index: torch.Tensor) -> State:
        """Rows `index` (N',) of `state`, in that order (rows may repeat)."""


MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2  # outside it sampling is greedy or uniform, or overflows
MIN_TOP_P = 1e-6
MAX_BEAM = 256  # a wider beam multiplies the batch past any use (BLEU stops improving long before)
MAX_LENGTH = 1_000_000  # tokens one call may generate


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)  # int, NumPy integers, 0-d integer tensors
    except TypeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    """SeqnlpError unless `value` is None or an integer in [low, high] (high None: no upper bound)."""
    if value is None:
        return
    if not _is_int(value):
        raise SeqnlpError(f"{name} must be an integer, not {value!r}")
    if value < low:
        raise SeqnlpError(f"{name} must be >= {low}, not {value}")
    if high is not None and value > high:
        raise SeqnlpError(f"{name} must be at most {high}, not {value}")


def check_decoding(temperature: Any = None, top_k: Any = None, top_p: Any = None, beam: Any = None,
                   length: Any = None, max_length: int = MAX_LENGTH, *, flags: bool = False) -> None:
    """Check decoding settings; a one-line SeqnlpError names the first bad argument and its allowed values.

    temperature in [0.01, 100]; top_k an integer >= 1; top_p in [1e-6, 1]; beam an integer in [1, MAX_BEAM];
    length an integer in [0, max_length]. None means "not given" and is not checked. Booleans, strings and
    floats where an integer belongs (length=3.5, beam=2.5, beam=True) are refused too. With `flags=True` the
    message names the command-line flags (--temperature, --top-k, --top-p, --beam, --length).
    """
    name = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "beam": "--beam",
            "length": "--length"} if flags else {"temperature": "temperature", "top_k": "top-k",
                                                 "top_p": "top-p", "beam": "beam size", "length": "length"}
    if temperature is not None:
        n = name["temperature"]
        if not _is_number(temperature):
            raise SeqnlpError(f"{n} must be a number, not {temperature!r}")
        if math.isnan(temperature) or math.isinf(temperature) and temperature > 0:
            raise SeqnlpError(f"{n} must be a finite number, not {temperature}")
        if temperature <= 0:
            raise SeqnlpError(f"{n} must be > 0, not {temperature} (use greedy decoding for the argmax)")
        if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
            raise SeqnlpError(f"{n} must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, not {temperature:g}"
                              " (use greedy decoding for the argmax)")
    _check_int(name["top_k"], top_k, 1, None)
    if top_p is not None:
        n = name["top_p"]
        if not _is_number(top_p):
            raise SeqnlpError(f"{n} must be a number, not {top_p!r}")
        if not 0 < top_p <= 1:  # NaN fails this too
            raise SeqnlpError(f"{n} must be in (0, 1], not {top_p}")
        if top_p < MIN_TOP_P:
            raise SeqnlpError(f"{n} must be at least {MIN_TOP_P:g}, not {top_p:g}")
    _check_int(name["beam"], beam, 1, MAX_BEAM)
    _check_int(name["length"], length, 0, max_length)


def _check_limit(max_len: Any) -> None:
    """greedy/beam_search take an int or a (N,) tensor of per-row limits; refuse anything else by name."""
    if isinstance(max_len, torch.Tensor) and max_len.dim() > 0:
        if max_len.is_floating_point() or max_len.dtype == torch.bool:
            raise SeqnlpError(f"length limits must be an integer tensor, not {max_len.dtype}")
        return
    if not _is_int(max_len):
        raise SeqnlpError(f"length must be an integer, not {max_len!r}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Scale by 1/temperature, keep the k most likely tokens and/or the smallest set with mass >= top_p.

    logits (N, V) → (N, V) with removed tokens at -inf. Always keeps at least the most likely token.
    The settings are checked by `check_decoding`.
    """
    check_decoding(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = logits.float() / temperature  # (N, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = sorted_logits.softmax(-1)  # (N, V)
        # drop a token when the mass before it already reaches top_p; the first token is never dropped
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p  # (N, V)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (N, V)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _limits(max_len: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(max_len, torch.Tensor):
        return torch.full((n,), int(max_len), dtype=torch.long, device=device)  # (N,)
    return max_len.to(device=device, dtype=torch.long)  # (N,)


def sample_steps(decoder: Decoder, state: State, start: torch.Tensor, max_len: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                 eos_id: int | None = None) -> Iterator[torch.Tensor]:
    """`sample`, one step at a time: a generator of each step's (N,) tokens as they are drawn (for streaming).

    Nothing runs until the first token is asked for; the same `generator` seed gives the same tokens as `sample`.
    """
    check_decoding(temperature=temperature, top_k=top_k, top_p=top_p, length=max_len)
    tokens = start
    done = torch.zeros_like(start, dtype=torch.bool)  # (N,)
    for _ in range(max_len):
        logits, state = decoder.step(tokens, state)  # (N, V)
        probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)  # (N, V)
        tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(start.device)  # (N,)
        if eos_id is not None:
            tokens = tokens.masked_fill(done, eos_id)
            done |= tokens == eos_id
        yield tokens
        if eos_id is not None and bool(done.all()):
            return


def sample(decoder: Decoder, state: State, start: torch.Tensor, max_len: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
           eos_id: int | None = None, on_token: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Sample up to `max_len` tokens for each row, feeding each back in.

    start (N,) is the first input token of every row. Returns (N, L) sampled ids; rows that produced
    `eos_id` are filled with `eos_id` afterwards. `on_token` sees each step's (N,) tokens as they come
    (for streaming). The same `generator` seed gives the same tokens.
    """
    check_decoding(temperature=temperature, top_k=top_k, top_p=top_p, length=max_len)
    out: list[torch.Tensor] = []
    for tokens in sample_steps(decoder, state, start, max_len, temperature, top_k, top_p, generator, eos_id):
        out.append(tokens)
        if on_token is not None:
            on_token(tokens)
    if not out:
        return start.new_zeros((start.size(0), 0))
    return torch.stack(out, dim=1)  # (N, L)


def _strip(rows: torch.Tensor, eos_id: int | None) -> list[list[int]]:
    result = []
    for row in rows.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        result.append(row)
    return result


def greedy(decoder: Decoder, state: State, start: torch.Tensor, max_len: int | torch.Tensor,
           eos_id: int | None) -> list[list[int]]:
    """The most likely token at every step, until `eos_id` or each row's `max_len`; ids exclude eos."""
    _check_limit(max_len)
    limits = _limits(max_len, start.size(0), start.device)  # (N,)
    tokens = start
    done = limits <= 0  # (N,)
    out: list[torch.Tensor] = []
    for t in range(int(limits.max()) if limits.numel() else 0):
        logits, state = decoder.step(tokens, state)  # (N, V)
        tokens = logits.argmax(-1)  # (N,)
        fill = eos_id if eos_id is not None else 0
        tokens = tokens.masked_fill(done, fill)
        out.append(tokens)
        done = done | (limits <= t + 1)
        if eos_id is not None:
            done = done | (tokens == eos_id)
        if bool(done.all()):
            break
    if not out:
        return [[] for _ in range(start.size(0))]
    ids = torch.stack(out, dim=1)  # (N, L)
    rows = [r[:n] for r, n in zip(ids.tolist(), limits.tolist())]  # each row cut at its own limit
    return [r[: r.index(eos_id)] if eos_id is not None and eos_id in r else r for r in rows]


def beam_search(decoder: Decoder, state: State, start: torch.Tensor, beam_size: int,
                max_len: int | torch.Tensor, eos_id: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Batched beam search; returns the best hypothesis of each row (ids without eos).

    Hypotheses are ranked by sum of log-probabilities / length ** length_penalty (length counts the eos).
    A finished beam keeps its slot and score while the others extend; the search stops early when every
    beam of every row has finished, and a row's beams are forced to end after `max_len` tokens. With
    beam_size=1 this is exactly greedy decoding.
    """
    check_decoding(beam=beam_size)
    _check_limit(max_len)
    n, k, device = start.size(0), beam_size, start.device
    limits = _limits(max_len, n, device).clamp(min=0)  # (N,) tokens before the forced eos
    state = decoder.reorder(state, torch.arange(n, device=device).repeat_interleave(k))
    tokens = start.repeat_interleave(k)  # (N*k,)
    scores = torch.full((n, k), float("-inf"), device=device)  # (N, k) summed log-probs
    scores[:, 0] = 0.0  # only the first beam is live at the start, so the k beams do not start as copies
    lengths = torch.zeros((n, k), device=device)  # (N, k)
    finished = torch.zeros((n, k), dtype=torch.bool, device=device)  # (N, k)
    history = torch.empty((n, k, 0), dtype=torch.long, device=device)  # (N, k, t)
    for t in range(int(limits.max()) + 1):
        logits, state = decoder.step(tokens, state)  # (N*k, V)
        logp = logits.float().log_softmax(-1).view(n, k, -1)  # (N, k, V)
        vocab = logp.size(-1)
        # a finished beam can only "emit" eos at no cost, so it carries its score forward unchanged
        only_eos = torch.full_like(logp[0, 0], float("-inf"))  # (V,)
        only_eos[eos_id] = 0.0
        force_end = finished | (t >= limits)[:, None]  # (N, k)
        ended_logp = torch.where(finished[..., None], only_eos, logp)  # (N, k, V)
        # at the row's length limit an unfinished beam must end now: eos at its own log-probability
        at_limit = (~finished & force_end)[..., None]  # (N, k, 1)
        eos_logp = logp[..., eos_id:eos_id + 1]  # (N, k, 1)
        ended_logp = torch.where(at_limit, only_eos + eos_logp, ended_logp)  # (N, k, V)
        cand = scores[..., None] + ended_logp  # (N, k, V)
        cand_len = (lengths + (~finished).float())[..., None]  # (N, k, 1)
        norm = cand / cand_len.clamp(min=1) ** length_penalty  # (N, k, V)
        _, flat = norm.view(n, -1).topk(k, dim=-1)  # (N, k)
        beam, token = flat // vocab, flat % vocab  # (N, k)
        scores = cand.view(n, -1).gather(1, flat)  # (N, k)
        lengths = cand_len.squeeze(-1).gather(1, beam)  # (N, k)
        finished = finished.gather(1, beam) | (token == eos_id)  # (N, k)
        history = torch.cat([history.gather(1, beam[..., None].expand(-1, -1, history.size(-1))),
                             token[..., None]], dim=-1)  # (N, k, t+1)
        rows = (torch.arange(n, device=device)[:, None] * k + beam).reshape(-1)  # (N*k,)
        state = decoder.reorder(state, rows)
        tokens = token.reshape(-1)  # (N*k,)
        if bool(finished.all()):
            break
    final = scores / lengths.clamp(min=1) ** length_penalty  # (N, k)
    final = final.masked_fill(~torch.isfinite(scores), float("-inf"))
    best = final.argmax(-1)  # (N,)
    best_rows = history[torch.arange(n, device=device), best]  # (N, L)
    return _strip(best_rows, eos_id)
