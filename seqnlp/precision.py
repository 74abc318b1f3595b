"""precision="auto", decided by measurement on the machine at hand, once per machine and layer shape.

Whether bf16 autocast pays depends on the CPU more than on the model: on an Intel Xeon with AMX a bf16
bi-LSTM runs about twice its fp32 speed, while on an AMD EPYC with avx512_bf16 but no AMX the LSTM gains less
and a GRU gains more than on the Xeon. No rule read off CPU flags holds on both, so "auto" times a short
forward+backward of the actual layer shape in fp32 and in bf16 (interleaved repetitions, the fastest of each), keeps the
faster one (bf16 must win by `MARGIN`: on a tie fp32's exactness wins), and remembers the answer in a JSON file
keyed by the device model and torch version, so a machine measures each shape once.

    SEQNLP_CACHE_DIR        the cache folder (else $XDG_CACHE_HOME/seqnlp, else ~/.cache/seqnlp)
    SEQNLP_AUTO_PRECISION   fix the decision instead of measuring: "bf16" or "fp32" for every precision, or
                            per kind, e.g. "lstm=bf16,gru=fp32,linear=bf16" (a kind not named is measured)

Kinds: a recurrent cell name ("lstm", "gru", "rnn_tanh", "rnn_relu"; seqnlp.encoders.RNNEncoder), "linear"
(the autocast around a whole model: seqnlp.device.bf16_fast), and "lstm_fp32": which kernel runs an fp32 LSTM
on the CPU, oneDNN's or PyTorch's own (oneDNN's wins on large batches, the native one on small ones; where
the line falls depends on the CPU).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from seqnlp.errors import SeqnlpError

CACHE_FILE = "precision.json"
ENV_CACHE = "SEQNLP_CACHE_DIR"
ENV_FIXED = "SEQNLP_AUTO_PRECISION"
# Each kind and its two options, the first the default (kept on a tie).
KINDS = {"lstm": ("fp32", "bf16"), "gru": ("fp32", "bf16"), "rnn_tanh": ("fp32", "bf16"),
         "rnn_relu": ("fp32", "bf16"), "linear": ("fp32", "bf16"), "lstm_fp32": ("onednn", "native")}
MARGIN = 1.05  # bf16 is chosen only when fp32 takes at least this many times as long
_VERSION = 1
_MAX_CACHE_BYTES = 1 << 20
_memo: dict[tuple[str, str], str] = {}


def cache_path() -> Path:
    """The decision cache: $SEQNLP_CACHE_DIR, else $XDG_CACHE_HOME/seqnlp, else ~/.cache/seqnlp; precision.json."""
    folder = os.environ.get(ENV_CACHE)
    if not folder:
        xdg = os.environ.get("XDG_CACHE_HOME")
        folder = str(Path(xdg) / "seqnlp") if xdg else str(Path.home() / ".cache" / "seqnlp")
    return Path(folder) / CACHE_FILE


@functools.cache
def device_model(device: torch.device) -> str:
    """What the device is, as its maker names it: the CPU's "model name", or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from seqnlp.results import cpu_model

    return cpu_model()


def machine_key(device: torch.device | str) -> str:
    """The cache's key for a machine: device model and torch version (a new torch may change its kernels)."""
    return f"{device_model(torch.device(device))} | torch {torch.__version__}"


def fixed_choice(kind: str) -> str | None:
    """The option SEQNLP_AUTO_PRECISION fixes for `kind`, or None to measure."""
    value = os.environ.get(ENV_FIXED, "").strip()
    if not value:
        return None
    choice: str | None = None
    for part in value.split(","):
        name, sep, setting = part.strip().rpartition("=")
        if not sep:
            name, setting = "*", part.strip()
        valid = ("fp32", "bf16") if name == "*" else KINDS.get(name, ())
        if setting not in valid:
            pairs = "; ".join(f"{k}={'|'.join(v)}" for k, v in KINDS.items())
            raise SeqnlpError(f"{ENV_FIXED}={value!r}: use bf16 or fp32 for every precision, or kind=option pairs "
                              f"separated by commas ({pairs})")
        if name == kind or (name == "*" and choice is None and setting in KINDS.get(kind, ())):
            choice = setting
    return choice


