"""Subnormal floats flushed to zero in the processes nlc's commands start.

Why: a memory whose retention gates forget faster than its updates write decays its
weights geometrically along the sequence; past about 2,000 tokens the fp32 values fall
below the smallest normal float (1.18e-38) and every CPU multiply that touches them takes
a slow microcode path. Measured with ``python benchmarks/scaling.py --rules titans
--seqs 2048 [--flush-denormal]``: the Titans block's fwd+bwd is about 5x faster with
subnormals flushed. Flushing changes only values below 1.18e-38 (to 0); GPUs already run
their fast paths this way.

Invariant: the x86 flush-to-zero / denormals-are-zero bits live in each thread's
floating-point environment, and a new thread copies its creator's. Set before torch
creates its intra-op thread pool (its first parallel op), the flag reaches every thread;
set later it reaches the calling thread only. So the verbs that run models call
:func:`flush_subnormals` before any tensor work, as do the worker processes they spawn.
"""
from __future__ import annotations


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero on this thread and on the threads it creates from now
    on; False where the CPU cannot (then nothing changes)."""
    import torch  # lazy: keeps ``import nlc`` and the spec-only verbs free of torch

    return bool(torch.set_flush_denormal(True))
