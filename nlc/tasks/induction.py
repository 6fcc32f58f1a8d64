"""Induction heads (Olsson et al. 2022; the H3/Safari synthetic used in *Mamba* App. E.1).

Reference: the definition in Mamba App. E.1 (H3/Safari's generator), reimplemented with a
``torch.Generator``.

Notation: V = ``vocab``, T = ``seq_len``, s = V − 1 the special token. Per example:

* T − 1 random tokens uniform in ``0 .. V − 2`` (never s), then s at position T − 1;
* s also at one position p uniform in ``0 .. T − 3``; the token at p + 1 is the answer;
* the only scored target is at position T − 1 (after the second s): the answer.

Mamba trains at T = 256, V = 16 and tests at T = 2^6 .. 2^20 (length extrapolation);
the metric is the accuracy of that final prediction.
"""
from __future__ import annotations

import torch

from .batch import IGNORE, TaskBatch, require, seeded


def induction_heads(num_examples: int, seq_len: int, vocab: int,
                    generator: torch.Generator | int) -> TaskBatch:
    """N induction-head examples of exactly ``seq_len`` tokens."""
    require(num_examples >= 1, f"num_examples must be >= 1, got {num_examples}")
    require(seq_len >= 3, f"induction heads needs seq_len >= 3, got {seq_len}")
    require(vocab >= 2, f"induction heads needs vocab >= 2 (a token and the special), got {vocab}")
    gen = seeded(generator)
    special = vocab - 1
    tokens = torch.randint(0, special, (num_examples, seq_len), generator=gen)
    trigger = torch.randint(0, seq_len - 2, (num_examples, 1), generator=gen)
    tokens.scatter_(1, trigger, special)
    tokens[:, -1] = special
    targets = torch.full_like(tokens, IGNORE)
    targets[:, -1] = tokens.gather(1, trigger + 1).squeeze(1)
    return TaskBatch(task="induction_heads", tokens=tokens, targets=targets,
                     answer_mask=targets != IGNORE, scoring="per_token")
