"""PostgreSQL storage end to end: 2 local workers, 4 tiny trials, one shared study.

Needs a server: ``eval "$(bash .ci/postgres)"`` exports ``NLC_TEST_POSTGRES_URL``."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nlc.search import SearchRun, load_study, run_workers, write_report
from nlc.search.resume import SURPLUS_ATTR, WORKER_ATTR

from .tiny import write_tiny_search

URL = os.environ.get("NLC_TEST_POSTGRES_URL")


@pytest.mark.skipif(not URL, reason="NLC_TEST_POSTGRES_URL is unset: run eval \"$(bash .ci/postgres)\" first")
def test_postgres_two_workers_four_trials(tmp_path: Path):
    name = f"nlc-test-{uuid.uuid4().hex[:8]}"  # a fresh study on a reused database
    spec = write_tiny_search(tmp_path)
    run_workers(SearchRun(spec=str(spec), out=tmp_path / "run", storage=URL, study=name), workers=2)
    study = load_study(URL, name)
    trials = [t for t in study.get_trials() if not t.system_attrs.get(SURPLUS_ATTR)]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert not any(WORKER_ATTR in t.system_attrs for t in trials)  # RDB: Optuna's own heartbeat
    assert len({t.number for t in trials}) == 4
    report = write_report(study, tmp_path / "report")
    assert report["counts"] == {"COMPLETE": 4} and (tmp_path / "report" / "best.yaml").is_file()
