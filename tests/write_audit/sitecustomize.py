"""Test instrumentation for the torchrun tests (tests/test_distributed.py), loaded at interpreter start-up when
this folder is on PYTHONPATH: with SEQNLP_TEST_WRITE_LOG=DIR every process logs, through an audit hook
(sys.addaudithook), each path it opens for writing, renames or links onto, or removes, into DIR/rank<RANK>.<pid>.log.
Writes made in native code show too, since seqnlp writes every file atomically (a temporary file renamed over it).

With SEQNLP_TEST_SIGINT_AT=PATH, rank 0 sends itself SIGINT (a Ctrl-C) the first time a file is renamed onto PATH.
"""

import os
import signal
import sys

_LOG = os.environ.get("SEQNLP_TEST_WRITE_LOG")
if _LOG:
    _rank = os.environ.get("RANK", "none")
    _fd = os.open(os.path.join(_LOG, f"rank{_rank}.{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _stop = [os.environ.get("SEQNLP_TEST_SIGINT_AT")]
    _WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    os.write(_fd, b"start\n")

    def _log(path: object) -> str:
        name = os.path.abspath(os.fsdecode(path))
        os.write(_fd, f"write {name}\n".encode())
        return name

    def _hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, (str, bytes, os.PathLike)) and (
                    any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITES)):
                _log(path)
        elif event in ("os.rename", "os.link"):  # os.replace raises os.rename
            name = _log(args[1])
            if _stop[0] and _rank == "0" and event == "os.rename" and name == os.path.abspath(_stop[0]):
                _stop[0] = None
                os.kill(os.getpid(), signal.SIGINT)
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.truncate"):
            if isinstance(args[0], (str, bytes, os.PathLike)):
                _log(args[0])

    sys.addaudithook(_hook)
