"""run_continual and run_genres end to end on tiny models and real local text (no fetch)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from nlc.continual import TokenSplits, cl_metrics, run_continual, run_genres, save_runs
from nlc.continual.domains import union_corpus
from nlc.continual.genres import LABEL_BASE, SEP, genre_accuracy, genre_groups, label_batch
from nlc.data import get_tokenizer
from nlc.data.corpus import LabelledDocument

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.width=16", "model.heads=2", "model.blocks.0.repeat=1", "train.batch=2",
        "train.seq_len=16", "train.eval_batches=1", "train.eval_every=100"]
BYTES = get_tokenizer("bytes")


def text_of(pattern: str, size: int) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob(pattern)))[:size]


def domain(name: str, pattern: str) -> TokenSplits:
    text = text_of(pattern, 3000)
    return TokenSplits.from_text(name, text[:2500], text[2500:], BYTES)


def test_union_gives_every_domain_an_equal_share():
    a = TokenSplits.from_text("a", "x" * 50, "v" * 5, BYTES)
    b = TokenSplits.from_text("b", "y" * 80, "w" * 7, BYTES)
    union = union_corpus({"a": a, "b": b})
    assert bytes(union.train.tolist()) == b"x" * 50 + b"y" * 50
    assert union.val.numel() == 12 and union.val_bytes == 12 and union.train_bytes == 100


def test_stream_with_baselines(tmp_path):
    corpora = {"prose": domain("prose", "docs/*.md"), "yaml": domain("yaml", "specs/*.yaml")}
    runs = run_continual("specs/transformer.yaml", stream=list(corpora), tokens_per_stage=32,
                         out=tmp_path, overrides=TINY, corpora=corpora, seed=3)
    model, naive, joint = runs
    assert [r.label for r in runs] == ["model", "naive", "joint"]
    assert naive.spec == "transformer" and len(joint.R) == 1
    for run in (model, naive):
        assert len(run.R) == 2 and all(len(row) == 2 for row in run.R)
        assert run.metrics == pytest.approx(cl_metrics(run.R, lower_is_better=True))
    assert all(0 < v < 16 and math.isfinite(v) for r in runs for row in r.R for v in row)
    assert joint.metrics["acc"] == pytest.approx(sum(joint.R[0]) / 2)
    assert (tmp_path / "stages" / "model" / "1-yaml" / "checkpoint" / "meta.json").is_file()
    json_path, png = save_runs(runs, tmp_path, {"seed": 3})
    saved = json.loads(json_path.read_text())
    assert saved["runs"][0]["R"] == model.R and png.stat().st_size > 1000


@dataclass(frozen=True)
class Labelled:
    """Real text with labels: the Markdown docs, the YAML specs and Python sources."""

    documents_by_label: dict


def labelled_documents() -> Labelled:
    by_label = {}
    for label, pattern in (("docs", "docs/*.md"), ("specs", "specs/*.yaml"),
                           ("code", "nlc/runtime/*.py")):
        files = sorted(ROOT.glob(pattern))[:3]
        docs = []
        for path in files:
            ids = BYTES.encode(path.read_text(encoding="utf-8")[:400])
            docs.append(LabelledDocument(path.name, label, ids[:320], ids[320:]))
        by_label[label] = docs
    return Labelled(by_label)


def test_genre_groups_are_sorted_and_balanced():
    assert genre_groups(["c", "a", "b", "e", "d"], 2) == [["a", "b", "c"], ["d", "e"]]
    assert [len(g) for g in genre_groups([str(i) for i in range(15)], 4)] == [4, 4, 4, 3]


def test_label_batch_layout():
    batch = label_batch([(torch.tensor([65, 66]), 2), (torch.tensor([67, 68]), 0)])
    assert batch.tokens.tolist() == [[65, 66, SEP], [67, 68, SEP]]
    assert batch.targets[:, -1].tolist() == [LABEL_BASE + 2, LABEL_BASE]
    assert batch.answer_mask.sum() == 2


class FavoursLabelTwo(nn.Module):
    """Test double: at every position, logits 10 for label 2, 5 for label 0, 1 for label 1."""

    vocab, teach_period = 256, None

    def init_state(self, batch):
        return {}

    def forward(self, tokens, state=None, targets=None):
        logits = torch.zeros(*tokens.shape, 256)
        for label, value in ((2, 10.0), (0, 5.0), (1, 1.0)):
            logits[..., LABEL_BASE + label] = value
        return logits, state


def test_only_genres_seen_so_far_can_be_predicted():
    batch = label_batch([(torch.tensor([65, 66]), 0)] * 3)
    assert genre_accuracy(FavoursLabelTwo(), batch, [0, 1], 2) == 1.0
    assert genre_accuracy(FavoursLabelTwo(), batch, [0, 1, 2], 2) == 0.0


def test_class_incremental_genres(tmp_path):
    runs = run_genres("specs/transformer.yaml", groups=2, tokens_per_stage=32, out=tmp_path,
                      overrides=TINY, corpus=labelled_documents(), baselines=False)
    (run,) = runs
    assert run.tasks == ["code+docs", "specs"] and run.stages == ["g0", "g1"]
    assert run.R[0][1] == 0.0  # genres not seen yet are not candidates
    assert all(0.0 <= v <= 1.0 for row in run.R for v in row)
    assert run.metrics == pytest.approx(cl_metrics(run.R))
