"""``nlc runs ls`` / ``nlc runs plot``: one real tiny run, and copies of it made into each
state a run folder can be found in (stopped, killed, diverged, damaged)."""
from __future__ import annotations

import json
import shutil
import statistics
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import nlc
from nlc.cli.app import app
from nlc.runs import find_runs, read_run
from nlc.training.metrics import read_metrics

TINY = Path(__file__).parent / "train" / "tiny.yaml"
REPO = Path(__file__).resolve().parents[1]


def design_doc() -> SimpleNamespace:
    """Real text in memory (the design document's bytes, 90/10): data nlc.train accepts."""
    raw = torch.tensor(list((REPO / "docs" / "design.md").read_bytes()), dtype=torch.uint8)
    cut = int(raw.numel() * 0.9)
    return SimpleNamespace(name="design-doc", train=raw[:cut], val=raw[cut:], vocab=256)


def _cut_metrics(run: Path, last_step: int) -> None:
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["step"] <= last_step]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _back_to_step_2(run: Path) -> None:
    shutil.rmtree(run / "checkpoint")
    (run / "checkpoint-2").rename(run / "checkpoint")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``root/`` with one complete 4-step run (checkpoints kept at steps 2 and 4) and copies:
    ``group/stopped`` (killed right after the step-2 checkpoint), ``group/killed`` (steps
    logged after it), ``group/fresh`` (metrics, no checkpoint yet), ``diverged`` (a
    non_finite record), ``damaged`` (a truncated meta.json), ``garbled`` (metrics not UTF-8)."""
    root = tmp_path_factory.mktemp("runs")
    nlc.train(TINY, data=design_doc(), out=root / "complete", steps=4, overrides=["train.eval_every=2"],
              progress=False, keep_checkpoints=True)
    copies = {name: root / name for name in ("group/stopped", "group/killed", "group/fresh", "diverged",
                                              "damaged", "garbled")}
    for path in copies.values():
        shutil.copytree(root / "complete", path)
    _back_to_step_2(copies["group/stopped"])
    _cut_metrics(copies["group/stopped"], 2)
    _back_to_step_2(copies["group/killed"])
    for name in ("checkpoint", "checkpoint-2", "checkpoint-4"):
        shutil.rmtree(copies["group/fresh"] / name)
    with (copies["diverged"] / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "non_finite", "step": 5, "level": "cms", "position": 3,
                            "message": "loss is nan"}) + "\n")
    (copies["damaged"] / "checkpoint" / "meta.json").write_text('{"format": 1, "st')
    (copies["garbled"] / "metrics.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    (root / "notes").mkdir()  # not a run: passed over
    return root


def test_find_runs_stops_at_run_folders(runs):
    assert [p.relative_to(runs).as_posix() for p in find_runs(runs)] == [
        "complete", "damaged", "diverged", "garbled", "group/fresh", "group/killed", "group/stopped"]
    assert find_runs(runs, depth=1) == [runs / n for n in ("complete", "damaged", "diverged", "garbled")]
    assert find_runs(runs / "complete") == [runs / "complete"]


def test_a_complete_run_is_summarised_from_its_metrics_and_checkpoint(runs):
    records = read_metrics(runs / "complete" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    run = read_run(runs / "complete")
    assert (run.status, run.spec, run.step, run.steps) == ("complete", "tiny", 4, 4)
    assert run.train_loss == train[-1]["loss"] and run.val_bpb == val[-1]["bpb"] and val[-1]["step"] == 4
    assert run.tokens_per_s == statistics.median(r["tokens_per_s"] for r in train)


@pytest.mark.parametrize("name, status, step, steps", [
    ("group/stopped", "stopped", 2, 4),
    ("group/killed", "running-or-killed", 4, 4),
    ("group/fresh", "running-or-killed", 4, None),
    ("diverged", "diverged", 5, 4),
])
def test_status_of_each_kind_of_run(runs, name, status, step, steps):
    run = read_run(runs / name)
    assert (run.status, run.step, run.steps) == (status, step, steps)
    assert run.spec == (None if name == "group/fresh" else "tiny")


def test_a_damaged_folder_is_unreadable_with_its_reason_not_a_traceback(runs):
    damaged = read_run(runs / "damaged")
    assert damaged.status == ("unreadable: checkpoint/meta.json: "
                              "not JSON (Unterminated string starting at: line 1, column 15)")
    assert len(damaged.records) == len(read_metrics(runs / "complete" / "metrics.jsonl"))  # still plottable
    assert read_run(runs / "garbled").status == "unreadable: metrics.jsonl: not UTF-8 text"


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def test_ls_tables_every_run_with_its_numbers(runs):
    result = _invoke("runs", "ls", str(runs))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith(str(runs))}
    complete = read_run(runs / "complete")
    assert rows[str(runs / "complete")][1:] == [
        "tiny", "4/4", f"{complete.train_loss:.4f}", f"{complete.val_bpb:.4f}", f"{complete.tokens_per_s:,.0f}",
        "complete"]
    assert rows[str(runs / "group" / "fresh")][1:3] == ["?", "4/-"]
    assert rows[str(runs / "diverged")][-1] == "diverged"
    assert rows[str(runs / "damaged")][1:4] == ["?", "-/-", "-"] and "unreadable:" in rows[str(runs / "damaged")]
    assert "Traceback" not in result.output
    assert len(rows) == 7


def test_ls_json_is_the_same_rows(runs):
    result = _invoke("runs", "ls", str(runs / "complete"), str(runs / "diverged"), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["path"] for r in rows] == [str(runs / "complete"), str(runs / "diverged")]
    assert rows[0] == read_run(runs / "complete").as_json()
    assert rows[1]["status"] == "diverged" and rows[1]["steps"] == 4


def test_ls_of_a_missing_folder_exits_2(runs):
    result = _invoke("runs", "ls", str(runs / "nope"))
    assert result.exit_code == 2 and result.stderr == f"error: not a folder: {runs / 'nope'}\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_overlays_the_runs_in_one_png(runs, tmp_path):
    out = tmp_path / "compare.png"
    result = _invoke("runs", "plot", str(runs / "complete"), str(runs / "group"), str(runs / "garbled"),
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (4 runs)\n"
    assert f"warning: {runs / 'garbled'}: left out (unreadable: " in result.stderr
    assert _png_size(out) == (1320, 495)  # 12 x 4.5 inches at 110 dpi
    assert out.stat().st_size > 20_000  # two panels of curves, not a blank image
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]  # no temporary file left


def test_plot_of_folders_without_runs_exits_2(runs, tmp_path):
    result = _invoke("runs", "plot", str(runs / "notes"), "--out", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and result.stderr == f"error: no run with curves under {runs / 'notes'}\n"
    assert not (tmp_path / "x.png").exists()
