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
