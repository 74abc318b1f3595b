"""Safe file I/O for run folders: atomic writes, size-limited JSON, weights only through safetensors.

Nothing here unpickles: configs and tokenizers are JSON, weights are safetensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqnlp.errors import SeqnlpError

MAX_JSON_BYTES = 64 * 1024 * 1024  # config/tokenizer/trainer-state files larger than this are refused


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files and rename keeps the mode; run folders should read like any other file.
_FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp)` on a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    A crash at any moment leaves either the old file or the new one; any OSError (read-only folder, disk
    full) becomes a one-line SeqnlpError and leaves no temporary file behind.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(err, OSError):
            raise SeqnlpError(f"could not write {path}: {err.strerror or err}; check free space and permissions") from err
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves either the old file or the new one."""
    _write_atomically(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented UTF-8 JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode())


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file, refusing missing, oversized or corrupt files with a one-line SeqnlpError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SeqnlpError(f"{path} does not exist") from None
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror}") from None
    if size > max_bytes:
        raise SeqnlpError(f"{path} is {size} bytes, over the {max_bytes}-byte limit for JSON files; is it the right file?")
    if path.is_dir():
        raise SeqnlpError(f"{path} is a folder, not a JSON file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SeqnlpError(f"{path} is not valid JSON ({err}); the file is corrupt or truncated") from None


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically save a flat dict of tensors as safetensors (tensors are made contiguous and detached)."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _write_atomically(Path(path), lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU, with a one-line SeqnlpError for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise SeqnlpError(f"{path} does not exist; is this a seqnlp run folder?")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise SeqnlpError(f"{path} is not a readable safetensors file ({err}); the file is corrupt or truncated") from None
