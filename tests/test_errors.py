import pytest

from seqnlp.errors import SeqnlpError, cli_main


@pytest.mark.parametrize("exc,code,needle", [
    (SeqnlpError("bad --x; use 1"), 2, "error: bad --x; use 1"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 16000000000000 bytes"), 2, "error: out of memory"),
    (MemoryError(), 2, "error: out of memory"),
])
def test_cli_main_turns_user_errors_into_one_line(exc, code, needle, capsys):
    @cli_main
    def main() -> int:
        raise exc

    assert main() == code
    err = capsys.readouterr().err
    assert err.strip() == err.strip().splitlines()[0] and needle in err


def test_cli_main_lets_programming_errors_through():
    @cli_main
    def main() -> int:
        raise RuntimeError("shape mismatch in a bug")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        main()
