"""Where to run and in which precision: one answer for the whole library."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch

from seqnlp.errors import SeqnlpError
from seqnlp.precision import choose_bf16, compare


_DEVICE = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (N a present GPU).

    Anything else (mps, xla, meta, a typo) is a one-line SeqnlpError: seqnlp is tested on CPU and CUDA only,
    and a 'meta' device would silently compute nothing.
    """
    if not isinstance(name, str):
        raise SeqnlpError(f"device must be a string such as auto, cpu, cuda or cuda:0, not {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = _DEVICE.fullmatch(name)
    if match is None:
        raise SeqnlpError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise SeqnlpError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise SeqnlpError(f"--device {name} was asked for but this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{count - 1})")
    return torch.device(name)


def bf16_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds up the matrix work around the recurrences (embeddings, linear layers) on `device`.

    CUDA: whenever the GPU supports bf16. CPU: measured once per CPU model (seqnlp.precision): a linear
    layer's forward and backward, fp32 against bf16 autocast. (CPU flags do not answer it: avx512_bf16 alone
    pays much less than AMX.)
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    threads = torch.get_num_threads()
    return choose_bf16("linear", {"rows": _LINEAR_PROBE[0], "in": _LINEAR_PROBE[1], "out": _LINEAR_PROBE[2],
                                  "threads": threads}, device, _probe_linear)


# A (tokens, in) x (in, out) product of the size a vocabulary projection or a pooled head sees per batch.
_LINEAR_PROBE = (2048, 256, 1024)


def _probe_linear() -> tuple[float, float]:
    """fp32 and bf16-autocast seconds of a linear layer's forward and backward on the CPU (a few ms each)."""
    rows, width, out = _LINEAR_PROBE
    # Its own generator: the global RNG stays untouched, so a run trains the same whether the probe ran or not.
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():  # the first caller may be an evaluation
        x = torch.randn(rows, width, generator=generator)  # (N, In)
        weight = torch.randn(out, width, generator=generator).mul_(width ** -0.5).requires_grad_()  # (Out, In)

        def run(bf16: bool) -> None:
            with autocast("cpu", bf16):
                torch.nn.functional.linear(x, weight).float().square().mean().backward()
            weight.grad = None

        return compare(lambda: run(False), lambda: run(True))


def use_bf16(precision: str, device: torch.device | str) -> bool:
    """Resolve a precision setting ('auto' | 'fp32' | 'bf16') to whether bf16 autocast is on."""
    if precision not in ("auto", "fp32", "bf16"):
        raise SeqnlpError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return precision == "bf16" or (precision == "auto" and bf16_fast(device))


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool) -> Iterator[None]:
    """bf16 autocast on `device` when enabled; a no-op otherwise."""
    device = torch.device(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


# glibc mallopt() parameters, and how much freed memory malloc keeps for reuse (see keep_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
ENV_KEEP_FREED = "SEQNLP_KEEP_FREED_MEMORY"
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_kept: bool | None = None
_libc: Any = None  # the C library keep_freed_memory set up, for FreedMemory


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory(libc: Any = None) -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the OS; whether it now does.

    By default glibc hands large blocks (an LSTM kernel's workspace, say) back to the OS on free and trims
    its heap, so each training step faults the same pages in again, zeroed: on a 2-core AMD
    EPYC an SST-2 step took ~1,900 page faults and 10% of its CPU time in the OS. Raising both thresholds to
    KEEP_FREED_BYTES ends that (what jemalloc or tcmalloc, preloaded, would also do). Process-wide, once;
    skipped where the allocator is not glibc's, where the user set glibc's own MALLOC_*_ thresholds, or
    where SEQNLP_KEEP_FREED_MEMORY=0. `libc`: the C library to call (tests pass a stand-in).
    """
    global _kept
    if libc is None and _kept is not None:
        return _kept
    own = libc is None
    kept = False
    if os.environ.get(ENV_KEEP_FREED, "1") != "0" and not any(name in os.environ for name in _GLIBC_ENV):
        if libc is None and _glibc():
            with contextlib.suppress(OSError):
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc is not None:
            kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and \
                bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    if own:
        global _libc
        _kept, _libc = kept, libc if kept else None
    return kept


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (Linux's /proc); None where the system does not say."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class FreedMemory:
    """The bound on what keep_freed_memory keeps: `check()` (once a training step) hands freed memory back to
    the OS (glibc's malloc_trim) when the process has grown by more than `limit` bytes since the last time, and
    `release()` does it at once (the end of a training). Kept memory can pile up: glibc serves posix_memalign
    (torch's allocator) by splitting a larger free block, so a freed block often cannot serve the next request
    of its own size and the heap grows instead. An IMDB classifier gathering cached reader states into batches
    of many lengths grew by ~130 MB a step, until the 24 GiB machine killed it.
    """

    def __init__(self, libc: Any, resident: Callable[[], int | None] = resident_bytes,
                 limit: int = KEEP_FREED_BYTES) -> None:
        self.libc, self.resident, self.limit = libc, resident, limit
        self.base: int | None = None  # resident bytes after the last release (or the least seen since)
        self.releases = 0

    @classmethod
    def kept(cls) -> FreedMemory | None:
        """The bound for this process's own keep_freed_memory(); None where it keeps nothing."""
        return cls(_libc) if keep_freed_memory() and _libc is not None else None

    def check(self) -> bool:
        """Release freed memory if the process grew by more than `limit` since the last release; whether it did."""
        now = self.resident()
        if now is None:
            return False
        if self.base is None or now < self.base:
            self.base = now
            return False
        if now - self.base <= self.limit:
            return False
        self.release()
        return True

    def release(self) -> None:
        self.libc.malloc_trim(0)
        self.releases += 1
        self.base = self.resident()
