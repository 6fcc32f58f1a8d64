"""No trial lost, none duplicated: heartbeats, stale trials, retries and the trial budget.

A worker that dies (SIGKILL, a lost machine) leaves its trial RUNNING. Every worker, before
it asks for a trial, fails such *stale* trials and enqueues each once more with the same
parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``: the retry carries
``system_attrs["failed_trial"]``, the number of the trial it replaces, at most
``MAX_RETRY`` times).

* RDB storages: Optuna's own heartbeat (``RDBStorage(heartbeat_interval, grace_period)``)
  and ``optuna.storages.fail_stale_trials``.
* Journal files (no heartbeat in Optuna): the equivalent here. A running trial records its
  worker as ``host:pid:start`` (``start``: the process start time, so a reused pid is not
  mistaken for the worker) and a ``heartbeat`` time every ``HEARTBEAT_S`` seconds. It is
  stale when its worker is on this host and no longer runs, or its heartbeat is older than
  ``GRACE_S``. Failing it is a journal write that only one worker can win.

**Budget.** The search wants ``target`` finished trials. Trial numbers are given out in
order, so trial ``n`` *counts* the earlier trials that are running, waiting or finished,
leaving out the failed ones that were retried (their retry stands for them) and the surplus
ones. When ``target`` of them are counted, ``n`` is *surplus*: it is failed at once, before
any sampling, with ``system_attrs["surplus"]``. Every worker decides the same way, so
concurrent workers never run more than ``target`` trials, and a retried trial takes the
place of the one it replaces.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from .study import GRACE_S, HEARTBEAT_S, MAX_RETRY

WORKER_ATTR, HEARTBEAT_ATTR, SURPLUS_ATTR, RETRY_ATTR = "worker", "heartbeat", "surplus", "failed_trial"


def _process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot ('' where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def worker_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def worker_is_gone(worker: str) -> bool:
    """True when ``worker`` ran on this host and that process no longer runs."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it runs
        return False
    return _is_zombie(pid) or (bool(start) and _process_start(pid) != start)


def uses_optuna_heartbeat(study: optuna.Study) -> bool:
    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache layer
    return isinstance(storage, optuna.storages.RDBStorage)


class Heartbeat:
    """Keeps a running trial alive in the storage while its worker trains it."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float = HEARTBEAT_S) -> None:
        self.storage, self.trial_id, self.interval = study._storage, trial._trial_id, interval
        self.rdb = uses_optuna_heartbeat(study)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nlc-search-heartbeat", daemon=True)
        if not self.rdb:
            self.storage.set_trial_system_attr(self.trial_id, WORKER_ATTR, worker_id())

    def _beat(self) -> None:
        if self.rdb:
            self.storage.record_heartbeat(self.trial_id)
        else:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except UpdateFinishedTrialError:  # finished (or failed as stale) meanwhile
                return

    def __enter__(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale_trials(study: optuna.Study, grace: float = GRACE_S) -> list[int]:
    """Fail the trials whose worker is gone and enqueue their retries; their numbers."""
    if uses_optuna_heartbeat(study):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        now = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        return sorted(before & now)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _journal_trial_is_stale(trial, grace):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker failed it (or it just finished)
            continue
        frozen = study._storage.get_trial(trial._trial_id)
        # the retry is a new run: it must not inherit this worker's liveness records
        frozen.system_attrs = {k: v for k, v in frozen.system_attrs.items()
                               if k not in (WORKER_ATTR, HEARTBEAT_ATTR)}
        retry(study, frozen)
        failed.append(trial.number)
    return failed


def _journal_trial_is_stale(trial: FrozenTrial, grace: float) -> bool:
    worker = trial.system_attrs.get(WORKER_ATTR)
    if worker is not None and worker_is_gone(worker):
        return True
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    last = beat if beat is not None else (trial.datetime_start.timestamp() if trial.datetime_start else None)
    return last is not None and time.time() - last > grace


def counted(trials: list[FrozenTrial], below: int | None = None) -> list[FrozenTrial]:
    """The trials that use the budget (numbers below ``below``): see the module docstring."""
    retried = {t.system_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.system_attrs}
    return [t for t in trials if (below is None or t.number < below)
            and not t.system_attrs.get(SURPLUS_ATTR)
            and not (t.state == TrialState.FAIL and t.number in retried)]


def budget_left(study: optuna.Study, target: int) -> int:
    return target - len(counted(study.get_trials(deepcopy=False)))


def claim(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """Whether ``trial`` is within the budget; a surplus trial is failed and marked here."""
    if len(counted(study.get_trials(deepcopy=False), below=trial.number)) < target:
        return True
    study._storage.set_trial_system_attr(trial._trial_id, SURPLUS_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)
    return False


def original_number(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry chain (a retry keeps its seed)."""
    attrs = trial.system_attrs
    history = attrs.get("retry_history")
    return history[0] if history else attrs.get(RETRY_ATTR, trial.number)
