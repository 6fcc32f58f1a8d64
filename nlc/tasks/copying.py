"""Selective copying (Gu & Dao 2023, *Mamba*, §4.1.1 and App. E.1).

Reference: state-spaces/s4 ``src/dataloaders/datasets/copying.py::torch_copying_data(L, M,
A, variable=True)``, the generator the Mamba paper uses, reimplemented with a
``torch.Generator``.

Notation: A = ``vocab`` (the alphabet, noise token included), M = ``num_tokens`` (the
tokens to memorise), T = ``seq_len``, L = T − 2M (the number of noise tokens).

* Token 0 is the noise/blank token, A − 1 the marker; data tokens are uniform in
  ``1 .. A − 2``.
* The first L + M positions hold the M data tokens at M sorted random positions
  (``selective=True``; the reference's ``variable=True``) or at positions 0 .. M − 1
  (``selective=False``: plain copying), and 0 elsewhere.
* The last M positions hold markers; the target at marker i is data token i, in order.
  Every other target is ``IGNORE``.

Choice recorded (the paper leaves it open): the Mamba setting "length 4096" is read as the
whole input, T = L + 2M = 4096, so ``seq_len`` is always the exact input length.
The reference returns ``y`` separately (M tokens); here it is laid out on the marker
positions of ``targets``, which is where the reference's model is read out.
"""
from __future__ import annotations

import torch

from .batch import IGNORE, TaskBatch, require, seeded


def selective_copy(num_examples: int, seq_len: int, num_tokens: int, vocab: int,
                   generator: torch.Generator | int, *, selective: bool = True) -> TaskBatch:
    """N copying examples of exactly ``seq_len`` tokens, ``num_tokens`` to copy each."""
    require(num_examples >= 1, f"num_examples must be >= 1, got {num_examples}")
    require(vocab >= 3, f"copying needs vocab >= 3 (noise, marker, a data token), got {vocab}")
    require(num_tokens >= 1 and 2 * num_tokens <= seq_len,
            f"copying needs 1 <= num_tokens <= seq_len / 2, got {num_tokens} tokens for "
            f"seq_len {seq_len}")
    gen = seeded(generator)
    span = seq_len - num_tokens  # L + M: where the data tokens may sit
    data = torch.randint(1, vocab - 1, (num_examples, num_tokens), generator=gen)
    if selective:
        order = torch.rand(num_examples, span, generator=gen).argsort(dim=1)
        positions = order[:, :num_tokens].sort(dim=1).values
    else:
        positions = torch.arange(num_tokens).expand(num_examples, num_tokens)

    tokens = torch.zeros(num_examples, seq_len, dtype=torch.int64)
    tokens[:, :span].scatter_(1, positions, data)
    tokens[:, span:] = vocab - 1
    targets = torch.full_like(tokens, IGNORE)
    targets[:, span:] = data
    return TaskBatch(task="selective_copy" if selective else "copy", tokens=tokens,
                     targets=targets, answer_mask=targets != IGNORE, scoring="per_token")
