"""Journal-file liveness, stale trials, retries and the trial budget, on a real journal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nlc.search.resume import (
    HEARTBEAT_ATTR, SURPLUS_ATTR, WORKER_ATTR, Heartbeat, budget_left, claim, fail_stale_trials,
    original_number, worker_id, worker_is_gone,
)
from nlc.search.study import SearchError, load_study, make_study, open_storage


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return make_study(open_storage(tmp_path), "s", ["val_bpb"], "median", target=2, seed=0)


def _dead_worker() -> str:
    """The worker id of a process that ran on this host and was SIGKILLed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = os.uname().nodename
    from nlc.search.resume import _process_start

    start = _process_start(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return f"{host}:{child.pid}:{start}"


def test_liveness_of_workers():
    assert not worker_is_gone(worker_id())
    assert worker_is_gone(_dead_worker())
    assert not worker_is_gone("another-host:1:1")  # other hosts: only the heartbeat tells
    host, pid, _ = worker_id().split(":")
    assert worker_is_gone(f"{host}:{pid}:0")  # same pid, other start time: a reused pid


def test_budget_claims_and_surplus(study: optuna.Study):
    first, second = study.ask(), study.ask()
    third = study.ask()  # e.g. a concurrent worker that asked too late
    assert claim(study, first, 2) and claim(study, second, 2)
    assert not claim(study, third, 2)
    frozen = study.get_trials()[third.number]
    assert frozen.state == TrialState.FAIL and frozen.system_attrs[SURPLUS_ATTR] is True
    assert budget_left(study, 2) == 0
    assert budget_left(study, 3) == 1  # surplus trials never use the budget


def test_dead_worker_trial_is_failed_once_and_retried(study: optuna.Study):
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, _dead_worker())
    alive = study.ask()
    with Heartbeat(study, alive, interval=0.05):
        time.sleep(0.2)
        assert fail_stale_trials(study) == [trial.number]
        assert fail_stale_trials(study) == []  # already failed: nobody fails it again
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = study.ask()  # the waiting retry comes first
    frozen = study._storage.get_trial(retry._trial_id)
    assert retry.number == 2 and frozen.params == study.get_trials()[0].params
    assert original_number(frozen) == trial.number
    assert WORKER_ATTR not in frozen.system_attrs and HEARTBEAT_ATTR not in frozen.system_attrs
    # the retry stands for the failed trial: two trials are counted, so the retry is in budget
    assert claim(study, retry, 2) and budget_left(study, 2) == 0


def test_silent_heartbeat_is_stale_after_grace(study: optuna.Study):
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, "elsewhere:1:1")
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 30)
    assert fail_stale_trials(study, grace=60) == []
    assert fail_stale_trials(study, grace=10) == [trial.number]


def test_study_errors(tmp_path: Path, study: optuna.Study):
    with pytest.raises(SearchError, match="optimises \\['val_bpb'\\], not \\['val_bpb', 'params'\\]"):
        make_study(open_storage(tmp_path), "s", ["val_bpb", "params"], "none", target=2)
    with pytest.raises(SearchError, match="no study journal at"):
        load_study(tmp_path / "elsewhere")
    with pytest.raises(SearchError, match="no study 't'"):
        load_study(tmp_path, "t")
    assert load_study(tmp_path).study_name == "s"
