"""The learning-rate grid: extended past a winning edge (bounded, recorded), not extended when
the optimum is inside, extended downward when every point diverges; and the tune split it is
scored on: disjoint from the training tokens of every run and from the reported validation
windows, from the same documents."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from nlc.bench.lr_grid import LRGridError, search_lr
from nlc.bench.tune_split import fit_and_tune, reported_data, tuning_data
from nlc.data import sample_batch
from nlc.data.documents import offsets_of
from nlc.training.config import step_seed


class FakeTrainer:
    """Scores lr by a parabola in log2(lr) with its minimum at ``best``; lrs above ``diverge``
    return NaN. Records every lr it was asked to train."""

    def __init__(self, best: float, diverge: float = math.inf):
        self.best, self.diverge, self.calls = best, diverge, []

    def __call__(self, lr: float) -> float:
        self.calls.append(lr)
        return math.nan if lr > self.diverge else 2.0 + (math.log2(lr) - math.log2(self.best)) ** 2


GRID = (4e-3, 8e-3, 1.6e-2)


def test_an_interior_optimum_is_not_extended():
    trainer = FakeTrainer(best=8e-3)
    search = search_lr(trainer, GRID, 2.0, 3)
    assert trainer.calls == list(GRID) and search.extensions == []
    assert search.best_lr == 8e-3 and search.bracketed and not search.all_diverged


def test_a_best_high_edge_is_extended_upward_until_bracketed():
    trainer = FakeTrainer(best=5e-2)  # between 3.2e-2 and 6.4e-2, nearer 6.4e-2 in log2
    search = search_lr(trainer, GRID, 2.0, 3)
    assert trainer.calls == pytest.approx([*GRID, 3.2e-2, 6.4e-2, 1.28e-1])
    assert search.best_lr == pytest.approx(6.4e-2) and search.bracketed
    assert [e["reason"] for e in search.extensions][0] == "best at the high edge 0.016"
    assert [p[0] for p in search.points] == pytest.approx(trainer.calls)


def test_a_best_low_edge_is_extended_downward():
    trainer = FakeTrainer(best=1.5e-3)
    search = search_lr(trainer, GRID, 2.0, 3)
    assert trainer.calls == pytest.approx([*GRID, 2e-3, 1e-3])
    assert search.best_lr == pytest.approx(2e-3) and search.bracketed
    assert all(e["reason"].startswith("best at the low edge") for e in search.extensions)


def test_extensions_are_bounded_and_an_unbracketed_result_says_so():
    trainer = FakeTrainer(best=10.0)
    search = search_lr(trainer, GRID, 2.0, 2)
    assert len(trainer.calls) == 5 and len(search.extensions) == 2
    assert search.best_lr == pytest.approx(6.4e-2) and not search.bracketed


def test_diverged_points_count_as_worst_and_all_diverged_extends_down():
    # 1.6e-2 diverges and the optimum lies above 8e-3: the diverged edge is the worst, so the
    # search stops with 8e-3 bracketed between 4e-3 and the diverged point
    search = search_lr(FakeTrainer(best=1.6e-2, diverge=1e-2), GRID, 2.0, 3)
    assert search.best_lr == 8e-3 and search.bracketed and search.extensions == []
    # every point diverges: extend downward until one is finite, then bracket it
    trainer = FakeTrainer(best=1e-3, diverge=3e-3)
    search = search_lr(trainer, GRID, 2.0, 3)
    assert trainer.calls == pytest.approx([*GRID, 2e-3, 1e-3, 5e-4])
    assert search.extensions[0]["reason"] == "every point diverged: extended down from 0.004"
    assert search.best_lr == pytest.approx(1e-3) and search.bracketed
    # still every point diverged at the bound: the smallest lr, flagged
    search = search_lr(FakeTrainer(best=1e-3, diverge=0.0), GRID, 2.0, 1)
    assert search.all_diverged and not search.bracketed and search.best_lr == pytest.approx(2e-3)


def test_a_grid_that_is_not_geometric_is_refused():
    with pytest.raises(LRGridError, match="not geometric with ratio 2"):
        search_lr(FakeTrainer(1e-3), (1e-3, 3e-3), 2.0, 1)
    with pytest.raises(LRGridError, match="max_extensions"):
        search_lr(FakeTrainer(1e-3), (1e-3,), 2.0, -1)


def _corpus(train_lengths: list[int], val_lengths: list[int]) -> SimpleNamespace:
    """A corpus whose every token is its own position (int64), so overlaps show as equal ids;
    each token stands for one byte."""
    train = torch.arange(sum(train_lengths))
    val = torch.arange(sum(val_lengths)) + train.numel()
    one_byte_each = SimpleNamespace(decode_bytes=lambda ids: bytes(len(ids)))
    return SimpleNamespace(name="positions", sha256="0" * 64, vocab=int(val.max()) + 1, tokenizer=one_byte_each,
                           train=train, val=val, val_bytes=val.numel(), train_starts=offsets_of(train_lengths),
                           val_starts=offsets_of(val_lengths))


def test_tune_is_each_documents_last_twentieth_of_train():
    corpus = _corpus([100, 40, 19], [5, 2, 1])
    fit, tune, fit_lengths, tune_lengths = fit_and_tune(corpus)
    assert (fit_lengths, tune_lengths) == ([95, 38, 19], [5, 2, 0])
    assert tune.tolist() == [95, 96, 97, 98, 99, 138, 139]
    assert sorted(fit.tolist() + tune.tolist()) == corpus.train.tolist()  # fit + tune = train, exactly


def test_tune_windows_never_touch_training_or_reported_validation_tokens():
    corpus = _corpus([4000, 2600, 1400], [210, 136, 73])
    grid, reported = tuning_data(corpus), reported_data(corpus)
    assert torch.equal(grid.train, reported.train) and torch.equal(reported.val, corpus.val)
    assert (grid.scored_on, reported.scored_on) == ("tune", "val") and grid.sha256 != reported.sha256
    # the windows each split's evaluation scores (evaluate_lm's draws, seed of step 0)
    windows = {}
    for name, tokens in (("tune", grid.val), ("val", reported.val)):
        generator = torch.Generator().manual_seed(step_seed(0, 0))
        drawn = [torch.cat(sample_batch(tokens, 4, 32, generator)) for _ in range(8)]
        windows[name] = set(torch.cat(drawn).flatten().tolist())
    trained = set(grid.train.tolist())
    assert windows["tune"] and windows["val"]
    assert not windows["tune"] & windows["val"] and not windows["tune"] & trained and not windows["val"] & trained
    assert grid.val_starts.tolist() == [0, 200, 330] and grid.val_bytes == grid.val.numel()