def compare(fp32: Callable[[], Any], bf16: Callable[[], Any], *, min_repeats: int = 3, max_repeats: int = 9,
            budget_s: float = 0.6, timer: Callable[[], float] = time.perf_counter,
            sync: Callable[[], Any] = lambda: None) -> tuple[float, float]:
    """Fastest seconds of one call of fp32() and of bf16(), after a warm-up call of each.

    The two alternate, and which one goes first alternates too, so load that drifts during the probe falls on
    both; the fastest call counts because other processes only ever add time (a busy shared machine made
    single calls up to 30x slower). Repetitions continue past `min_repeats` while the timed part has taken
    under `budget_s`.
    """
    fp32()
    bf16()
    sync()
    times: dict[int, list[float]] = {0: [], 1: []}
    begin = timer()
    while len(times[0]) < max_repeats and (len(times[0]) < min_repeats or timer() - begin < budget_s):
        order = (0, 1) if len(times[0]) % 2 == 0 else (1, 0)
        for which in order:
            start = timer()
            (fp32 if which == 0 else bf16)()
            sync()
            times[which].append(timer() - start)
    return min(times[0]), min(times[1])


def _entry_name(kind: str, sizes: Mapping[str, Any]) -> str:
    return " ".join([kind, *(f"{k}={v}" for k, v in sizes.items())])


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's contents; {} for a missing, unreadable or damaged file (it is rewritten on the next store)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_CACHE_BYTES + 1)
        data = json.loads(raw) if len(raw) <= _MAX_CACHE_BYTES else None
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("machines"), dict):
        return {}
    return data


def _lookup(data: dict[str, Any], machine: str, entry: str, options: tuple[str, str]) -> str | None:
    record = data.get("machines", {}).get(machine)
    record = record.get(entry) if isinstance(record, dict) else None
    if isinstance(record, dict) and record.get("choice") in options:
        return record["choice"]
    return None


def _store(path: Path, machine: str, entry: str, record: dict[str, Any]) -> None:
    """Add one decision to the cache file (re-read first, so entries other processes wrote stay)."""
    from seqnlp.io import atomic_write_json

    data = _read_cache(path) or {"version": _VERSION, "machines": {}}
    machines = data["machines"]
    if not isinstance(machines.get(machine), dict):
        machines[machine] = {}
    machines[machine][entry] = record
    try:
        atomic_write_json(path, data)
    except SeqnlpError:  # a read-only or full home folder costs a re-measurement next time, nothing else
        pass


def choose(kind: str, sizes: Mapping[str, Any], device: torch.device | str,
           measure: Callable[[], tuple[float, float]]) -> str:
    """Which of `kind`'s two options (KINDS) runs `kind` at `sizes` faster on `device`.

    Answered by SEQNLP_AUTO_PRECISION when it names the kind, else by this process's earlier answer, else by
    the cache file, else by `measure()` (→ seconds of the first option, of the second), whose answer is then
    cached. The second option must be faster by MARGIN.
    """
    options = KINDS[kind]
    fixed = fixed_choice(kind)
    if fixed is not None:
        return fixed
    machine, entry = machine_key(device), _entry_name(kind, sizes)
    path = cache_path()
    key = (f"{path}|{machine}", entry)
    if key in _memo:
        return _memo[key]
    found = _lookup(_read_cache(path), machine, entry, options)
    if found is None:
        first_s, second_s = measure()
        found = options[1] if second_s * MARGIN < first_s else options[0]
        _store(path, machine, entry, {"choice": found, f"{options[0]}_ms": round(1e3 * first_s, 3),
                                      f"{options[1]}_ms": round(1e3 * second_s, 3),
                                      "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    _memo[key] = found
    return found


def choose_bf16(kind: str, sizes: Mapping[str, Any], device: torch.device | str,
                measure: Callable[[], tuple[float, float]]) -> bool:
    """Whether `kind` at `sizes` runs faster in bf16 than in fp32 on `device` (`choose`; measure → fp32 s, bf16 s)."""
    return choose(kind, sizes, device, measure) == "bf16"


def recurrence(own: str, run: str) -> str:
    """The precision an encoder runs its recurrence in: the task's own setting ("auto" measures) unless the
    run's --precision fixes one, so --precision fp32 means fp32 throughout."""
    return own if run == "auto" else run


def forget() -> None:
    """Drop this process's remembered decisions (the cache file stays): the next ones are looked up again."""
    _memo.clear()

