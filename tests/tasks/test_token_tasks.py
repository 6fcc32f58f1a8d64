"""MQAR, selective copying and induction heads: hand-checked cases against their
reference definitions (nlc/tasks/associative_recall.py, copying.py, induction.py)."""
from __future__ import annotations

import math

import pytest
import torch

from nlc.tasks import IGNORE, TaskError, induction_heads, mqar, selective_copy

_ = IGNORE


def test_mqar_small_example_by_hand():
    """V = 12: keys 1..5, values 6..11; T = 16, D = 2, so C = 4 and gaps in 0..5."""
    batch = mqar(2, 16, 2, 12, 0, random_non_queries=False)
    print(batch.tokens.tolist(), batch.targets.tolist())
    # row 0: context k=3 v=8, k=4 v=9; key 3 again at C + 2·0 = 4, key 4 at C + 2·1 = 6
    # row 1: context k=4 v=8, k=2 v=9; key 4 again at 4 (gap 0), key 2 at 14 (gap 5)
    assert batch.tokens.tolist() == [
        [3, 8, 4, 9, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [4, 8, 2, 9, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0],
    ]
    assert batch.targets.tolist() == [
        [_, _, _, _, 8, _, 9, _, _, _, _, _, _, _, _, _],
        [_, _, _, _, 8, _, _, _, _, _, _, _, _, _, 9, _],
    ]
    assert batch.scoring == "per_token" and batch.task == "mqar"


def test_mqar_layout_matches_the_definition():
    vocab, seq_len, pairs = 64, 48, 5
    batch = mqar(200, seq_len, pairs, vocab, 3, random_non_queries=False)
    context = 2 * pairs
    keys, values = batch.tokens[:, 0:context:2], batch.tokens[:, 1:context:2]
    assert ((keys >= 1) & (keys < vocab // 2)).all()
    assert ((values >= vocab // 2) & (values < vocab)).all()
    for row_keys, row_values in zip(keys.tolist(), values.tolist()):
        assert len(set(row_keys)) == pairs and len(set(row_values)) == pairs
    # no target inside the kv prefix; query positions at even offsets from C
    assert not batch.answer_mask[:, :context].any()
    rows, positions = batch.answer_mask.nonzero(as_tuple=True)
    assert ((positions - context) % 2 == 0).all()
    assert batch.answer_mask.sum(1).eq(pairs).all()
    # each query is one of the keys, and its target is that key's value
    for row, position in zip(rows.tolist(), positions.tolist()):
        key = int(batch.tokens[row, position])
        index = keys[row].tolist().index(key)
        assert int(batch.targets[row, position]) == int(values[row, index])
    # without random_non_queries everything else in the query region is 0
    rest = batch.tokens[:, context:].clone()
    rest[batch.answer_mask[:, context:]] = 0
    assert rest.eq(0).all()


def test_mqar_gaps_follow_the_power_law():
    """With D = 1 the gap g has P(g = i − 1) = i^(a−1) / Σ_j j^(a−1)."""
    seq_len, samples = 42, 4000  # space = 20
    for power_a in (0.01, 1.0):
        batch = mqar(samples, seq_len, 1, 64, 11, power_a=power_a, random_non_queries=False)
        gaps = (batch.answer_mask.float().argmax(1) - 2) // 2
        weights = [i ** (power_a - 1) for i in range(1, 21)]
        expected = weights[0] / sum(weights)
        observed = float((gaps == 0).float().mean())
        assert observed == pytest.approx(expected, abs=4 * math.sqrt(expected / samples))


def test_mqar_random_non_queries_fill_only_the_zeros():
    plain = mqar(64, 32, 4, 40, 5, random_non_queries=False)
    noisy = mqar(64, 32, 4, 40, 5)
    kept = plain.tokens != 0
    assert torch.equal(noisy.tokens[kept], plain.tokens[kept])
    assert torch.equal(noisy.targets, plain.targets)
    filled = noisy.tokens[~kept]
    assert filled.min() >= 0 and filled.max() < 40 and filled.float().std() > 5


@pytest.mark.parametrize(("seq_len", "pairs", "vocab"), [(15, 2, 64), (16, 5, 64), (64, 4, 8)])
def test_mqar_rejects_impossible_layouts(seq_len, pairs, vocab):
    with pytest.raises(TaskError):
        mqar(1, seq_len, pairs, vocab, 0)


def test_selective_copy_small_example_by_hand():
    """A = 6: noise 0, marker 5, data 1..4; T = 12, M = 3, so L + M = 9."""
    batch = selective_copy(2, 12, 3, 6, 0)
    print(batch.tokens.tolist(), batch.targets.tolist())
    assert batch.tokens.tolist() == [[0, 0, 0, 0, 0, 0, 1, 4, 2, 5, 5, 5],
                                     [0, 0, 0, 1, 4, 0, 0, 4, 0, 5, 5, 5]]
    assert batch.targets.tolist() == [[_] * 9 + [1, 4, 2], [_] * 9 + [1, 4, 4]]


@pytest.mark.parametrize("selective", [True, False])
def test_copying_layout_matches_the_definition(selective):
    vocab, seq_len, count = 10, 40, 6
    batch = selective_copy(100, seq_len, count, vocab, 1, selective=selective)
    span = seq_len - count
    assert batch.tokens[:, span:].eq(vocab - 1).all()
    assert batch.answer_mask[:, span:].all() and not batch.answer_mask[:, :span].any()
    data = batch.tokens[:, :span]
    assert data.ne(vocab - 1).all()
    for row, targets in zip(data, batch.targets[:, span:]):
        placed = row[row != 0]
        assert placed.tolist() == targets.tolist()  # the data tokens, in order
        assert ((targets >= 1) & (targets <= vocab - 2)).all()
        if not selective:
            assert row[:count].tolist() == targets.tolist()
    if selective:  # positions spread over the whole first L + M, not only the start
        assert data[:, count:].ne(0).any()


def test_copying_rejects_too_many_tokens():
    with pytest.raises(TaskError, match="num_tokens"):
        selective_copy(1, 10, 6, 16, 0)


def test_induction_heads_by_hand():
    """V = 5: special 4, tokens 0..3; the answer follows the first special."""
    batch = induction_heads(2, 8, 5, 0)
    print(batch.tokens.tolist(), batch.targets.tolist())
    assert batch.tokens.tolist() == [[4, 3, 1, 0, 3, 3, 3, 4], [4, 3, 1, 2, 0, 3, 2, 4]]
    assert batch.targets.tolist() == [[_] * 7 + [3], [_] * 7 + [3]]


def test_induction_heads_definition():
    vocab, seq_len = 16, 64
    batch = induction_heads(300, seq_len, vocab, 2)
    special = batch.tokens == vocab - 1
    assert special.sum(1).eq(2).all() and special[:, -1].all()
    first = special.float().argmax(1)
    assert first.max() <= seq_len - 3 and first.min() == 0
    answers = batch.tokens.gather(1, (first + 1).unsqueeze(1)).squeeze(1)
    assert torch.equal(batch.targets[:, -1], answers)
    assert batch.answer_mask.sum() == 300 and batch.answer_mask[:, -1].all()
