"""Invariants every generator keeps for any length it accepts: exact shape, ``IGNORE``
exactly off the answer mask, determinism given a seed, different seeds differ."""
from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.tasks import IGNORE, induction_heads, mqar, niah, passkey, selective_copy

PROSE = "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea! " * 3


@st.composite
def task_calls(draw, roomy: bool = False):
    """(generator taking a seed, the length it was asked for) for one of the tasks.

    ``roomy`` keeps lengths and vocabularies large enough that two seeds practically
    never give the same batch (vocab 3 at length 3 has one possible example)."""
    low = 16 if roomy else 0
    kind = draw(st.sampled_from(["mqar", "copy", "induction", "passkey", "niah"]))
    count = draw(st.integers(1, 4))
    if kind == "mqar":
        pairs = draw(st.integers(1, 8))
        seq_len = 2 * draw(st.integers(2 * pairs + low, 300))
        vocab = draw(st.integers(2 * pairs + 2 + low, 600))
        noisy = draw(st.booleans())
        return (lambda seed: mqar(count, seq_len, pairs, vocab, seed,
                                  random_non_queries=noisy)), seq_len
    if kind == "copy":
        tokens = draw(st.integers(1, 16))
        seq_len = draw(st.integers(2 * tokens + low, 600))
        vocab = draw(st.integers(3 + low, 300))
        selective = draw(st.booleans())
        return (lambda seed: selective_copy(count, seq_len, tokens, vocab, seed,
                                            selective=selective)), seq_len
    if kind == "induction":
        seq_len, vocab = draw(st.integers(3 + low, 600)), draw(st.integers(2 + low, 300))
        return (lambda seed: induction_heads(count, seq_len, vocab, seed)), seq_len
    if kind == "passkey":
        seq_len = draw(st.integers(280, 3000))
        depth = draw(st.none() | st.floats(0, 1))
        return (lambda seed: passkey(count, seq_len, seed, depth=depth)), seq_len
    seq_len = draw(st.integers(500, 3000))
    value = draw(st.sampled_from(["number", "word", "uuid"]))
    key = draw(st.sampled_from(["number", "word", "uuid"]))
    prose = draw(st.sampled_from([None, PROSE]))
    return (lambda seed: niah(count, seq_len, seed, value=value, key=key, prose=prose)), seq_len


@given(task_calls(), st.integers(0, 2**31 - 1))
def test_shapes_masks_and_determinism(call, seed):
    make, seq_len = call
    batch = make(seed)
    count = batch.tokens.shape[0]
    assert batch.tokens.shape == batch.targets.shape == batch.answer_mask.shape == (count, seq_len)
    assert batch.tokens.dtype == batch.targets.dtype == torch.int64
    assert batch.answer_mask.dtype == torch.bool
    assert torch.equal(batch.answer_mask, batch.targets != IGNORE)
    assert batch.answer_mask.any(dim=1).all()  # every example has something to score
    if batch.scoring == "per_example":  # byte-level text
        assert batch.tokens.min() >= 0 and batch.tokens.max() < 256
        assert len(batch.answers) == count
    again = make(seed)
    assert torch.equal(again.tokens, batch.tokens) and torch.equal(again.targets, batch.targets)


@given(task_calls(roomy=True))
def test_different_seeds_differ(call):
    make, _ = call
    batches = [make(seed) for seed in range(4)]
    distinct = {(tuple(b.tokens.flatten().tolist()), tuple(b.targets.flatten().tolist()))
                for b in batches}
    assert len(distinct) > 1
