"""sample_batch: shapes, next-token targets, windows inside the stream, determinism."""
from __future__ import annotations

import pytest
import torch

from nlc.data import sample_batch
from nlc.errors import NLCError


def stream(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64)


def test_shapes_dtype_and_next_token_targets():
    tokens = torch.arange(100, dtype=torch.uint8)
    x, y = sample_batch(tokens, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # contiguous windows of the stream 0..99


def test_windows_cover_every_start_and_stay_inside():
    n, seq_len = 20, 4
    x, y = sample_batch(stream(n), 2000, seq_len, torch.Generator().manual_seed(1))
    starts = x[:, 0]
    assert set(starts.tolist()) == set(range(n - seq_len))  # uniform over 0 .. N-T-1
    assert int(y.max()) == n - 1


def test_same_generator_state_same_batch():
    a = sample_batch(stream(1000), 4, 32, torch.Generator().manual_seed(7))
    b = sample_batch(stream(1000), 4, 32, torch.Generator().manual_seed(7))
    c = sample_batch(stream(1000), 4, 32, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_exact_fit_and_too_short():
    x, y = sample_batch(stream(5), 3, 4, torch.Generator().manual_seed(0))
    assert x.tolist() == [[0, 1, 2, 3]] * 3 and y.tolist() == [[1, 2, 3, 4]] * 3
    with pytest.raises(NLCError, match="at least 6 tokens"):
        sample_batch(stream(5), 1, 5)
    with pytest.raises(NLCError, match="1-D"):
        sample_batch(stream(10).view(2, 5), 1, 2)
