"""``nlc bench paper --smoke`` end to end: it trains, evaluates, probes, writes every output
and resumes.

The smoke size (two models, three steps) keeps the default run under 90 s; ``--quick``
(every model, minutes) runs the same code under ``-m slow``.
"""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from nlc.cli.app import app


def test_smoke_run_writes_the_table_the_json_and_the_figures(tmp_path):
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    result = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--runs", str(runs), "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    data = json.loads((docs / "results" / "paper.json").read_text())
    assert list(data["models"]) == ["Transformer++", "HOPE"]
    assert data["command"] == "nlc bench paper --smoke"
    for label, entry in data["models"].items():
        assert abs(entry["params_compiled"] / data["target_params"] - 1) <= 0.05, label
        assert entry["params_compiled"] == entry["match"]["params"]
        (run,) = entry["lm"]
        assert math.isfinite(run["val_bpb"]) and 0 < run["val_bpb"] < 9  # untrained bytes: 8 bits
        assert run["curve"][-1][1] == data["plan"]["tokens_per_run"]
        passkey = entry["retrieval"]["passkey"]["0"]
        assert set(passkey) == {"256"} and 0.0 <= passkey["256"] <= 1.0
        assert entry["retrieval"]["niah_number"]["0"] == {"256": None}  # NIAH needs ~400 bytes
        assert 0.0 <= entry["mqar"]["0"]["accuracy"]["32"] <= 1.0
        (continual,) = entry["continual"]
        assert continual["metrics"]["acc"] == continual["R"][-1][0]
    ranks = data["summary"]["metrics"]["val_bpb"]["stats"]
    better = min(ranks, key=lambda label: ranks[label]["mean"])
    assert ranks[better]["rank"] == 1
    text = (docs / "results.md").read_text()
    assert "These are `--smoke` numbers" in text and "| Transformer++ |" in text
    for name in ("bpb_curves", "retrieval", "mqar", "continual_R_1"):
        assert (docs / "results" / f"{name}.png").stat().st_size > 1000
    assert (runs / "hope" / "lm-lr0.001-s0" / "metrics.jsonl").exists()
    probe = data["probes"]["HOPE, seq 64"]
    assert (probe["seq_len"], probe["batch"], probe["lr"]) == (64, 1, data["models"]["HOPE"]["best_lr"])
    assert probe["lm"][0]["curve"][-1][1] == data["plan"]["tokens_per_run"]  # same tokens, longer sequences
    assert "| HOPE, seq 64 | context |" in text and (docs / "results" / "probes.png").stat().st_size > 1000
    # the same command on the same runs folder resumes: every unit is loaded, nothing retrains
    again = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--runs", str(runs), "--docs", str(tmp_path / "d2")])
    assert again.exit_code == 0, again.output
    assert again.output.count("loaded from") == 3
    reloaded = json.loads((tmp_path / "d2" / "results" / "paper.json").read_text())
    assert reloaded["models"] == data["models"] and reloaded["probes"] == data["probes"]


def test_unknown_model_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "paper", "--smoke", "--models", "gpt5", "--runs", str(tmp_path),
                                      "--docs", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown model(s) ['gpt5']" in result.output and "hope_no_cms" in result.output


@pytest.mark.slow
def test_quick_run_covers_every_model_within_the_parameter_tolerance(tmp_path):
    from nlc.bench import MODELS

    docs = tmp_path / "docs"
    result = CliRunner().invoke(app, ["bench", "paper", "--quick", "--runs", str(tmp_path / "runs"),
                                      "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    data = json.loads((docs / "results" / "paper.json").read_text())
    assert list(data["models"]) == [m.label for m in MODELS]
    for label, entry in data["models"].items():
        assert abs(entry["params_compiled"] / data["target_params"] - 1) <= 0.05, label
        assert len(entry["sweep"]) == len(data["plan"]["lrs"])
        assert all(math.isfinite(run["val_bpb"]) for run in entry["lm"]), label
