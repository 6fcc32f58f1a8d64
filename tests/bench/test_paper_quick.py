"""``nlc bench paper --smoke`` end to end: it trains, chooses each lr on the tune split, evaluates,
probes, writes every output into its run folder (or the report where ``--report`` says) and
resumes.

The smoke size (two models, four steps) keeps the default run under 90 s; ``--quick``
(every model, minutes) runs the same code under ``-m slow``.
"""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from nlc.cli.app import app


def test_smoke_run_writes_into_its_run_folder_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "paper", "--smoke"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "paper"  # the default --out; nothing else is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    data = json.loads((out / "results" / "paper.json").read_text())
    assert list(data["models"]) == ["Transformer++", "HOPE"]
    assert data["command"] == "nlc bench paper --smoke"
    plan = data["plan"]
    for label, entry in data["models"].items():
        assert abs(entry["params_compiled"] / data["target_params"] - 1) <= 0.05, label
        assert entry["params_compiled"] == entry["match"]["params"]
        grid = entry["grid"]  # a two-point grid is always won at an edge: extended once
        assert grid["scored_on"] == "tune" and len(grid["extensions"]) == 1 and len(entry["sweep"]) == 3
        assert entry["best_lr"] == grid["best_lr"] in [run["lr"] for run in entry["sweep"]]
        assert all(run["scored_on"] == "tune" and run["tokens"] == plan["grid_tokens_per_run"]
                   for run in entry["sweep"])
        (run,) = entry["lm"]
        assert run["scored_on"] == "val" and run["lr"] == entry["best_lr"] and run["resumed_at"] == 0
        assert math.isfinite(run["val_bpb"]) and 0 < run["val_bpb"] < 9  # untrained bytes: 8 bits
        assert run["curve"][-1][1] == plan["tokens_per_run"]
        passkey = entry["retrieval"]["passkey"]["0"]
        assert set(passkey) == {"256"} and 0.0 <= passkey["256"] <= 1.0
        for task, shapes in (("mqar", {"32x4", "64x8"}), ("copy", {"40", "64"}), ("passkey", {"256", "512"})):
            (run,) = entry["synthetic"][task].values()  # calibrated against 0%: every task counts
            assert set(run["accuracy"]) == shapes and all(0.0 <= a <= 1.0 for a in run["accuracy"].values())
            assert run["steps"] == data["synthetic"][task]["calibration"]["budget"] == 2
        (deployed,) = entry["deployment"]  # the seed's LM deployed on pydocs, whole state carried
        conditions = {"fresh", "carried"} | ({"dynamic_fresh", "dynamic_carried"} if label == "Transformer++" else set())
        assert set(deployed["conditions"]) == conditions and deployed["tokens"] == plan["deploy_tokens"]
        assert all(math.isfinite(c["bpb_all"]) for c in deployed["conditions"].values())
        assert deployed["pretrain"]["forgetting"]["carried"] == pytest.approx(
            deployed["pretrain"]["after"]["carried"] - deployed["pretrain"]["before"]["carried"])
        (continual,) = entry["continual"]
        assert continual["metrics"]["acc"] == continual["R"][-1][0]
    hope = data["models"]["HOPE"]
    assert (out / "hope" / f"lm-lr{hope['best_lr']:g}-s0" / "metrics.jsonl").exists()
    assert (out / "hope" / "grid-lr0.001-s0" / "run_key.txt").exists()
    report = (out / "results.md").read_text()
    assert report.count("| Transformer++ |") >= 1 and "| Transformer++ | dynamic eval, carried |" in report
    assert "forgetting on `shakespeare` = bpb after the stream - before" in report
    assert (out / "results" / "deployment.png").exists()
    probe = data["probes"]["HOPE, seq 64"]
    assert (probe["seq_len"], probe["batch"], probe["lr"]) == (64, 1, hope["best_lr"])
    assert probe["lm"][0]["curve"][-1][1] == plan["tokens_per_run"]  # same tokens, longer sequences
    # the same command on the same run folder resumes: every unit is loaded, nothing retrains;
    # --report puts the report (and its JSON and figures) where it says, and only there
    again = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--report", "elsewhere/results.md"])
    assert again.exit_code == 0, again.output
    assert again.output.count("loaded from") == 12  # 3 calibrations + 2 models x (grid, seed 0, synthetic,
    #                                                  continual) + 1 probe
    reloaded = json.loads((tmp_path / "elsewhere" / "results" / "paper.json").read_text())
    assert reloaded["models"] == data["models"] and reloaded["probes"] == data["probes"]
    assert reloaded["command"] == "nlc bench paper --smoke --report=elsewhere/results.md"
    assert (tmp_path / "elsewhere" / "results.md").exists()


def test_unknown_model_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--models", "gpt5", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown model(s) ['gpt5']" in result.output and "hope_no_cms" in result.output


def test_removed_and_bad_output_flags_are_clear_errors(tmp_path):
    docs = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--docs", str(tmp_path / "d")])
    assert docs.exit_code == 2 and "--docs was replaced" in docs.output
    assert f"--report {tmp_path / 'd' / 'results.md'}" in docs.output
    report = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--out", str(tmp_path / "o"),
                                      "--report", str(tmp_path / "paper.md")])
    assert report.exit_code == 1 and "ends in results.md" in report.output
    both = CliRunner().invoke(app, ["bench", "paper", "--quick", "--full"])
    assert both.exit_code == 2 and "choose one of --smoke, --quick and --full" in both.output
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_dry_run_prints_the_plan_and_its_expected_wall_time(tmp_path):
    result = CliRunner().invoke(app, ["bench", "paper", "--full", "--jobs", "2", "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "9 model(s) x 3 seed(s) on cpu: 1,048,576 training tokens per LM run" in result.output
    assert "expected wall time" in result.output and "on 2 job(s)" in result.output
    cuda = CliRunner().invoke(app, ["bench", "paper", "--device", "cuda", "--dry-run", "--out", str(tmp_path)])
    assert cuda.exit_code == 0 and "[paper/gpu]" in cuda.output and "2,097,152 training tokens" in cuda.output
    assert "no wall-time estimate" in cuda.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_run_covers_every_model_within_the_parameter_tolerance(tmp_path):
    from nlc.bench import MODELS

    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["bench", "paper", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results" / "paper.json").read_text())
    assert list(data["models"]) == [m.label for m in MODELS]
    for label, entry in data["models"].items():
        assert abs(entry["params_compiled"] / data["target_params"] - 1) <= 0.05, label
        assert len(data["plan"]["lrs"]) <= len(entry["sweep"]) <= len(data["plan"]["lrs"]) + 1
        assert all(math.isfinite(run["val_bpb"]) for run in entry["lm"]), label
