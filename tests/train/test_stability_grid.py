"""Every bundled spec and Table 6 ablation trains finitely at every outer learning rate of the
stability sweep's grid (``benchmarks/stability.py``: 2e-3 .. 1.6e-2), at a tiny size (width 32, 2 heads, one block repetition, batch 4 x 32
bytes of Shakespeare, 6 steps, the spec's own optimizer levels, nothing clipped or added).

The sweep at the bench size, 3 seeds and 64 steps is ``benchmarks/stability.py`` (its results:
docs/benchmarks.md, "Stability"); this is its fast guard: ``nlc.train`` stops a run whose loss,
gradients or weights go non-finite with :class:`~nlc.errors.NonFiniteError`, which fails the test.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import nlc
from benchmarks.stability import LRS
from nlc.data import load_corpus

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "ablations").glob("*.yaml"))
TINY = ["model.width=32", "model.heads=2", "model.blocks.0.repeat=1", "train.seq_len=32", "train.batch=4",
        "train.eval_every=6", "train.eval_batches=1"]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("shakespeare")


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_lr_of_the_grid_trains_finitely(spec, corpus, tmp_path):
    for lr in LRS:
        result = nlc.train(spec, data=corpus, out=tmp_path / f"lr{lr:g}", steps=6, seed=0, progress=False,
                           overrides=[*TINY, f"levels.outer.lr={lr}"])
        losses = [r["loss"] for r in result.metrics if r["kind"] == "train"]
        assert len(losses) == 6 and all(math.isfinite(v) for v in losses), (spec.stem, lr, losses)
        assert math.isfinite(result.val_bpb)
