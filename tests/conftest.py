"""Shared test fixtures: the real-data mirror (skipped when absent) and seeding."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch


def mirror_dir() -> Path | None:
    """The local Hugging Face mirror named by SEQNLP_DATA_DIR, if it exists."""
    value = os.environ.get("SEQNLP_DATA_DIR")
    if value and Path(value).is_dir():
        return Path(value)
    guess = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return guess if guess.is_dir() else None


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Path of the real-data mirror, exported as SEQNLP_DATA_DIR; skips the test when there is none."""
    path = mirror_dir()
    if path is None:
        pytest.skip("real-data mirror not found: set SEQNLP_DATA_DIR to a folder laid out like ../shared/data")
    monkeypatch.setenv("SEQNLP_DATA_DIR", str(path))
    return path


@pytest.fixture(autouse=True, scope="session")
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """datasets keeps an Arrow copy of every csv/json file it reads; keep the tests' copies out of ~/.cache."""
    import datasets

    folder = tmp_path_factory.mktemp("hf_datasets_cache")
    old_env, old_cache = os.environ.get("HF_DATASETS_CACHE"), datasets.config.HF_DATASETS_CACHE
    os.environ["HF_DATASETS_CACHE"] = str(folder)  # subprocess tests inherit it
    datasets.config.HF_DATASETS_CACHE = folder
    yield
    datasets.config.HF_DATASETS_CACHE = old_cache
    if old_env is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = old_env


# What precision="auto" picks is measured on the machine (seqnlp.precision); tests fix it instead, the same on
# every machine, and keep any cache file out of the user's folder. Subprocess tests inherit both.
FIXED_PRECISION = "lstm=bf16,gru=fp32,rnn_tanh=fp32,rnn_relu=fp32,linear=bf16,lstm_fp32=onednn"


@pytest.fixture(autouse=True, scope="session")
def _fixed_precision(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    saved = {k: os.environ.get(k) for k in ("SEQNLP_AUTO_PRECISION", "SEQNLP_CACHE_DIR")}
    os.environ["SEQNLP_AUTO_PRECISION"] = FIXED_PRECISION
    os.environ["SEQNLP_CACHE_DIR"] = str(tmp_path_factory.mktemp("seqnlp_cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    random.seed(0)
    torch.manual_seed(0)
