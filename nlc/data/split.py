"""The train/validation split rule, shared by corpora and by ``nlc data ls`` (no torch).

Each document is tokenized on its own; of its n tokens the last ``floor(n / 20)`` (5%)
are validation, the first ``n - floor(n / 20)`` train. No randomness: the same split on
every machine, and every position is in exactly one split.
"""
from __future__ import annotations

VAL_DENOMINATOR = 20  # the last 1/20 of every document is validation


def split_point(tokens: int) -> int:
    """Where a document of ``tokens`` tokens is cut: ``[0, cut)`` train, ``[cut, tokens)`` val."""
    return tokens - tokens // VAL_DENOMINATOR
