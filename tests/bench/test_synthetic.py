"""The synthetic-task protocol of the paper comparison: seeded batches, disjoint splits, the
calibrated step budget (on scripted runs and on a real tiny one) and the accuracy plot."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from nlc.bench.calibration import calibrate, calibrate_task
from nlc.bench.plots import plot_synthetic
from nlc.bench.synthetic import chance, held_out, start_run, task_loss, training_batch
from nlc.bench.task_protocol import PAPER_PROTOCOLS, CalibrationSettings, Shape, SyntheticError, TaskProtocol
from nlc.evaluate import teach_targets

TRANSFORMER = "nlc/bundled/transformer.yaml"
TINY = ["model.width=16", "model.heads=2"]
MQAR = TaskProtocol("mqar", train=(Shape(16, 2), Shape(32, 4)), test=(Shape(64, 8),), tokens_per_step=64,
                    lr=3e-3, warmup=2, examples=8)


def rows(batch) -> set[tuple[int, ...]]:
    return {tuple(row.tolist()) for row in batch.tokens}


def test_the_same_seed_gives_the_same_batches_and_other_seeds_or_steps_others():
    first, again = training_batch(MQAR, 3, 0, 256), training_batch(MQAR, 3, 0, 256)
    assert first.tokens.equal(again.tokens) and first.targets.equal(again.targets)
    assert first.tokens.shape == (4, 16)  # step 3 cycles back to the first shape: 64 tokens / 16
    assert training_batch(MQAR, 2, 0, 256).tokens.shape == (2, 32)
    assert not training_batch(MQAR, 3, 1, 256).tokens.equal(first.tokens)
    assert not training_batch(MQAR, 5, 0, 256).tokens.equal(first.tokens)
    test = held_out(MQAR, Shape(64, 8), "test", 0, 256)
    assert test.tokens.equal(held_out(MQAR, Shape(64, 8), "test", 0, 256).tokens) and test.tokens.shape == (8, 64)


@pytest.mark.parametrize("protocol", [MQAR, TaskProtocol("copy", train=(Shape(40),), test=(), tokens_per_step=80,
                                                          lr=1e-3, warmup=0, examples=32)])
def test_training_calibration_and_test_examples_never_meet(protocol):
    trained = set().union(*(rows(training_batch(protocol, step, 0, 256)) for step in range(1, 201)))
    calibration = set().union(*(rows(held_out(protocol, s, "calibration", 0, 256)) for s in protocol.train))
    test = set().union(*(rows(held_out(protocol, s, "test", 0, 256)) for s in protocol.train))
    assert len(calibration) == len(test) == protocol.examples * len(protocol.train)
    assert not trained & calibration and not trained & test and not calibration & test
    with pytest.raises(SyntheticError, match="not train"):
        held_out(protocol, protocol.train[0], "train", 0, 256)


def test_protocols_check_their_shapes_and_list_training_shapes_first():
    assert [s.key for s in MQAR.shapes] == ["16x2", "32x4", "64x8"]
    assert MQAR.to_json()["train"] == ["16x2", "32x4"]
    with pytest.raises(SyntheticError, match="key-value pairs"):
        TaskProtocol("mqar", train=(Shape(64),), test=(), tokens_per_step=64, lr=1e-3, warmup=0)
    with pytest.raises(SyntheticError, match="less than one example"):
        TaskProtocol("copy", train=(Shape(128),), test=(), tokens_per_step=64, lr=1e-3, warmup=0)
    with pytest.raises(SyntheticError, match="unknown synthetic task"):
        TaskProtocol("sorting", train=(Shape(8),), test=(), tokens_per_step=8, lr=1e-3, warmup=0)
    assert chance("mqar", 256) == 1 / 128 and chance("copy") == 1 / 14
    passkey = next(p for p in PAPER_PROTOCOLS if p.task == "passkey")
    (length,) = [s.length for s in passkey.train]
    assert [s.length for s in passkey.test] == [2 * length, 4 * length, 8 * length]


class ScriptedRun:
    """A run whose calibration accuracy is ``curve(step, total_steps)`` at every training shape
    (``low_shape`` stays at 0: the lowest accuracy is the criterion); it diverges at ``diverge_at``."""

    def __init__(self, total, curve, diverge_at=None, low_shape=False):
        self.total, self.curve, self.diverge_at, self.low_shape = total, curve, diverge_at, low_shape
        self.step, self.diverged = 0, False

    def train_to(self, step):
        self.step = min(step, self.total)
        if self.diverge_at is not None and self.step >= self.diverge_at:
            self.step, self.diverged = self.diverge_at, True

    def accuracy(self, shapes, split):
        assert split == "calibration"
        scores = {s.key: self.curve(self.step, self.total) for s in shapes}
        return {**scores, shapes[-1].key: 0.0} if self.low_shape else scores

    def result(self):
        return {"steps": self.step, "budget": self.total}


SHAPES = (Shape(64, 4), Shape(128, 8))


def scripted(curve, **kwargs):
    made = []

    def new_run(total):
        made.append(total)
        return ScriptedRun(total, curve, **kwargs)
    return new_run, made


def test_the_budget_is_the_first_evaluated_step_at_the_target_and_is_confirmed():
    new_run, made = scripted(lambda step, total: min(1.0, step / 330))  # 0.91 at step 300
    found = calibrate("mqar", new_run, SHAPES, CalibrationSettings(max_steps=1000, eval_every=100))
    assert [step for step, _ in found.curve] == [100, 200, 300] and found.curve[-1][1] == pytest.approx(300 / 330)
    assert (found.reached_at, found.budget, found.counts) == (300, 300, True)
    assert made == [1000, 300]  # the curve run's schedule spans max_steps, the confirmation's the budget
    assert found.reference == {"steps": 300, "budget": 300}    # the confirmed run is the reference's comparison run
    assert found.to_json()["confirmations"] == [[300, pytest.approx(300 / 330)]]


def test_a_margin_rounds_the_budget_up_to_an_evaluated_step():
    new_run, made = scripted(lambda step, total: min(1.0, step / 330))
    found = calibrate("mqar", new_run, SHAPES, CalibrationSettings(max_steps=1000, eval_every=100, margin=1.5))
    assert (found.reached_at, found.budget) == (300, 500) and made == [1000, 500]


def test_a_task_the_reference_cannot_learn_is_not_counted():
    new_run, made = scripted(lambda step, total: 0.25 + step / 10_000)
    found = calibrate("passkey", new_run, SHAPES, CalibrationSettings(max_steps=1000, eval_every=250))
    assert not found.counts and found.budget is None and found.reference is None and made == [1000]
    assert [step for step, _ in found.curve] == [250, 500, 750, 1000]
    assert found.reason == ("not learnable at this size within 1000 steps: the reference reached at most 35.0% "
                            "(target 90%)")


def test_every_training_shape_must_reach_the_target():
    new_run, _ = scripted(lambda step, total: 1.0, low_shape=True)
    found = calibrate("mqar", new_run, SHAPES, CalibrationSettings(max_steps=200, eval_every=100))
    assert not found.counts and found.curve == [[100, 0.0], [200, 0.0]]


def test_a_budget_that_fails_its_own_run_doubles_until_one_passes_or_the_cap():
    # reaches 0.9 at step 200 of a long run, but a run of T steps ends at 0.9 only when T >= 400
    new_run, made = scripted(lambda step, total: 0.9 if (total >= 400 or total == 1000) and step >= 200 else 0.5)
    found = calibrate("copy", new_run, SHAPES, CalibrationSettings(max_steps=1000, eval_every=100))
    assert made == [1000, 200, 400] and found.budget == 400 and found.counts
    assert found.confirmations == [[200, 0.5], [400, 0.9]]
    # a transient peak: only the long run passes the target, at step 600, then falls back
    never, made = scripted(lambda step, total: 0.9 if total == 1000 and step == 600 else 0.5)
    found = calibrate("copy", never, SHAPES, CalibrationSettings(max_steps=1000, eval_every=100))
    assert made == [1000, 600, 1000] and not found.counts and found.budget is None
    assert "no run of its own length up to 1000 steps did (600: 50.0%, 1000: 50.0%)" in found.reason


def test_calibration_settings_are_checked():
    with pytest.raises(SyntheticError, match="eval_every"):
        CalibrationSettings(max_steps=100, eval_every=200)
    with pytest.raises(SyntheticError, match="in \\[0, 1\\]"):
        CalibrationSettings(max_steps=100, eval_every=10, target=90)
    with pytest.raises(SyntheticError, match="margin"):
        CalibrationSettings(max_steps=100, eval_every=10, margin=0.5)


def test_a_reference_that_diverges_is_not_counted():
    new_run, _ = scripted(lambda step, total: 0.1, diverge_at=150)
    found = calibrate("mqar", new_run, SHAPES, CalibrationSettings(max_steps=1000, eval_every=100))
    assert not found.counts and found.curve == [[100, 0.1]]
    assert found.reason == "the reference diverged (non-finite loss) at step 150"


def test_a_real_tiny_calibration_scores_passkey_at_2L_4L_8L():
    protocol = TaskProtocol("passkey", train=(Shape(256),), test=(Shape(512), Shape(1024), Shape(2048)),
                            tokens_per_step=512, lr=1e-3, warmup=1, examples=2)
    settings = CalibrationSettings(max_steps=2, eval_every=1, target=0.0)
    found = calibrate_task(TRANSFORMER, TINY, protocol, settings, seed=0)
    assert (found.reached_at, found.budget, found.counts) == (1, 1, True)
    reference = found.reference
    assert (reference["steps"], reference["budget"], reference["diverged"]) == (1, 1, False)
    assert list(reference["accuracy"]) == ["256", "512", "1024", "2048"]
    assert all(value in (0.0, 0.5, 1.0) for value in reference["accuracy"].values())  # 2 examples, whole key right


def test_a_real_run_uses_the_task_optimizer_and_is_reproducible():
    run = start_run(TRANSFORMER, TINY, MQAR, seed=0, steps=3)
    outer = run.outer.levels["outer"].ir
    assert (outer.lr, outer.warmup, outer.schedule, outer.grad_clip) == (3e-3, 2, "cosine", 1.0)
    run.train_to(2)
    assert run.step == 2 and len(run.losses) == 2
    again = start_run(TRANSFORMER, TINY, MQAR, seed=0, steps=3)
    again.train_to(2)
    assert again.losses == run.losses
    result = run.result()
    assert list(result["accuracy"]) == ["16x2", "32x4", "64x8"] and result["steps"] == 2
    assert all(0.0 <= value <= 1.0 for value in result["accuracy"].values())


class Recorder(nn.Module):
    """A stand-in model that records the teach targets it is given."""

    def __init__(self, teach_period):
        super().__init__()
        self.teach_period, self.bias, self.seen = teach_period, nn.Parameter(torch.zeros(256)), []

    def init_state(self, batch):
        return {}

    def forward(self, tokens, state, targets=None):
        self.seen.append(targets)
        return self.bias.expand(*tokens.shape, 256), state


@pytest.mark.parametrize("teach_period", [None, 16])
def test_models_that_learn_from_the_task_loss_get_the_context_only_teach_targets(teach_period):
    batch = training_batch(MQAR, 1, 0, 256)
    model = Recorder(teach_period)
    loss = task_loss(model, batch)
    assert loss.item() == pytest.approx(math.log(256))  # uniform logits over the bytes
    (seen,) = model.seen
    if teach_period is None:
        assert seen is None
    else:
        assert seen.equal(teach_targets(batch)) and bool((seen[batch.answer_mask] == -100).all())


def test_the_accuracy_plot_is_written(tmp_path):
    counted = {"protocol": MQAR.to_json(), "chance": chance("mqar"),
               "calibration": {"counts": True, "budget": 300, "reason": ""}}
    skipped = {"protocol": replace(MQAR, task="copy", train=(Shape(16),), test=(Shape(32),)).to_json(),
               "chance": chance("copy"), "calibration": {"counts": False, "budget": None, "reason": "not learnable"}}
    runs = {"0": {"accuracy": {"16x2": 0.9, "32x4": 0.8, "64x8": 0.2}, "diverged": False},
            "1": {"accuracy": {"16x2": 1.0, "32x4": 0.6, "64x8": 0.1}, "diverged": False}}
    results = {"synthetic": {"mqar": counted, "copy": skipped},
               "models": {"Transformer++": {"synthetic": {"mqar": runs}}, "HOPE": {"synthetic": {}}}}
    path = plot_synthetic(results, tmp_path / "synthetic.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
