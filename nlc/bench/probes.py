"""Probes: ablations that test candidate explanations of the comparison's results.

Three candidates a reader of the first edition's table raised: the token budget, the CMS
in-context step (one GD step of lr 1e-3 per period), and the training length against the
CMS chunk sizes. Each :class:`.plan.Probe` changes one of these for one model and keeps the rest: the
parameter match, the outer lr chosen on the main sweep, the seeds and the data. Its record
holds the same LM runs as the main table's (:class:`.lm.LMRun`), so the report sets each
probe's validation bpb against its model's main runs, and same-question probes against each
other (does HOPE's gap to the Transformer shrink with 4x the tokens?).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..data import load_corpus
from .jobs import Unit
from .lm import train_lm
from .params import ParamMatch
from .plan import BenchPlan, Probe, bench_model
from .stamps import spec_digest, utc_now

Log = Callable[[str], None]


def probe_units(plan: BenchPlan, runs: Path) -> list[Unit]:
    """One unit per probe of ``plan``, each needing its model's unit (for the lr and match)."""
    def args(probe: Probe):
        return lambda done: (probe, plan.probe_plan(probe), _base(done[probe.model]), runs)

    return [Unit(p.label, probe_unit, args(p), needs=(p.model,), salt=spec_digest(bench_model(p.model)))
            for p in plan.probes]


def _base(entry: dict) -> dict:
    """What a probe takes from its model's result: the chosen lr and the parameter match."""
    return {"best_lr": entry["best_lr"], "match": entry["match"]}


def probe_unit(probe: Probe, plan: BenchPlan, base: dict, runs: Path, log: Log = print) -> dict:
    """Train ``probe``'s model with its change on every seed of ``plan`` (already the
    probe's plan: :meth:`.plan.BenchPlan.probe_plan`)."""
    clock, started = time.perf_counter(), utc_now()
    model, match, lr = bench_model(probe.model), ParamMatch.from_json(base["match"]), base["best_lr"]
    corpus = load_corpus("shakespeare")
    kind = "probe-" + "".join(c if c.isalnum() else "-" for c in probe.label.lower()).strip("-")
    records = []
    for seed in plan.seeds:
        record, _ = train_lm(model, match, plan, lr, seed, corpus, runs, kind=kind, extra=probe.overrides)
        records.append(record.to_json())
        log(f"    {probe.label} seed {seed}: val bpb {record.val_bpb:.4f} ({record.tokens_per_s:.0f} tok/s)")
    seconds = time.perf_counter() - clock
    log(f"  probe {probe.label} done in {seconds:.0f}s")
    return {"model": probe.model, "tests": probe.tests, "change": probe.change, "lr": lr,
            "overrides": list(probe.overrides), "steps": plan.steps, "seq_len": plan.seq_len, "batch": plan.batch,
            "tokens_per_run": plan.tokens_per_run, "lm": records, "seconds": seconds,
            "started": started, "finished": utc_now()}
