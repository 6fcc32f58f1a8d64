"""Shared fixtures of the training tests: the tiny two-clock spec and a small real text."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def text_data():
    """Real English text held in memory (the project's design document, UTF-8 bytes),
    split 90/10: the minimal data object ``nlc.train`` accepts (train, val, vocab)."""
    raw = torch.tensor(list((REPO / "docs" / "design.md").read_bytes()), dtype=torch.uint8)
    cut = int(raw.numel() * 0.9)
    return SimpleNamespace(name="design-doc", train=raw[:cut], val=raw[cut:], vocab=256)



def subprocess_env() -> dict[str, str]:
    """The environment of ``nlc`` subprocesses: one thread each, as tests/conftest.py gives the tests themselves."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
