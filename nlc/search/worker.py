"""Search workers: ask Optuna for a trial, sample its spec, train it, tell the result.

One worker is one process; ``--workers N`` starts N of them on this machine and more may
join from other machines through an RDB URL. A trial:

1. is claimed against the budget (``resume.claim``) before anything is sampled;
2. samples its spec (``space.SearchSpace.sample``), stored as the user attr ``spec``; an
   invalid sample is failed with the validation errors as the user attr ``invalid``;
3. resolves its *run spec*: the sampled spec with the search's ``--steps`` and the trial's
   seed (``trial_seed`` of the spec's ``train.seed`` and the number of the trial, the
   first of a retry chain, so a retried trial repeats the same run) written in, as the
   canonical YAML (``spec_to_yaml``) stored as the user attr ``run_spec``. That text is
   what trains and what the report writes as ``best.yaml``: ``nlc train best.yaml``
   repeats the best trial exactly (the same spec hash as its checkpoint);
4. trains that text with ``nlc.training.train`` under a heartbeat into ``OUT/trials/NNNN``;
   each validation bpb is recorded as an intermediate value (single objective only), and
   the pruner is asked at every validation but the last: a trial that reached its final
   step is always complete;
5. is told its objective values; a training error fails it with the user attr ``error``.

Before the first trial, the study's budget (:mod:`nlc.search.budget`) is checked: a resumed
search with other steps, spec or space is refused unless ``allow_changes``.
"""
from __future__ import annotations

import math
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ..graph.validate import load_spec, validate
from ..spec.load import spec_to_yaml
from ..subnormals import flush_subnormals
from .budget import check_budget, search_budget
from .resume import Heartbeat, budget_left, claim, fail_stale_trials, original_number
from .space import SearchSpace, TrialSpec
from .study import make_study, open_storage

POLL_S = 2.0  # a worker with no budget left waits this long between looks at others' trials


@dataclass(frozen=True)
class SearchRun:
    """Everything a worker process needs (picklable: workers are spawned processes)."""

    spec: str  # the search spec file
    out: Path  # run folder: the journal (unless ``storage``) and OUT/trials/NNNN
    overrides: tuple[str, ...] = ()
    storage: str | None = None  # an RDB URL or a .journal file; default: the journal in ``out``
    trials: int | None = None  # default: search.trials
    study: str | None = None  # default: the spec's name
    steps: int | None = None  # training steps per trial; default: the spec's train.steps
    heartbeat_s: float | None = None  # tests shorten the heartbeat; default: study.HEARTBEAT_S
    allow_changes: bool = False  # resume even when the budget differs (budget.check_budget)
    echo: Callable[[str], None] = field(default=print, compare=False)

    def space(self) -> SearchSpace:
        return SearchSpace(self.spec, self.overrides)

    def target(self, space: SearchSpace) -> int:
        return self.trials if self.trials is not None else space.search.trials

    def study_name(self, space: SearchSpace) -> str:
        return self.study or space.spec.name or Path(self.spec).stem


def trial_seed(base: int, number: int) -> int:
    """The training seed of trial ``number`` of a search whose spec has ``train.seed: base``."""
    return (base * 1_000_003 + number) % 2**31


def open_run_study(run: SearchRun, space: SearchSpace, worker: int = 0) -> optuna.Study:
    """Create or join the run's study, its budget checked (printing the changes allowed)."""
    storage = open_storage(run.storage if run.storage is not None else run.out)
    study = make_study(storage, run.study_name(space), list(space.search.objectives), space.search.prune,
                       run.target(space), seed=space.spec.train.seed, worker=worker)
    changes = check_budget(study, search_budget(space, run.steps), allow_changes=run.allow_changes)
    if changes:
        run.echo(f"study '{study.study_name}': continuing with changed settings (--allow-changes) from "
                 f"trial {len(study.get_trials(deepcopy=False))} on:\n  " + "\n  ".join(changes))
    return study


