"""``nlc generate``, ``nlc eval`` and ``nlc continual`` end to end on a tiny checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.continual import TokenSplits
from nlc.data import get_tokenizer
from nlc.evaluate import evaluate_task
from nlc.generate import generate, printable
from nlc.training import load_checkpoint, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.width=16", "model.heads=2", "model.blocks.0.repeat=1", "train.batch=2",
        "train.seq_len=16", "train.eval_batches=1", "train.eval_every=100"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")[:3000]
    data = TokenSplits.from_text("design", text[:2500], text[2500:], get_tokenizer("bytes"))
    out = tmp_path_factory.mktemp("run")
    train("specs/transformer.yaml", data=data, out=out, steps=2, overrides=TINY, progress=False)
    return out


def test_generate_prints_prompt_and_the_greedy_continuation(checkpoint):
    result = CliRunner().invoke(app, ["generate", str(checkpoint), "--prompt", "The model",
                                      "--max-new-tokens", "12", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    model, _ = load_checkpoint(checkpoint)
    expected = "The model" + generate(model, "The model", max_new_tokens=12, temperature=0)
    assert result.stdout.rstrip("\n") == printable(expected)  # control characters escaped


def test_eval_task_table_and_json(checkpoint, tmp_path):
    out = tmp_path / "mqar.json"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--task", "mqar", "--lengths",
                                      "16,32", "--n", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.stdout.split())  # rich wraps the caption to the table's width
    assert "32* │" in words and "beyond the training length 16" in words
    saved = json.loads(out.read_text())
    model, _ = load_checkpoint(checkpoint)
    report = evaluate_task(model, "mqar", [16, 32], n=4, seed=0)
    assert saved["accuracy"] == {"16": report.accuracy[16], "32": report.accuracy[32]}
    assert saved["beyond_training"] == {"16": False, "32": True} and saved["spec"] == "transformer"


@pytest.mark.parametrize("args,message", [
    (["eval", "{ckpt}", "--task", "sorting"], "choose one of"),
    (["eval", "{ckpt}", "--task", "niah", "--lengths", "64"], "too short"),
    (["eval", "{ckpt}", "--task", "niah", "--lengths", "450", "--niah-value", "colour"], "NIAH value kind"),
    (["generate", "{ckpt}", "--prompt", "x", "--temperature", "-1"], "temperature"),
    (["generate", "/nonexistent/run", "--prompt", "x"], "no checkpoint"),
])
def test_clear_errors(checkpoint, args, message):
    result = CliRunner().invoke(app, [a.format(ckpt=checkpoint) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_continual_refuses_a_domain_twice():
    result = CliRunner().invoke(app, ["continual", "specs/transformer.yaml", "--stream",
                                      "shakespeare,shakespeare", "--no-baselines"])
    assert result.exit_code == 1 and "appears twice" in result.output
