"""Passkey retrieval (Mohtashami & Jaggi 2023, *Landmark Attention*), byte level.

Reference: epfml/landmark-attention ``llama/run_test.py::generate_prompt``. Per example,
with G = the filler's size in characters (bytes: the text is ASCII):

* ``key`` uniform in ``1 .. 50000``; info line
  ``The pass key is {key}. Remember it. {key} is the pass key.``
* ``garbage = " ".join([NOISE] * K)``; ``prefix = garbage[:P]``, ``suffix = garbage[:G − P]``
  (both from the start), P uniform in ``0 .. G`` or ``int(G · depth)`` for a depth sweep.
* prompt ``"\\n".join([TASK, prefix, info, suffix, QUESTION])``; the answer is the key,
  after one space (the model would continue ``... The pass key is`` with `` 12345``).

Deviations: the reference fixes G and lets the prompt length follow; here G is chosen so
the example is exactly ``seq_len`` tokens. The reference scores the first integer in ten
greedily generated tokens; here the key's digits must all be the argmax under teacher
forcing (per-example exact match, equal to greedy exact match; see :mod:`.batch`).
Titans' S-NIAH-PK column is this task.
"""
from __future__ import annotations

from functools import partial

import torch

from .batch import TaskBatch, require, seeded
from .haystack import NOISE, repeated
from .text import fit, text_batch

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
        "memorize them. I will quiz you about the important information there.")
QUESTION = "What is the pass key? The pass key is"


def prefix_size(garbage_size: int, uniform: float, depth: float | None) -> int:
    """Filler bytes before the info line: ``int(G · depth)`` for a fixed depth, else uniform
    in ``0 .. G`` (the reference's ``randint(0, G)``) from ``uniform`` in [0, 1)."""
    if depth is not None:
        return int(garbage_size * depth)
    return min(int(uniform * (garbage_size + 1)), garbage_size)


def passkey_example(key: int, uniform: float, depth: float | None,
                    garbage_size: int) -> tuple[str, str]:
    """(prompt, answer) with ``garbage_size`` filler bytes around the info line."""
    before = prefix_size(garbage_size, uniform, depth)
    prefix = repeated(NOISE, " ", before)
    suffix = repeated(NOISE, " ", garbage_size - before)
    info = f"The pass key is {key}. Remember it. {key} is the pass key."
    return "\n".join([TASK, prefix, info, suffix, QUESTION]), str(key)


def passkey(num_examples: int, seq_len: int, generator: torch.Generator | int, *,
            depth: float | None = None) -> TaskBatch:
    """N passkey prompts of exactly ``seq_len`` bytes; ``depth`` in [0, 1] fixes where the
    key sits (as a fraction of the filler), else it is uniform as in the reference."""
    require(num_examples >= 1, f"num_examples must be >= 1, got {num_examples}")
    require(depth is None or 0.0 <= depth <= 1.0, f"depth must be in [0, 1], got {depth}")
    gen = seeded(generator)
    examples = []
    for _ in range(num_examples):
        key = int(torch.randint(1, 50001, (), generator=gen))
        uniform = float(torch.rand((), dtype=torch.float64, generator=gen))
        examples.append(fit(partial(passkey_example, key, uniform, depth), seq_len, "passkey"))
    return text_batch("passkey", examples)
