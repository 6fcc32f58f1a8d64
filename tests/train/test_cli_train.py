"""``nlc train`` end to end on tiny settings, and the errors a user can hit: a foreign
checkpoint in --out, an invalid spec."""
from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.training import read_meta
from nlc.training.metrics import read_metrics

TINY = str(Path(__file__).parent / "tiny.yaml")


def _train(*args: str):
    return CliRunner().invoke(app, ["train", *args, "--no-progress"])


def test_train_reports_bpb_checkpoint_and_a_sample_then_refuses_another_spec(tmp_path):
    first = _train(TINY, "--out", str(tmp_path), "--steps", "2", "--sample-tokens", "24", "--prompt", "ROMEO:")
    assert first.exit_code == 0, first.output
    val = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
    lines = first.stdout.splitlines()
    assert lines[:3] == [f"validation bpb: {val[-1]['bpb']:.4f}", f"checkpoint: {tmp_path / 'checkpoint'}", "sample:"]
    assert lines[3].startswith("ROMEO:") and len("\n".join(lines[3:])) >= len("ROMEO:") + 10
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = read_meta(tmp_path)["spec_sha256"]
    second = _train(TINY, "model.width=64", "--out", str(tmp_path), "--steps", "2", "--resume")
    assert second.exit_code == 2  # bad input: the run folder holds another spec's checkpoint
    assert f"spec sha256 {stored}" in second.stderr and "another --out" in second.stderr
    assert read_meta(tmp_path)["spec_sha256"] == stored  # untouched


def test_an_invalid_spec_is_reported_with_its_location(tmp_path):
    result = _train(TINY, "model.widht=64", "--out", str(tmp_path), "--sample-tokens", "0")
    assert result.exit_code == 1
    assert "model.widht" in result.stderr and "did you mean 'width'" in result.stderr
    assert not (tmp_path / "checkpoint").exists()
