"""Multi-query associative recall (MQAR; Arora et al. 2023, *Zoology*).

Reference: HazyResearch/zoology ``zoology/data/associative_recall.py::multiquery_ar``
(the ``_mqar`` generator), reimplemented with torch and a ``torch.Generator``.

Notation: V vocabulary, T = ``seq_len``, D = ``num_kv_pairs``, C = 2D the context,
``space`` = (T − C) // 2, a = ``power_a``. Per example:

1. D distinct keys from ``1 .. V/2 − 1`` and D distinct values from ``V/2 .. V − 1``.
2. Context ``k1 v1 k2 v2 … kD vD`` (positions 0 .. C − 1).
3. D distinct gaps g_j from ``0 .. space − 1``, drawn without replacement with
   probability ∝ a·i^(a−1), i = 1 .. space (a = 0.01 strongly favours short gaps);
   key j is repeated at position C + 2·g_j.
4. The target at position C + 2·g_j is v_j (zoology builds T + 1 tokens and shifts the
   labels by one; the net effect is this). All other targets are ``IGNORE``.
5. With ``random_non_queries`` (the reference default) every remaining 0 becomes a
   uniform token in ``[0, V)``; otherwise it stays 0 (Zoology Fig. 2 uses False).

Deviation: zoology asserts V > T; nothing in the layout needs it (keys and values only
need D ≤ V/2 − 1 distinct ids), and dropping it lets a byte vocabulary (256) be tested at
long lengths. Zoology draws train and test sets with seeds ``s`` and ``s + 10``; the
caller passes the generator, so it chooses the seeds.
"""
from __future__ import annotations

import torch

from .batch import IGNORE, TaskBatch, require, seeded


def _distinct_ids(num_examples: int, low: int, high: int, count: int,
                  generator: torch.Generator) -> torch.Tensor:
    """(N, count) ids, distinct within a row, uniform from ``low .. high − 1``."""
    noise = torch.rand(num_examples, high - low, generator=generator)
    return noise.argsort(dim=1)[:, :count] + low


def mqar(num_examples: int, seq_len: int, num_kv_pairs: int, vocab: int,
         generator: torch.Generator | int, *, power_a: float = 0.01,
         random_non_queries: bool = True) -> TaskBatch:
    """N MQAR examples of exactly ``seq_len`` tokens with ``num_kv_pairs`` queries each."""
    require(num_examples >= 1, f"num_examples must be >= 1, got {num_examples}")
    require(seq_len % 2 == 0, f"MQAR needs an even seq_len (as zoology asserts), got {seq_len}")
    require(num_kv_pairs >= 1 and 4 * num_kv_pairs <= seq_len,
            f"MQAR needs 1 <= num_kv_pairs <= seq_len / 4, got {num_kv_pairs} pairs for "
            f"seq_len {seq_len}")
    require(num_kv_pairs <= vocab // 2 - 1,
            f"vocab {vocab} has only {vocab // 2 - 1} key ids for {num_kv_pairs} distinct keys; "
            "use a larger vocab or fewer pairs")
    require(power_a > 0, f"power_a must be > 0, got {power_a}")
    gen = seeded(generator)
    context = 2 * num_kv_pairs
    half = vocab // 2
    keys = _distinct_ids(num_examples, 1, half, num_kv_pairs, gen)
    values = _distinct_ids(num_examples, half, vocab, num_kv_pairs, gen)

    space = (seq_len - context) // 2
    ranks = torch.arange(1, space + 1, dtype=torch.float64)
    gap_weights = (power_a * ranks ** (power_a - 1)).expand(num_examples, space)
    gaps = torch.multinomial(gap_weights, num_kv_pairs, replacement=False, generator=gen)
    query_positions = context + 2 * gaps

    tokens = torch.zeros(num_examples, seq_len, dtype=torch.int64)
    tokens[:, 0:context:2] = keys
    tokens[:, 1:context:2] = values
    tokens.scatter_(1, query_positions, keys)
    targets = torch.full_like(tokens, IGNORE)
    targets.scatter_(1, query_positions, values)

    if random_non_queries:
        filler = torch.randint(vocab, tokens.shape, generator=gen)
        tokens = torch.where(tokens == 0, filler, tokens)
    return TaskBatch(task="mqar", tokens=tokens, targets=targets,
                     answer_mask=targets != IGNORE, scoring="per_token")
