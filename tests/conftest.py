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


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    random.seed(0)
    torch.manual_seed(0)
