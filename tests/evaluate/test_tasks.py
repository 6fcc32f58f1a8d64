"""evaluate_task: an oracle scores 1, a random guesser scores chance, answers never teach."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import nlc
from nlc.evaluate import EvaluationError, evaluate_task, task_batch, task_table, teach_targets
from nlc.tasks import IGNORE

VOCAB = 64


class Oracle(nn.Module):
    """Test double of a model that has memorised the answers of the batches it will see:
    one-hot logits of the scored target at scored positions, zeros elsewhere."""

    def __init__(self, vocab: int, batches) -> None:
        super().__init__()
        self.vocab, self.teach_period = vocab, None
        self.answers = {tuple(row.tolist()): target
                        for b in batches for row, target in zip(b.tokens, b.targets)}

    def init_state(self, batch: int) -> dict:
        return {}

    def forward(self, tokens, state=None, targets=None):
        logits = torch.zeros(*tokens.shape, self.vocab)
        for n, row in enumerate(tokens):
            target = self.answers[tuple(row.tolist())]
            scored = target != IGNORE
            logits[n, scored, target[scored]] = 1.0
        return logits, state


class Guesser(nn.Module):
    """Test double of a model with i.i.d. standard-normal logits: its argmax is a uniform
    draw from the vocabulary, so its expected per-token accuracy is 1 / V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.teach_period = vocab, None
        self.generator = torch.Generator().manual_seed(0)

    def init_state(self, batch: int) -> dict:
        return {}

    def forward(self, tokens, state=None, targets=None):
        return torch.randn(*tokens.shape, self.vocab, generator=self.generator), state


@pytest.mark.parametrize("task,lengths,vocab", [
    ("mqar", (64, 128), VOCAB), ("copy", (48, 96), VOCAB),
    ("passkey", (300, 600), 256), ("niah", (400,), 256),
])
def test_oracle_scores_one(task, lengths, vocab):
    batches = [task_batch(task, 6, length, vocab, seed=3) for length in lengths]
    report = evaluate_task(Oracle(vocab, batches), task, lengths, n=6, seed=3, batch_size=4)
    assert report.accuracy == {length: 1.0 for length in lengths}
    assert report.scoring == ("per_example" if task in ("passkey", "niah") else "per_token")


@pytest.mark.parametrize("value,pattern", [("number", r"\d{7}"), ("word", r"[a-z]+-[a-z]+"),
                                           ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")])
def test_niah_value_kinds_are_scored_on_their_own_needles(value, pattern):
    import re

    batch = task_batch("niah", 4, 450, 256, seed=1, niah_value=value)
    for row, target in zip(batch.tokens, batch.targets):
        answer = bytes(target[target != IGNORE].tolist()).decode()
        assert re.fullmatch(pattern, answer), answer
        assert answer in bytes(row.tolist()).decode()  # the needle is in the haystack
    report = evaluate_task(Oracle(256, [batch]), "niah", [450], n=4, seed=1, niah_value=value)
    assert report.accuracy == {450: 1.0} and report.niah_value == value


@pytest.mark.parametrize("task,scored_per_example", [("mqar", 64 // 16), ("copy", 16)])
def test_random_guesser_scores_chance(task, scored_per_example):
    n = 200
    report = evaluate_task(Guesser(VOCAB), task, [64], n=n, seed=0)
    trials = n * scored_per_example
    chance = 1 / VOCAB
    sigma = math.sqrt(chance * (1 - chance) / trials)
    assert abs(report.accuracy[64] - chance) < 4 * sigma


def test_random_guesser_never_gets_a_passkey():
    assert evaluate_task(Guesser(256), "passkey", [300], n=20).accuracy == {300: 0.0}


@given(st.integers(0, 10_000), st.sampled_from([("mqar", 64), ("copy", 40)]))
def test_teach_targets_are_the_context_only(seed, task_length):
    task, length = task_length
    batch = task_batch(task, 3, length, VOCAB, seed)
    targets = teach_targets(batch)
    assert (targets[batch.answer_mask] == IGNORE).all()
    assert (targets[:, -1] == IGNORE).all()
    context = ~batch.answer_mask[:, :-1]
    assert torch.equal(targets[:, :-1][context], batch.tokens[:, 1:][context])


def test_examples_at_a_length_do_not_depend_on_the_other_lengths():
    alone = task_batch("mqar", 4, 128, VOCAB, seed=5)
    again = task_batch("mqar", 4, 128, VOCAB, seed=5)
    other = task_batch("mqar", 4, 128, VOCAB, seed=6)
    assert torch.equal(alone.tokens, again.tokens) and not torch.equal(alone.tokens, other.tokens)


def test_real_model_beyond_its_training_length_with_teach_signal():
    model = nlc.compile("specs/cms.yaml", seed=0, overrides=[
        "model.width=32", "model.heads=2", "model.blocks.0.repeat=1", "train.seq_len=16",
        "levels.cms_fast.period=8", "levels.cms_mid.period=16", "levels.cms_slow.period=16"])
    report = evaluate_task(model, "mqar", [16, 32], n=2, seed=0)
    assert report.train_length == 16 and report.beyond_training(32)
    assert not report.beyond_training(16)
    assert all(0.0 <= a <= 1.0 for a in report.accuracy.values())
    assert model.training  # mode restored
    table = task_table(report)
    assert table.row_count == 2 and "beyond the training length 16" in table.caption
    assert report.to_json()["accuracy"].keys() == {"16", "32"}


def test_bad_requests_are_clear_errors():
    with pytest.raises(EvaluationError, match="choose one of"):
        evaluate_task(Guesser(VOCAB), "sorting", [64])
    with pytest.raises(EvaluationError, match="byte-level"):
        evaluate_task(Guesser(VOCAB), "passkey", [256])
    with pytest.raises(EvaluationError, match="NIAH value kind 'colour'"):
        evaluate_task(Guesser(256), "niah", [400], niah_value="colour")
