"""The paper comparison, end to end: match, sweep, train, evaluate, continual, summarise.

For every model of the plan (:mod:`.plan`), one unit of work (:func:`model_unit`):

1. parameter match to the Transformer at ``reference_width`` (:func:`.params.match_params`);
2. LM sweep: one ``nlc.train`` run per outer lr at the first seed; the lr with the lowest
   final validation bpb is the model's lr (:func:`.lm.best_lr`); the other seeds train at it;
3. zero-shot passkey / NIAH on each seed's LM (:func:`.tasks.retrieval_accuracy`);
4. MQAR and selective copying: a fresh model per (task, seed) trained on the task
   (:func:`.tasks.train_on_task`), then scored;
5. continual LM over the plan's domain stream (:func:`nlc.continual.run_continual`, no
   extra baselines: the Transformer row *is* the naive fine-tuning baseline).

Then the probes (:mod:`.probes`): ablations that test the explanations of the results.
Units run side by side on ``jobs`` processes and are saved as they finish (:mod:`.jobs`).
Returns one JSON-ready dict with every number (``docs/results/paper.json``); the summary
(mean ± std, ranks) is :func:`.summary.summarise`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..continual import run_continual
from ..continual.domains import load_domains
from ..data import load_corpus
from .lm import best_lr, fresh, parameter_count, train_lm
from .params import match_params, spec_params
from .jobs import Unit, run_units
from .plan import COST_ORDER, MODELS, BenchModel, BenchPlan, bench_model
from .probes import probe_units
from .report import machine, write_outputs
from .stamps import span_seconds, spec_digest, utc_now
from .summary import summarise
from .tasks import RETRIEVAL_TASKS, fresh_model, retrieval_accuracy, task_accuracy, train_on_task

Log = Callable[[str], None]


def run_and_report(plan: BenchPlan, runs: Path, docs: Path, command: str, threads: int = 1, jobs: int = 1,
                   log: Log = print) -> dict[str, Path]:
    """Run ``plan`` on ``jobs`` worker processes of ``threads`` torch threads each and write
    ``docs/results.md``, ``docs/results/paper.json`` and the figures (:func:`.report.write_outputs`).

    One thread per job is the default: these models are small enough that intra-op
    parallelism costs more than it gains, and on a shared machine a spinning second thread
    slows every op down (measured: a 12k-parameter Transformer step takes 1.2 s on 2 threads
    under load, 0.02 s on 1); ``jobs`` = the number of free cores runs models side by side."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = run_paper(plan, runs, log, jobs=jobs, threads=threads)
        results["command"] = command
        return write_outputs(results, docs)
    finally:
        torch.set_num_threads(before)


def run_paper(plan: BenchPlan, runs: Path, log: Log = print, jobs: int = 1, threads: int = 1) -> dict:
    """Run ``plan`` with its training runs and per-unit results under ``runs``
    (:mod:`.jobs`: rerunning with the same ``runs`` resumes); every number, as a dict."""
    started, clock = utc_now(), time.perf_counter()
    models = plan.bench_models()
    target = target_params(plan)
    log(f"[paper/{plan.mode}] target: {target:,} parameters (Transformer++ at width {plan.reference_width}); "
        f"{plan.tokens_per_run:,} tokens per LM run; {jobs} job(s) x {threads} thread(s)")
    settings = plan.settings()
    units = [Unit(m.label, model_unit, lambda done, m=m: (m.label, settings, target, runs), salt=spec_digest(m))
             for m in sorted(models, key=lambda m: COST_ORDER.index(m.label))]
    done = run_units(probe_units(plan, runs) + units, runs, jobs, threads, log)
    results: dict = {"plan": plan.to_json(), "target_params": target, "started": started,
                     "machine": {**machine(), "threads": threads, "jobs": jobs},
                     "models": {m.label: done[m.label] for m in models},
                     "probes": {p.label: done[p.label] for p in plan.probes}}
    entries = [*results["models"].values(), *results["probes"].values()]
    results["started"] = min((e["started"] for e in entries), default=results["started"])  # a resumed run's first start
    results["wall_seconds"] = time.perf_counter() - clock
    results["span_seconds"] = span_seconds(entries)
    results["unit_seconds"] = sum(entry["seconds"] for entry in entries)
    results["summary"] = summarise(results)
    return results


