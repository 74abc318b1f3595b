"""Where to run and in which precision: one answer for the whole library."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator

import torch

from seqnlp.errors import SeqnlpError


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


@functools.cache
def _cpu_has_fast_bf16() -> bool:
    # oneDNN uses AMX / AVX512-BF16 for bf16 GEMMs; without them bf16 autocast on CPU is slower than fp32.
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast is expected to speed up matrix work on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_fast_bf16()


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
