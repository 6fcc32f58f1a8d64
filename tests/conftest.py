"""Shared test set-up: deterministic torch, seeded RNGs, hypothesis profiles.

One intra-op thread (``OMP_NUM_THREADS=1``, inherited by the subprocesses tests start):
the tests' tensors are tiny, and on a shared 2-core machine a second spinning OpenMP thread
makes them many times slower.

Profiles: ``ci`` (default; few examples, no deadline, derandomized so CI is
repeatable) and ``dev`` (more examples). Select with ``HYPOTHESIS_PROFILE=dev``.
"""
from __future__ import annotations

import os
import random

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before anything imports torch

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Every torch test runs on one intra-op thread (see the module docstring), even when
    ``OMP_NUM_THREADS`` says otherwise; the setting is restored afterwards."""
    import sys

    if "torch" not in sys.modules:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    # a model verb invoked in-process (CliRunner) flushes subnormals for the process
    # (nlc.subnormals); the tests after it compute with torch's default numerics
    torch.set_flush_denormal(False)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state (python, numpy, torch if loaded)."""
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover
        pass
    import sys

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(0)
    yield
