"""User-facing errors: one clear line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int])


class SeqnlpError(Exception):
    """A problem with the user's input or files, with a message that names the problem and the fix.

    Raised anywhere in the library; command-line entry points turn it into one line on stderr
    and exit status 2. Library users catch it like any exception.
    """


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a failed allocation: MemoryError, or torch's RuntimeError for one (CPU or CUDA)."""
    text = str(err)
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text))


def cli_main(func: F) -> F:
    """Wrap a `main(argv) -> int` so that SeqnlpError and Ctrl-C end with one line, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **kwargs)
        except SeqnlpError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except (MemoryError, RuntimeError) as err:
            # torch reports failed allocations as RuntimeError (CPU) or OutOfMemoryError (CUDA, a subclass).
            if not is_out_of_memory(err):
                raise
            print("error: out of memory: the model or batch does not fit; use a smaller --hidden-size, "
                  "--embedding-size, --vocab-size or --batch-size", file=sys.stderr)
            return 2

    return wrapper  # type: ignore[return-value]


V = TypeVar("V")


def check_finite(values: V, what: str) -> V:
    """Return `values` unchanged when every number in it is finite; else a SeqnlpError naming `what`.

    `values` is a tensor (any dtype or device; integer tensors are always finite), a NumPy array, a float,
    or a (nested) sequence of numbers. The message reads "`what` produced non-finite outputs (NaN/inf): ..."
    with how many values are bad and the first of them, e.g.

        check_finite(logits, "the model")  # the model produced non-finite outputs (NaN/inf): 3 of 40 ...
    """
    bad, total, first_index, first_value = _non_finite(values)
    if bad:
        raise SeqnlpError(f"{what} produced non-finite outputs (NaN/inf): {bad} of {total} values, the first at "
                          f"index {first_index} is {first_value}; the weights or inputs are broken, or the "
                          "model diverged (try a lower --lr, or --precision fp32)")
    return values


def _non_finite(values: object) -> tuple[int, int, int, float]:
    """(bad count, total count, flat index of the first bad value, that value)."""
    if hasattr(values, "detach") and hasattr(values, "is_floating_point"):  # a torch tensor, without importing torch
        t = values.detach()  # type: ignore[attr-defined]
        if not (t.is_floating_point() or t.is_complex()):
            return 0, int(t.numel()), -1, 0.0
        flat = t.reshape(-1)
        import torch

        bad_mask = ~torch.isfinite(flat)
        bad = int(bad_mask.sum())
        if not bad:
            return 0, int(flat.numel()), -1, 0.0
        index = int(bad_mask.nonzero()[0, 0])
        return bad, int(flat.numel()), index, float(flat[index].float().item()) if not t.is_complex() else float("nan")
    import numpy as np

    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SeqnlpError(f"check_finite needs numbers, not {type(values).__name__} ({err})") from None
    bad_mask = ~np.isfinite(arr)
    bad = int(bad_mask.sum())
    if not bad:
        return 0, int(arr.size), -1, 0.0
    index = int(np.flatnonzero(bad_mask)[0])
    return bad, int(arr.size), index, float(arr[index])
