import json
import os

import pytest
import torch

from seqnlp import io
from seqnlp.errors import SeqnlpError


def test_atomic_json_round_trip_leaves_no_temp_files(tmp_path):
    io.atomic_write_json(tmp_path / "a.json", {"x": 1, "é": [1, 2]})
    assert io.read_json(tmp_path / "a.json") == {"x": 1, "é": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    io.atomic_write_json(tmp_path / "a.json", {})
    io.save_weights(tmp_path / "w.safetensors", {"x": torch.zeros(1)})
    for name in ("a.json", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    io.atomic_write_json(target, {"step": 1})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(SeqnlpError, match="No space left"):
        io.atomic_write_json(target, {"step": 2})
    assert json.loads(target.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_read_only_folder_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write to read-only folders (root)")
        with pytest.raises(SeqnlpError, match="could not write|Permission"):
            io.atomic_write_json(ro / "x.json", {})
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("content", [b"{\"a\": 1", b"\xff\xfe", b""])
def test_corrupt_or_truncated_json_is_a_clear_error(tmp_path, content):
    (tmp_path / "c.json").write_bytes(content)
    with pytest.raises(SeqnlpError, match="corrupt or truncated"):
        io.read_json(tmp_path / "c.json")


def test_oversized_json_is_refused_before_reading(tmp_path):
    (tmp_path / "big.json").write_text(json.dumps({"v": "x" * 5000}))
    with pytest.raises(SeqnlpError, match="over the 1000-byte limit"):
        io.read_json(tmp_path / "big.json", max_bytes=1000)
    with pytest.raises(SeqnlpError, match="does not exist"):
        io.read_json(tmp_path / "missing.json")


def test_weights_round_trip_and_corruption(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    io.save_weights(tmp_path / "m.safetensors", tensors)
    loaded = io.load_weights(tmp_path / "m.safetensors")
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SeqnlpError, match="corrupt or truncated"):
        io.load_weights(tmp_path / "t.safetensors")
    # a header claiming a huge size must be refused, not allocated
    (tmp_path / "h.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(SeqnlpError):
        io.load_weights(tmp_path / "h.safetensors")
    with pytest.raises(SeqnlpError, match="does not exist"):
        io.load_weights(tmp_path / "nope.safetensors")
