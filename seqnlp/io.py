"""Safe file I/O for run folders: atomic writes, size-limited JSON, weights only through safetensors.

Nothing here unpickles: configs and tokenizers are JSON, weights are safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqnlp.errors import SeqnlpError

MAX_JSON_BYTES = 64 * 1024 * 1024  # config/tokenizer/trainer-state files larger than this are refused
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024  # run files hashed to tie them to the weights (sha256_file)
_READ_CHUNK = 1024 * 1024


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


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def read_file_bytes(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refusing anything else with a one-line SeqnlpError.

    A FIFO, a device (/dev/zero, a terminal) or a socket is refused without reading from it (the file is
    opened non-blocking, so a FIFO without a writer cannot hang the open), a folder is named as one, and
    the `max_bytes` cap counts the bytes actually read: a file whose stat size is small (/proc files report
    0) or that grows while it is read is refused as soon as it passes the cap, never read to the end.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SeqnlpError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise SeqnlpError(f"{path} is a folder, not a {what}") from None
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SeqnlpError(f"{path} is a folder, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise SeqnlpError(f"{path} is {_kind(info.st_mode)}, not a regular file; give the path of a real {what}")
        too_big = (f"{path} is over the {max_bytes}-byte limit for a {what}; is it the right file?")
        if info.st_size > max_bytes:
            raise SeqnlpError(f"{path} is {info.st_size} bytes, over the {max_bytes}-byte limit for a {what}; "
                              "is it the right file?")
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            except OSError as err:
                raise SeqnlpError(f"cannot read {path}: {err.strerror or err}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise SeqnlpError(too_big)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_file(path: str | Path, max_bytes: int = MAX_ARTIFACT_BYTES) -> str:
    """Hex sha256 of the regular file `path` (read as `read_file_bytes` reads it)."""
    return hashlib.sha256(read_file_bytes(path, max_bytes)).hexdigest()


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file, refusing missing, oversized, non-regular or corrupt files with a one-line SeqnlpError."""
    path = Path(path)
    raw = read_file_bytes(path, max_bytes, "JSON file")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise SeqnlpError(f"{path} is not valid JSON ({err}); the file is corrupt or truncated") from None


def _os_error(err: SafetensorError) -> OSError | None:
    """safetensors reports a failed write (disk full, file too large) as SafetensorError: recover the OSError."""
    match = re.search(r"\(os error (\d+)\)", str(err))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically save a flat dict of tensors as safetensors (tensors are made contiguous and detached).

    A failed write (disk full, read-only folder, file size limit) is a one-line SeqnlpError and leaves the
    previous file at `path` as it was.
    """
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(flat, tmp, metadata=metadata)
        except SafetensorError as err:
            os_error = _os_error(err)
            if os_error is None:
                raise SeqnlpError(f"could not write {path}: {err}") from None
            raise os_error from None

    _write_atomically(Path(path), write)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU, with a one-line SeqnlpError for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise SeqnlpError(f"{path} is {_kind(path.stat().st_mode)}, not a regular file; "
                              "is this a seqnlp run folder?")
        raise SeqnlpError(f"{path} does not exist; is this a seqnlp run folder?")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise SeqnlpError(f"{path} is not a readable safetensors file ({err}); the file is corrupt or truncated") from None
