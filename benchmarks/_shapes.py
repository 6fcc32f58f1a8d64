"""The benchmarked shapes: ``FULL`` the issue's grid, ``TINY`` the smoke test's toy version.

Notation: d width, H heads of D = d / H, C chunk.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Benchmark shapes: FULL is the issue's grid, TINY the smoke test's toy version."""

    d: int = 256
    heads: int = 4
    batch: int = 4
    deep_hidden: int = 256        # Titans memory 64 -> 256 -> 64 (and the HOPE memories)
    cms_hidden: int = 1024
    cms_periods: tuple = (16, 64, 256)
    mlp_hidden: int = 1024        # yardstick MLP
    window: int = 128             # sliding-window attention
    omega_window: int = 4
    selfmod_other: int = 16       # HOPE chunk_other (gcd with the chunk)
    seqs: tuple = (512, 2048)
    chunks: tuple = (16, 64)
    ref_seq: int = 32             # reference forms run at this length (<= 512)
    ref_chunk: int = 64

    @property
    def dh(self) -> int:
        return self.d // self.heads


FULL = Shape()
TINY = Shape(d=32, heads=2, batch=1, deep_hidden=32, cms_hidden=64, cms_periods=(4, 8, 16),
             mlp_hidden=64, window=8, selfmod_other=8, seqs=(16, 32), chunks=(4, 8),
             ref_seq=8, ref_chunk=8)
