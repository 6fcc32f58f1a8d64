"""Workers for real: two processes share one journal study; a SIGKILLed worker's trial is
retried on resume; invalid samples are recorded; the report's best spec trains.

The tests that spawn workers or train several trials are ``slow`` (``pytest -m slow
tests/search``); the default run keeps one real training worker (invalid samples)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.search import SearchRun, load_study, run_worker, run_workers, write_report
from nlc.search.resume import SURPLUS_ATTR, WORKER_ATTR
from nlc.search.study import open_storage
from nlc.search.worker import trial_seed
from nlc.graph.validate import load_spec

from .tiny import ROOT, states, write_tiny_search


def _quiet(_: str) -> None:
    """Workers print one line per trial; the tests read the study instead."""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-trial study run by two local worker processes."""
    folder = tmp_path_factory.mktemp("shared")
    run_workers(SearchRun(spec=str(write_tiny_search(folder)), out=folder / "run"), workers=2)
    return folder / "run"


@pytest.mark.slow  # spawns workers and trains several trials: see docs/search.md
def test_two_workers_share_one_journal_study(shared: Path):
    study = load_study(shared)
    trials = [t for t in study.get_trials() if not t.system_attrs.get(SURPLUS_ATTR)]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    pids = {t.system_attrs[WORKER_ATTR].split(":")[1] for t in trials}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # both spawned workers ran trials
    for t in trials:
        assert t.user_attrs["seed"] == trial_seed(0, t.number)
        assert t.values[0] > 0 and list(t.intermediate_values) == [1, 2]  # reported at each validation
        assert (shared / "trials" / f"{t.number:04d}").is_dir()
    # a finished study: a new worker has nothing to do and creates no trial
    assert run_worker(SearchRun(spec=str(shared.parent / "tiny_search.yaml"), out=shared, echo=_quiet)) == []
    assert len(load_study(shared).get_trials()) == len(study.get_trials())


