"""score(): argmax accuracy on hand-built logits, per token and per example."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.tasks import IGNORE, TaskError, mqar, niah, passkey, score, selective_copy


def perfect_logits(batch, vocab: int) -> torch.Tensor:
    """Logits whose argmax is the target wherever one is scored (token 0 elsewhere)."""
    logits = torch.zeros(*batch.tokens.shape, vocab)
    logits[..., 0] = 1.0
    rows, positions = batch.answer_mask.nonzero(as_tuple=True)
    logits[rows, positions, batch.targets[rows, positions]] = 5.0
    return logits


def break_position(logits: torch.Tensor, batch, row: int, index: int) -> None:
    """Make the ``index``-th scored position of ``row`` predict a wrong token."""
    position = int(batch.answer_mask[row].nonzero()[index])
    target = int(batch.targets[row, position])
    logits[row, position, (target + 1) % logits.shape[-1]] = 10.0


def test_per_token_accuracy_counts_positions():
    batch = mqar(3, 32, 4, 64, 0)  # 12 scored positions
    logits = perfect_logits(batch, 64)
    assert score(batch, logits) == 1.0
    break_position(logits, batch, 1, 2)
    assert score(batch, logits) == pytest.approx(11 / 12)
    break_position(logits, batch, 1, 3)
    assert score(batch, logits) == pytest.approx(10 / 12)


def test_copying_scores_the_marker_positions():
    batch = selective_copy(2, 20, 5, 8, 0)
    logits = perfect_logits(batch, 8)
    assert score(batch, logits) == 1.0
    break_position(logits, batch, 0, 4)
    assert score(batch, logits) == pytest.approx(9 / 10)


def test_per_example_accuracy_needs_the_whole_answer():
    batch = passkey(4, 300, 1)
    logits = perfect_logits(batch, 256)
    assert score(batch, logits) == 1.0
    break_position(logits, batch, 2, 0)
    assert score(batch, logits) == 0.75
    break_position(logits, batch, 2, -1)  # a second error in the same example
    assert score(batch, logits) == 0.75
    break_position(logits, batch, 0, -1)
    assert score(batch, logits) == 0.5


def test_off_answer_predictions_do_not_count():
    batch = niah(2, 600, 3, value="uuid")
    logits = perfect_logits(batch, 256)
    logits[~batch.answer_mask] = torch.randn(int((~batch.answer_mask).sum()), 256)
    assert score(batch, logits) == 1.0


@given(st.integers(0, 1000), st.floats(0.0, 1.0))
def test_per_token_score_is_the_fraction_right(seed, fraction):
    batch = mqar(4, 64, 8, 128, seed)  # 32 scored positions
    logits = perfect_logits(batch, 128)
    wrong = round(fraction * 32)
    rows, positions = batch.answer_mask.nonzero(as_tuple=True)
    logits[rows[:wrong], positions[:wrong], 0] = 50.0  # values are >= 64, never 0
    assert score(batch, logits) == pytest.approx((32 - wrong) / 32)


def test_mismatched_logits_are_a_clear_error():
    batch = mqar(2, 16, 2, 12, 0)
    with pytest.raises(TaskError, match=r"do not match the mqar batch: expected \(2, 16, vocab\)"):
        score(batch, torch.zeros(2, 15, 12))
    assert IGNORE == -100
