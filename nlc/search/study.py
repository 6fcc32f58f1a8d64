"""Optuna storage and study for a search: a journal file by default, any RDB URL to share.

Storage targets:

* a folder (the run folder ``--out``): the journal file ``FOLDER/study.journal``;
* a path ending in ``.journal``: that journal file (one machine, or a shared file system);
* a URL (``postgresql://user@host:port/db``, ``sqlite:///x.db``, ...): an RDB storage with
  Optuna's heartbeat, so a trial whose worker died is failed and retried by the others.

A study is single-objective (``val_bpb``, minimised; pruned by the median rule or
successive halving) or multi-objective (``val_bpb`` with ``tokens_per_s``, maximised, or
``params``, minimised; never pruned, reported as a Pareto front). The sampler is TPE,
seeded per worker so that concurrent workers do not propose the same first trials.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from ..errors import NLCError

JOURNAL_NAME = "study.journal"
HEARTBEAT_S = 10  # a running trial refreshes its heartbeat this often ...
GRACE_S = 60  # ... and is stale (its worker is gone) after this long without one
MAX_RETRY = 2  # a trial whose worker died is retried this many times at most
OBJECTIVE_DIRECTIONS = {"val_bpb": "minimize", "tokens_per_s": "maximize", "params": "minimize"}


class SearchError(NLCError):
    """A search cannot start or continue (storage unreachable, no such study, ...)."""


def is_url(target: str | Path) -> bool:
    return "://" in str(target)


def journal_path(target: str | Path) -> Path:
    path = Path(target)
    return path if path.suffix == ".journal" else path / JOURNAL_NAME


def open_storage(target: str | Path, *, create: bool = True) -> optuna.storages.BaseStorage:
    """The Optuna storage named by a folder, a ``.journal`` file or an RDB URL."""
    if is_url(target):
        return _rdb_storage(str(target))
    path = journal_path(target)
    if not path.exists():
        if not create:
            raise SearchError(f"no study journal at {path}: give the --out folder of a search "
                              "or an RDB URL (postgresql://...)")
        path.parent.mkdir(parents=True, exist_ok=True)

    # the open(O_EXCL) lock also works on network file systems, so workers may share one file
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError  # lazy: only a database URL needs sqlalchemy

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat, retries
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    try:
        return optuna.storages.RDBStorage(_with_driver(url), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                          heartbeat_stale_trial_callback=retry)
    except (ArgumentError, SQLAlchemyError, ImportError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SearchError(f"cannot open the study storage {_hide_password(url)}: {detail} "
                          "(check the URL, that the server is running, and its driver, "
                          "e.g. psycopg2 for postgresql://)") from None


def _with_driver(url: str) -> str:
    """``postgresql://`` with the psycopg2 driver when psycopg (SQLAlchemy 2.1's default) is
    not installed but psycopg2 is."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _hide_password(url: str) -> str:
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def sampler_seed(seed: int, worker: int) -> int:
    """Distinct, reproducible sampler seeds for the workers of one study."""
    return (seed * 1_000_003 + worker) % 2**32


def make_study(storage: optuna.storages.BaseStorage, name: str, objectives: list[str], prune: str,
               target: int, *, seed: int = 0, worker: int = 0) -> optuna.Study:
    """Create the study, or join it when it exists (several workers, a resumed search)."""
    directions = [OBJECTIVE_DIRECTIONS[o] for o in objectives]
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE multivariate/group
    study = optuna.create_study(
        storage=storage, study_name=name, directions=directions, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed(seed, worker), n_startup_trials=5,
                                           multivariate=True, group=True),
        pruner=make_pruner(prune if len(objectives) == 1 else "none"),
    )
    stored = study.user_attrs.get("objectives")
    if stored is not None and stored != objectives:
        raise SearchError(f"study '{name}' optimises {stored}, not {objectives}: give another --out "
                          "folder or study, or the same search.objectives")
    if stored is None:
        study.set_user_attr("objectives", objectives)
    if study.user_attrs.get("trials") != target:  # more (or fewer) trials compare the same: the latest target
        study.set_user_attr("trials", target)
    return study


def make_pruner(prune: str) -> optuna.pruners.BasePruner:
    if prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def load_study(target: str | Path, name: str | None = None) -> optuna.Study:
    """An existing study, for the report: the only one in the storage unless ``name`` is given."""
    storage = open_storage(target, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name is None:
        if len(names) != 1:
            raise SearchError(f"{_hide_password(str(target))} holds {len(names)} studies "
                              f"({', '.join(names) or 'none'}): name one with --study")
        name = names[0]
    elif name not in names:
        raise SearchError(f"no study '{name}' in {_hide_password(str(target))} "
                          f"(it has: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)