@pytest.mark.slow  # spawns workers and trains several trials: see docs/search.md
def test_report_exports_a_best_spec_that_trains(shared: Path, tmp_path: Path):
    study = load_study(shared)
    report = write_report(study, tmp_path / "report")
    best = min((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    assert report["best"][0]["number"] == best.number and report["counts"] == {"COMPLETE": 4}
    assert json.loads((tmp_path / "report" / "report.json").read_text())["best"] == report["best"]
    assert (tmp_path / "report" / "history.png").stat().st_size > 1000
    spec = load_spec(tmp_path / "report" / "best.yaml")
    assert spec.levels["outer"].lr == pytest.approx(best.params["levels.outer.lr"])
    assert spec.levels["ffn"].expansion == best.params["levels.ffn.expansion"] and spec.search is None
    from nlc.training import train

    result = train(spec, data=spec.train.data, out=tmp_path / "retrain", steps=2, seed=0, progress=False)
    assert result.val_bpb > 0
    cli = CliRunner().invoke(app, ["search", "report", str(shared)])
    assert cli.exit_code == 0, cli.output
    assert "best.yaml" in cli.output and (shared / "report" / "best.yaml").is_file()


@pytest.mark.slow  # spawns workers and trains several trials: see docs/search.md
def test_sigkill_mid_trial_then_resume_loses_and_duplicates_nothing(tmp_path: Path):
    spec = write_tiny_search(tmp_path)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "nlc", "search", str(spec), "--trials", "3", "--out", str(out), "--steps", "12"]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        journal = out / "study.journal"
        if journal.exists() and journal.stat().st_size:
            running = [t for t in load_study(out).get_trials() if t.state == TrialState.RUNNING
                       and t.intermediate_values]  # mid-training: a validation was reported
            if running:
                break
        time.sleep(0.05)
    else:
        worker.kill()
        pytest.fail("the worker never started a trial")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed = running[0]
    run_worker(SearchRun(spec=str(spec), out=out, trials=3, steps=12, echo=_quiet))
    trials = load_study(out).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert trials[killed.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["seed"] == trial_seed(0, killed.number)  # the retry repeats the run
    assert not [t for t in trials if t.system_attrs.get(SURPLUS_ATTR)]
    assert len(trials) == 4


def test_invalid_samples_are_recorded_trials(tmp_path: Path):
    spec = write_tiny_search(tmp_path, extra="    model.heads: {choice: [2, 3]}\n")
    study_dir = tmp_path / "run"
    run_worker(SearchRun(spec=str(spec), out=study_dir, trials=3, echo=_quiet))
    trials = load_study(study_dir).get_trials()
    assert len(trials) == 3
    for t in trials:
        if t.params["model.heads"] == 3:
            assert t.state == TrialState.FAIL and "3 heads do not divide the width 16" in t.user_attrs["invalid"]
        else:
            assert t.state == TrialState.COMPLETE and "invalid" not in t.user_attrs
    assert {t.params["model.heads"] for t in trials} == {2, 3}  # both kinds were sampled


@pytest.mark.slow  # spawns workers and trains several trials: see docs/search.md
def test_multi_objective_pareto_report(tmp_path: Path):
    spec = write_tiny_search(tmp_path, objectives="[val_bpb, params]")
    run_worker(SearchRun(spec=str(spec), out=tmp_path / "run", trials=3, echo=_quiet))
    study = load_study(tmp_path / "run")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert states(study) == [TrialState.COMPLETE] * 3
    report = write_report(study, tmp_path / "report")
    front = {t.number for t in study.best_trials}
    assert {b["number"] for b in report["best"]} == front
    assert all((tmp_path / "report" / "pareto" / f"trial-{n:04d}.yaml").is_file() for n in front)
    assert (tmp_path / "report" / "pareto.png").is_file()


def test_dry_run_prints_sampled_specs(tmp_path: Path):
    result = CliRunner().invoke(app, ["search", str(ROOT / "specs" / "search" / "hope_cms.yaml"), "--dry-run", "3"])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(documents) == 3 and result.stdout.count("--- # sample") == 3
    for document in documents:
        assert "search" not in document
        path = tmp_path / "sample.yaml"
        path.write_text(yaml.safe_dump(document))
        assert load_spec(path).model.width == 32
    assert not (ROOT / "runs").exists() or not any((ROOT / "runs").glob("search-hope_cms*"))


def test_cli_reports_bad_spec_and_storage(tmp_path: Path):
    bad = CliRunner().invoke(app, ["search", str(ROOT / "specs" / "cms.yaml")])
    assert bad.exit_code == 1 and "the spec has no 'search:' block" in bad.output
    spec = write_tiny_search(tmp_path)
    url = CliRunner().invoke(app, ["search", str(spec), "--storage", "postgresql://nobody@127.0.0.1:1/none"])
    assert url.exit_code == 1 and "cannot open the study storage" in url.output
    missing = CliRunner().invoke(app, ["search", "report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no study journal" in missing.output
    assert open_storage(tmp_path / "x.journal") is not None and (tmp_path / "x.journal").is_file()


def test_pruner_stops_a_trial_at_its_first_validation(tmp_path: Path):
    """Validation bpb reaches Optuna while the trial trains (``train(on_eval=...)``): a pruner
    that prunes any bpb above 0 stops the trial after step 1 of its 2 steps."""
    import optuna

    from nlc.search.worker import run_trial

    spec = write_tiny_search(tmp_path)
    run = SearchRun(spec=str(spec), out=tmp_path / "run", echo=_quiet)
    space = run.space()
    study = optuna.create_study(storage=open_storage(tmp_path / "run"), study_name="prune",
                                pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    run_trial(run, space, study, trial)
    (frozen,) = study.get_trials()
    assert frozen.state == TrialState.PRUNED
    assert list(frozen.intermediate_values) == [1]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "trials" / "0000" / "metrics.jsonl").open()]
    assert max(r["step"] for r in metrics) == 1  # step 2 never ran
