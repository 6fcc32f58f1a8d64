"""Units of work of a comparison run, run in worker processes and saved one file each.

A *unit* is one part of one model's columns (:func:`.run.model_units`: its lr grid, one
seed's LM run, its tasks) or one probe (:func:`.probes.probe_unit`); a unit may need the
results of others (a seed run and a probe need their model's chosen lr). :func:`run_units`
runs every unit whose needs are met, in the given order (put the slowest first), on
``jobs`` worker processes of ``threads`` torch threads each (``jobs=1``: in this
process), and writes each result to
``runs/results/<unit>.json`` atomically the moment it finishes. A unit whose file exists
with the same *key* (a digest of its function, arguments and ``salt``: the plan, the
resolved spec, the probe, the needed results) is loaded instead of rerun, so a killed
run, rerun with the same run folder (``nlc bench paper --out``), loses only the units that
were in flight (and their LM runs resume from their checkpoints: :mod:`.lm`); a unit whose
key changed (any setting of the plan, the spec, the results it needs) is run again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import torch

from ..files import atomic_write_bytes
from ..subnormals import flush_subnormals

Log = Callable[[str], None]


@dataclass(frozen=True)
class Unit:
    """``fn(*args(done), log=...)`` → a JSON-ready dict; ``done`` maps the names in
    ``needs`` to their results. ``fn`` must be a module-level function (it is pickled)."""

    name: str
    fn: Callable[..., dict]
    args: Callable[[dict], tuple]
    needs: tuple[str, ...] = ()
    salt: str = ""


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot key a {type(value).__name__}")


def unit_key(unit: Unit, args: tuple) -> str:
    """The digest that decides whether a saved result is still this unit's."""
    text = json.dumps([unit.fn.__module__, unit.fn.__qualname__, args, unit.salt], default=_jsonable,
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def unit_path(runs: Path, name: str) -> Path:
    return runs / "results" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".json")


def _load(path: Path, key: str) -> dict | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved["result"] if saved.get("key") == key else None


def _save(path: Path, key: str, name: str, result: dict) -> None:
    data = json.dumps({"unit": name, "key": key, "result": result}, indent=1) + "\n"
    atomic_write_bytes(path, data.encode("utf-8"))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _in_worker(fn: Callable[..., dict], args: tuple, threads: int) -> dict:
    flush_subnormals()  # a spawned process: before its first tensor op (nlc.subnormals)
    torch.set_num_threads(threads)
    return fn(*args, log=_stderr)


def _start_ready(waiting: list[Unit], done: dict, running: dict, pool, jobs: int, threads: int, runs: Path,
                 log: Log) -> None:
    """Load or start every unit whose needs are met, until none is left to load or start
    (a saved unit never waits for a free worker; loading one may make others ready)."""
    progress = True
    while progress:
        progress = False
        for unit in [u for u in waiting if all(n in done for n in u.needs)]:
            args = unit.args(done)
            key, path = unit_key(unit, args), unit_path(runs, unit.name)
            saved = _load(path, key)
            if saved is not None:
                log(f"  {unit.name}: loaded from {path}")
                done[unit.name] = saved
            elif pool is None:
                done[unit.name] = unit.fn(*args, log=log)
                _save(path, key, unit.name, done[unit.name])
            elif len(running) < jobs:
                running[pool.submit(_in_worker, unit.fn, args, threads)] = (unit, key, path)
            else:
                continue
            waiting.remove(unit)
            progress = True


def run_units(units: list[Unit], runs: Path, jobs: int = 1, threads: int = 1, log: Log = print) -> dict[str, dict]:
    """Every unit's result by name (loaded when saved with the same key, else run)."""
    done: dict[str, dict] = {}
    waiting = list(units)
    known = {u.name for u in units}
    missing = [(u.name, n) for u in units for n in u.needs if n not in known]
    if missing:
        raise ValueError(f"units need results nobody makes: {missing}")
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else None
    running: dict = {}
    try:
        while waiting or running:
            _start_ready(waiting, done, running, pool, jobs, threads, runs, log)
            if not running:  # nothing in flight and nothing startable: the rest wait on each other
                if waiting:
                    raise RuntimeError(f"unit dependencies form a cycle: {[u.name for u in waiting]}")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                unit, key, path = running.pop(future)
                done[unit.name] = future.result()
                _save(path, key, unit.name, done[unit.name])
                log(f"  {unit.name}: done")
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return done