def run_worker(run: SearchRun, worker: int = 0) -> list[int]:
    """Run trials until the study has its budget; the numbers of the trials run here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # ask/tell drives the RDB heartbeat itself (Heartbeat, fail_stale_trials), not optimize()
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    space = run.space()
    study = open_run_study(run, space, worker)
    target, done = run.target(space), []
    while True:
        for number in fail_stale_trials(study):
            run.echo(f"trial {number}: its worker is gone; failed and queued again")
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if budget_left(study, target) <= 0 and not waiting:
            if not any(t.state == TrialState.RUNNING for t in trials):
                return done
            time.sleep(POLL_S)  # others still run trials: one may die and need a retry
            continue
        trial = study.ask()
        if claim(study, trial, target):
            run_trial(run, space, study, trial)
            done.append(trial.number)


def run_trial(run: SearchRun, space: SearchSpace, study: optuna.Study, trial: optuna.Trial) -> None:
    frozen = study._storage.get_trial(trial._trial_id)
    sampled = space.sample(trial)
    trial.set_user_attr("spec", sampled.yaml())
    if sampled.dropped:
        trial.set_user_attr("dropped", list(sampled.dropped))
    text, error, seed = None, sampled.error, None
    if sampled.valid:  # its run spec, with --steps and the seed, is validated again
        seed = trial_seed(sampled.spec.train.seed, original_number(frozen))
        text, error = run_spec_text(sampled, run.steps, seed)
    if text is None:
        trial.set_user_attr("invalid", error)
        _tell(study, trial, state=TrialState.FAIL)
        run.echo(f"trial {trial.number}: invalid spec\n{error}")
        return
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("run_spec", text)
    beat = {} if run.heartbeat_s is None else {"interval": run.heartbeat_s}
    start = time.perf_counter()
    with Heartbeat(study, trial, **beat):
        try:
            measured = _train(run, trial, text, single=len(space.search.objectives) == 1)
        except optuna.TrialPruned as pruned:
            _tell(study, trial, state=TrialState.PRUNED)
            run.echo(f"trial {trial.number}: {pruned}")
            return
        except Exception as err:  # a trial that cannot train is a result, never a crash
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            _tell(study, trial, state=TrialState.FAIL)
            run.echo(f"trial {trial.number}: failed: {type(err).__name__}: {err}")
            return
    seconds = time.perf_counter() - start
    for key, value in {**measured, "seconds": seconds}.items():
        trial.set_user_attr(key, value)
    values = [measured[o] for o in space.search.objectives]
    if not all(math.isfinite(v) for v in values):
        trial.set_user_attr("error", f"non-finite objective values {values}")
        _tell(study, trial, state=TrialState.FAIL)
        return
    _tell(study, trial, values=values)
    shown = ", ".join(f"{o} {v:.4g}" for o, v in zip(space.search.objectives, values))
    run.echo(f"trial {trial.number}: {shown} ({seconds:.0f} s)")


def _tell(study: optuna.Study, trial: optuna.Trial, **result: Any) -> None:
    try:
        study.tell(trial, **result)
    except UpdateFinishedTrialError:  # failed as stale meanwhile (a lost heartbeat): retried
        pass


def run_spec_text(sampled: TrialSpec, steps: int | None, seed: int) -> tuple[str | None, str]:
    """``(text, "")``: the canonical YAML of the spec a trial trains, ``sampled`` with
    ``train.steps`` (when the search sets ``--steps``) and the trial's ``train.seed``
    written in; ``(None, errors)`` when that spec does not validate."""
    settings = [f"train.seed={seed}"] + ([f"train.steps={steps}"] if steps is not None else [])
    spec, issues = validate(spec_to_yaml(sampled.spec), settings)
    if spec is None:
        return None, "\n".join(i.format() for i in issues if i.severity == "error")
    return spec_to_yaml(spec), ""


def _train(run: SearchRun, trial: optuna.Trial, text: str, *, single: bool) -> dict[str, float]:
    """Train the trial's run spec; its val_bpb, tokens_per_s and params. A single-objective
    trial reports each validation bpb as an intermediate value as it is measured and is
    pruned (``optuna.TrialPruned``) when the study's pruner says so at any validation before
    the last step (a trial that trained all its steps is complete); Optuna prunes no
    multi-objective trial."""
    from ..training import train  # lazy: keeps nlc search reports and dry runs free of torch

    spec = load_spec(text)

    def report(step: int, val: dict) -> None:
        if not math.isfinite(val["bpb"]):  # diverged: a failed trial, not a pruned one
            raise FloatingPointError(f"validation bpb is {val['bpb']} at step {step} (diverged)")
        trial.report(float(val["bpb"]), step)
        if step < spec.train.steps and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (val bpb {val['bpb']:.4f})")

    result = train(spec, out=run.out / "trials" / f"{trial.number:04d}", progress=False,
                   on_eval=report if single else None)
    rates = [r["tokens_per_s"] for r in result.metrics if "tokens_per_s" in r]
    return {
        "val_bpb": float(result.val_bpb),
        "tokens_per_s": float(sum(rates) / len(rates)) if rates else float("nan"),
        "params": float(sum(p.numel() for p in result.model.parameters())),
    }


def _spawned_worker(run: SearchRun, worker: int) -> None:
    flush_subnormals()  # a spawned process: before its first tensor op (nlc.subnormals)
    run_worker(run, worker)


def run_workers(run: SearchRun, workers: int, first: int = 0) -> list[str]:
    """``workers`` worker processes on this machine (one runs in this process); the names
    of those that exited with an error (their trials are retried by the next run)."""
    if workers <= 1:
        run_worker(run, first)
        return []
    open_run_study(run, run.space(), first)  # the budget is checked (and changes printed) once, here
    context = multiprocessing.get_context("spawn")  # torch is not fork-safe
    processes = [context.Process(target=_spawned_worker, args=(run, first + i), name=f"nlc-search-{first + i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    failed = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed:
        print(f"workers {', '.join(failed)} exited with an error; run the same command again "
              "to resume", file=sys.stderr)
    return failed


def dry_run(space: SearchSpace, count: int, seed: int = 0) -> list[TrialSpec]:
    """``count`` specs sampled at random (no storage, nothing trained)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, state=TrialState.FAIL)
    return out
