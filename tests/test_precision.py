"""precision="auto" by measurement: the timing loop on a fake clock, the decision, and its cache file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import seqnlp.device
import seqnlp.precision as precision
from seqnlp.encoders import RNNEncoder
from seqnlp.errors import SeqnlpError


@pytest.fixture
def measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Decisions measured (not fixed by the test session's SEQNLP_AUTO_PRECISION), cached in a fresh folder."""
    monkeypatch.delenv(precision.ENV_FIXED, raising=False)
    monkeypatch.setenv(precision.ENV_CACHE, str(tmp_path))
    precision.forget()
    yield tmp_path / precision.CACHE_FILE
    precision.forget()


class FakeClock:
    """A timer that only moves when a timed function runs: each call of `work(s)` takes s seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, seconds: float):  # type: ignore[no-untyped-def]
        def run() -> None:
            self.calls.append(name)
            self.now += seconds
        return run


def measure(fp32: float, bf16: float, log: list[int] | None = None):  # type: ignore[no-untyped-def]
    def run() -> tuple[float, float]:
        if log is not None:
            log.append(1)
        return fp32, bf16
    return run


def never() -> tuple[float, float]:
    raise AssertionError("measured although the answer was known")


def test_compare_interleaves_after_a_warm_up_and_takes_the_fastest() -> None:
    clock = FakeClock()
    fp32, bf16 = clock.work("a", 0.25), clock.work("b", 0.125)
    assert precision.compare(fp32, bf16, min_repeats=3, max_repeats=4, budget_s=10.0, timer=clock) == (0.25, 0.125)
    # one warm-up each, then pairs whose order alternates (drifting load falls on both sides)
    assert clock.calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]


def test_compare_counts_the_fastest_call_so_a_load_spike_does_not_decide() -> None:
    clock = FakeClock()
    slow = iter([0.5, 9.0, 9.0, 0.5])  # warm-up, then two of three timed fp32 calls hit busy moments

    def fp32() -> None:
        clock.now += next(slow, 0.5)

    assert precision.compare(fp32, clock.work("b", 0.75), min_repeats=3, max_repeats=3, budget_s=0.0,
                             timer=clock) == (0.5, 0.75)


def test_compare_stops_at_its_budget_but_not_before_min_repeats() -> None:
    clock = FakeClock()
    precision.compare(clock.work("a", 1.0), clock.work("b", 1.0), min_repeats=3, max_repeats=9, budget_s=0.5,
                      timer=clock)
    assert clock.calls.count("a") == 1 + 3


def test_the_faster_precision_wins_and_a_tie_keeps_fp32(measured: Path) -> None:
    assert precision.choose_bf16("gru", {"hidden": 8}, "cpu", measure(2.0, 1.0)) is True
    assert precision.choose_bf16("gru", {"hidden": 9}, "cpu", measure(1.0, 0.99)) is False  # inside MARGIN
    assert precision.choose_bf16("lstm", {"hidden": 8}, "cpu", measure(1.0, 1.5)) is False


def test_a_decision_is_cached_per_machine_and_read_back(measured: Path) -> None:
    calls: list[int] = []
    assert precision.choose_bf16("lstm", {"hidden": 8, "batch": 64}, "cpu", measure(3.0, 1.0, calls)) is True
    assert precision.choose_bf16("lstm", {"hidden": 8, "batch": 64}, "cpu", never) is True  # this process
    data = json.loads(measured.read_text())
    machine = precision.machine_key("cpu")
    assert torch.__version__ in machine
    assert data["machines"][machine]["lstm hidden=8 batch=64"]["choice"] == "bf16"
    precision.forget()
    assert precision.choose_bf16("lstm", {"hidden": 8, "batch": 64}, "cpu", never) is True  # from the file
    assert calls == [1]


def test_another_cpu_model_gets_its_own_entry(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "device_model", lambda device: "Intel(R) Xeon(R) Processor")
    assert precision.choose_bf16("gru", {"hidden": 8}, "cpu", measure(1.0, 2.0)) is False
    monkeypatch.setattr(precision, "device_model", lambda device: "AMD EPYC 9B14")
    calls: list[int] = []
    assert precision.choose_bf16("gru", {"hidden": 8}, "cpu", measure(3.0, 1.0, calls)) is True
    assert calls == [1]
    machines = json.loads(measured.read_text())["machines"]
    assert {m.split(" | ")[0] for m in machines} == {"Intel(R) Xeon(R) Processor", "AMD EPYC 9B14"}


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"version": 1, "machines": {"x": 3}}',
                                    b'{"version": 99, "machines": {}}', b"\xff\xfe"])
def test_a_damaged_cache_is_ignored_and_rewritten(measured: Path, damage: bytes) -> None:
    measured.write_bytes(damage)
    calls: list[int] = []
    assert precision.choose_bf16("gru", {"hidden": 8}, "cpu", measure(3.0, 1.0, calls)) is True
    assert calls == [1]
    data = json.loads(measured.read_text())
    assert data["machines"][precision.machine_key("cpu")]["gru hidden=8"]["choice"] == "bf16"


def test_an_unwritable_cache_folder_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.delenv(precision.ENV_FIXED, raising=False)
    monkeypatch.setenv(precision.ENV_CACHE, str(blocker / "cache"))  # a folder under a file: cannot exist
    precision.forget()
    assert precision.choose_bf16("gru", {"hidden": 8}, "cpu", measure(3.0, 1.0)) is True
    precision.forget()


def test_cache_folder_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(precision.ENV_CACHE, str(tmp_path / "a"))
    assert precision.cache_path() == tmp_path / "a" / "precision.json"
    monkeypatch.delenv(precision.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert precision.cache_path() == tmp_path / "xdg" / "seqnlp" / "precision.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert precision.cache_path() == tmp_path / "home" / ".cache" / "seqnlp" / "precision.json"


def test_the_environment_fixes_the_decision(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV_FIXED, "bf16")
    assert precision.choose_bf16("gru", {}, "cpu", never) is True
    monkeypatch.setenv(precision.ENV_FIXED, "gru=fp32,bf16")  # a kind's own setting beats the default
    assert precision.choose_bf16("gru", {}, "cpu", never) is False
    assert precision.choose_bf16("lstm", {}, "cpu", never) is True
    monkeypatch.setenv(precision.ENV_FIXED, "lstm=fp32")  # kinds not named are measured
    assert precision.choose_bf16("gru", {}, "cpu", measure(3.0, 1.0)) is True
    monkeypatch.setenv(precision.ENV_FIXED, "bf16,lstm_fp32=native")  # a bare precision leaves kernels alone
    assert precision.choose("lstm_fp32", {}, "cpu", never) == "native"
    monkeypatch.setenv(precision.ENV_FIXED, "bf16")
    assert precision.choose("lstm_fp32", {}, "cpu", measure(1.0, 3.0)) == "onednn"
    for bad in ("fp16", "lstn=bf16", "lstm=", "=bf16", "lstm=native", "native"):
        monkeypatch.setenv(precision.ENV_FIXED, bad)
        with pytest.raises(SeqnlpError, match="SEQNLP_AUTO_PRECISION"):
            precision.choose_bf16("lstm", {}, "cpu", never)


def test_auto_encoders_follow_their_probe(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[tuple[str, int]] = []

    def fake_probe(self: RNNEncoder, device: torch.device, rows: int) -> tuple[float, float]:
        probes.append((self.cell, rows))
        return (2.0, 1.0) if self.cell == "gru" else (1.0, 2.0)

    monkeypatch.setattr(RNNEncoder, "_probe", fake_probe)
    gru, lstm = RNNEncoder("gru", 4, 6, bidirectional=True), RNNEncoder("lstm", 4, 6)
    assert gru.uses_bf16("cpu", 64) is True and lstm.uses_bf16("cpu", 64) is False
    assert gru.uses_bf16("cpu", 50) is True  # the same bucket: no second probe
    assert gru.uses_bf16("cpu", 200) is True  # another bucket: probed once more
    assert probes == [("gru", 64), ("lstm", 64), ("gru", 256)]
    out, _ = gru(torch.randn(3, 5, 4), torch.tensor([5, 2, 1]))  # forward asks for its own batch size
    assert probes[-1] == ("gru", 16)
    entries = json.loads(measured.read_text())["machines"][precision.machine_key("cpu")]
    threads = torch.get_num_threads()
    assert f"gru input=4 hidden=6 layers=1 directions=2 batch=64 threads={threads}" in entries


def test_the_real_probe_is_short_and_leaves_the_rng_alone(measured: Path) -> None:
    encoder = RNNEncoder("lstm", 4, 6, num_layers=2, bidirectional=True)
    rng = torch.get_rng_state()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # a first call may come from anywhere
        fp32_s, bf16_s = encoder._probe(torch.device("cpu"), 16)
    assert torch.equal(torch.get_rng_state(), rng)
    assert 0 < fp32_s < 1 and 0 < bf16_s < 1
    assert all(p.grad is None for p in encoder.parameters())


def test_the_model_wide_autocast_is_measured_too(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seqnlp.device, "_probe_linear", measure(1.0, 3.0))
    assert seqnlp.device.use_bf16("auto", "cpu") is False
    assert seqnlp.device.use_bf16("bf16", "cpu") is True
    entries = json.loads(measured.read_text())["machines"][precision.machine_key("cpu")]
    assert [name.split()[0] for name in entries] == ["linear"]
    rng = torch.get_rng_state()
    fp32_s, bf16_s = seqnlp.device._probe_linear()
    assert torch.equal(torch.get_rng_state(), rng) and fp32_s > 0 and bf16_s > 0


def test_an_fp32_lstm_runs_the_kernel_measured_faster(measured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seqnlp.encoders as encoders

    probes: list[tuple[tuple, int]] = []

    def fake_probe(self: RNNEncoder, device: torch.device, rows: int, variants=None):  # type: ignore[no-untyped-def]
        probes.append((tuple(v.get("kernel") for v in variants), rows))
        return (2.0, 1.0) if rows <= 32 else (1.0, 2.0)  # native wins on few rows only

    entered: list[int] = []
    real_native = encoders.native_kernels

    def spy():  # type: ignore[no-untyped-def]
        entered.append(1)
        return real_native()

    monkeypatch.setattr(RNNEncoder, "_probe", fake_probe)
    monkeypatch.setattr(encoders, "native_kernels", spy)
    encoder = RNNEncoder("lstm", 4, 6, precision="fp32")
    lengths = torch.tensor([5, 3] * 8)  # 16 rows
    encoder(torch.randn(16, 5, 4), lengths)
    assert probes == [(("onednn", "native"), 16)] and entered == [1]
    encoder(torch.randn(64, 5, 4), torch.tensor([5, 3] * 32))
    assert probes[-1] == (("onednn", "native"), 64) and entered == [1]  # oneDNN on 64 rows
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 recurrence never asks
        RNNEncoder("lstm", 4, 6, precision="bf16")(torch.randn(16, 5, 4), lengths)
    assert len(probes) == 2


def test_benchmark_lines_name_the_cpu_and_each_parts_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqnlp.summary import describe_precision

    monkeypatch.setenv(precision.ENV_FIXED, "linear=fp32,lstm=bf16,gru=fp32")
    model = torch.nn.ModuleList([RNNEncoder("lstm", 4, 6), RNNEncoder("lstm", 4, 6), RNNEncoder("gru", 4, 6)])
    line = describe_precision(model, "cpu", "auto", 64)
    assert line == f"{precision.device_model(torch.device('cpu'))}: autocast fp32, lstm recurrence bf16, gru recurrence fp32"
    assert describe_precision(None, "cpu", "bf16").endswith(": autocast bf16")


# Freed memory kept for reuse (seqnlp.device.keep_freed_memory): glibc's malloc asked through a stand-in.


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (seqnlp.device.ENV_KEEP_FREED, *seqnlp.device._GLIBC_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_freed_memory_is_kept_below_both_thresholds(plain_env: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    assert seqnlp.device.keep_freed_memory(libc) is True
    keep = seqnlp.device.KEEP_FREED_BYTES
    assert sorted(libc.calls) == [(-3, keep), (-1, keep)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert keep >= 256 << 20  # a kernel workspace of a long batch must fit under it


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"])
def test_the_users_own_malloc_settings_are_left_alone(plain_env: pytest.MonkeyPatch, name: str) -> None:
    plain_env.setenv(name, "131072")
    libc = FakeLibc()
    assert seqnlp.device.keep_freed_memory(libc) is False
    assert libc.calls == []


def test_keeping_freed_memory_can_be_switched_off(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv(seqnlp.device.ENV_KEEP_FREED, "0")
    libc = FakeLibc()
    assert seqnlp.device.keep_freed_memory(libc) is False
    assert libc.calls == []


def test_a_refused_setting_is_reported(plain_env: pytest.MonkeyPatch) -> None:
    assert seqnlp.device.keep_freed_memory(FakeLibc(answer=0)) is False


def test_kept_memory_goes_back_once_the_process_grows_past_the_limit() -> None:
    libc, readings = FakeLibc(), iter([100, 90, 150, 190, 205, 120, 160, 140])
    freed = seqnlp.device.FreedMemory(libc, resident=lambda: next(readings), limit=100)
    # 100 is the first base, 90 lowers it; 150 and 190 are within 100 of it; 205 is past: trimmed, 120 the new base
    assert [freed.check() for _ in range(5)] == [False, False, False, False, True]
    assert libc.calls == [("trim", 0)] and freed.base == 120
    assert freed.check() is False  # 160: within 100 of 120
    freed.release()  # at the end of a training, whatever it grew by
    assert libc.calls == [("trim", 0), ("trim", 0)] and freed.base == 140 and freed.releases == 2


def test_a_process_whose_size_is_unknown_never_trims() -> None:
    libc = FakeLibc()
    freed = seqnlp.device.FreedMemory(libc, resident=lambda: None, limit=1)
    assert not any(freed.check() for _ in range(3)) and libc.calls == []


@pytest.mark.skipif(not seqnlp.device._glibc(), reason="glibc's malloc only")
def test_kept_memory_stays_bounded_when_blocks_cannot_be_reused(plain_env: pytest.MonkeyPatch) -> None:
    # Large blocks of many sizes from posix_memalign (torch's allocator), small ones left between them: with
    # the thresholds raised and no bound, this grew by ~1.3 GiB (by ~0.3 GiB with glibc's defaults).
    plain_env.setattr(seqnlp.device, "_kept", None)
    freed = seqnlp.device.FreedMemory.kept()
    assert freed is not None
    freed.limit = 256 << 20
    g = torch.Generator().manual_seed(0)
    table = torch.randn(100_000, 256)  # (N, D)
    start, alive = seqnlp.device.resident_bytes(), []
    assert start is not None
    for _ in range(150):
        rows = int(torch.randint(2_000, 120_000, (1,), generator=g))
        picked = table[torch.randint(0, 100_000, (rows,), generator=g)]  # (rows, D): 2-120 MB
        alive = [torch.cat([picked, picked], 1)[:1].clone(),
                 torch.empty(int(torch.randint(1, 1000, (1,), generator=g)) * 1000)]
        freed.check()
    assert freed.releases > 0
    assert seqnlp.device.resident_bytes() - start < freed.limit + (512 << 20)
    del alive


@pytest.mark.skipif(not seqnlp.device._glibc(), reason="glibc's malloc only")
def test_training_steps_reuse_freed_memory_without_page_faults(plain_env: pytest.MonkeyPatch) -> None:
    import resource

    torch.manual_seed(0)
    encoder = RNNEncoder("lstm", 64, 64, bidirectional=True, precision="fp32")
    x = torch.randn(128, 48, 64, requires_grad=True)  # (B, T, E)
    lengths = torch.randint(30, 49, (128,))  # (B,)

    def faults_of_a_step() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out, _ = encoder(x, lengths)
        out.sum().backward()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    plain_env.setattr(seqnlp.device, "_kept", None)
    assert seqnlp.device.keep_freed_memory() is True
    for _ in range(4):
        faults_of_a_step()
    # With the kernel's workspace handed back on every free, each step faulted ~12,000 pages in again.
    assert sum(faults_of_a_step() for _ in range(4)) < 4000