def model_unit(label: str, plan: BenchPlan, target: int, runs: Path, log: Log = print) -> dict:
    """Every column of one model (the module doc's steps 1-5), with its compute time."""
    clock, started = time.perf_counter(), utc_now()
    model = bench_model(label)
    corpus = load_corpus("shakespeare")
    domains = load_domains(list(plan.continual_stream), "bytes")
    entry = _run_model(model, plan, target, corpus, domains, runs, log)
    entry.update(seconds=time.perf_counter() - clock, started=started, finished=utc_now())
    log(f"[paper/{plan.mode}] {label} done in {entry['seconds']:.0f}s")
    return entry


def _run_model(model: BenchModel, plan: BenchPlan, target: int, corpus, domains: dict, runs: Path,
               log: Log) -> dict:
    match = match_params(model.path, target, tolerance=plan.tolerance, overrides=[f"model.heads={plan.heads}"])
    log(f"  {model.label}: width {match.width}, MLP hidden {match.hidden}, {match.params:,} parameters "
        f"({match.deviation:+.1%})")
    first, *others = plan.seeds
    sweep, nets = [], {}
    for lr in plan.lrs:
        record, net = train_lm(model, match, plan, lr, first, corpus, runs)
        sweep.append(record)
        nets[lr] = net
        log(f"    {model.label} lr {lr:g} seed {first}: val bpb {record.val_bpb:.4f} "
            f"({record.tokens_per_s:.0f} tok/s, {record.seconds:.0f}s)")
    lr = best_lr(sweep)
    net = nets[lr]
    del nets
    entry = {"spec": model.spec, "family": model.family, "match": match.to_json(),
             "params_compiled": parameter_count(net), "sweep": [r.to_json() for r in sweep], "best_lr": lr,
             "lm": [next(r for r in sweep if r.lr == lr).to_json()],
             "retrieval": {task: {} for task in RETRIEVAL_TASKS}}
    _retrieval(entry, net, plan, first)
    for seed in others:
        record, net = train_lm(model, match, plan, lr, seed, corpus, runs)
        entry["lm"].append(record.to_json())
        log(f"    {model.label} lr {lr:g} seed {seed}: val bpb {record.val_bpb:.4f}")
        _retrieval(entry, net, plan, seed)
    del net
    overrides = [*match.overrides, *plan.train_overrides(lr)]
    entry["mqar"], entry["copy"] = _trained_tasks(model, plan, overrides, log)
    entry["continual"] = _continual(model, plan, overrides, domains, runs)
    return entry


def _retrieval(entry: dict, net, plan: BenchPlan, seed: int) -> None:
    lengths = [m * plan.seq_len for m in plan.retrieval_multiples]
    for task in RETRIEVAL_TASKS:
        scores = retrieval_accuracy(net, task, lengths, plan.retrieval_examples, seed)
        entry["retrieval"][task][str(seed)] = {str(k): v for k, v in scores.items()}


def _trained_tasks(model: BenchModel, plan: BenchPlan, overrides: list[str], log: Log) -> tuple[dict, dict]:
    mqar, copy = {}, {}
    for seed in plan.seeds:
        for task, lengths, into in (("mqar", plan.mqar_lengths, mqar), ("copy", (plan.copy_length,), copy)):
            net = fresh_model(model.path, overrides, seed)
            losses = train_on_task(net, task, lengths, plan.task_steps, plan.task_batch, seed)
            accuracy = task_accuracy(net, task, lengths, plan.task_examples, seed)
            into[str(seed)] = {"accuracy": {str(k): v for k, v in accuracy.items()},
                               "final_loss": losses[-1] if losses else None}
            log(f"    {model.label} {task} seed {seed}: " + ", ".join(f"{k}: {v:.2f}" for k, v in accuracy.items()))
    return mqar, copy


def _continual(model: BenchModel, plan: BenchPlan, overrides: list[str], domains: dict, runs: Path) -> list[dict]:
    records = []
    for seed in plan.continual_seeds:
        (run,) = run_continual(model.path, list(plan.continual_stream), plan.continual_tokens,
                               out=fresh(runs / Path(model.spec).stem / f"continual-s{seed}"), overrides=overrides,
                               seed=seed, eval_batches=plan.eval_batches, baselines=False, progress=False,
                               corpora=domains, check_finite=False)
        records.append({"seed": seed, **run.to_json()})
    return records


def target_params(plan: BenchPlan) -> int:
    """The parameter count every model is matched to: Transformer++ at ``reference_width``."""
    return spec_params(MODELS[0].path, [f"model.heads={plan.heads}", f"model.width={plan.reference_width}"])

