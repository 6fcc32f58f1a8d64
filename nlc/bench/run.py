"""The paper comparison, end to end: match, sweep, train, evaluate, continual, summarise.

For every model of the plan (:mod:`.plan`), in order:

1. parameter match to the Transformer at ``reference_width`` (:func:`.params.match_params`);
2. LM sweep: one ``nlc.train`` run per outer lr at the first seed; the lr with the lowest
   final validation bpb is the model's lr (:func:`.lm.best_lr`); the other seeds train at it;
3. zero-shot passkey / NIAH on each seed's LM (:func:`.tasks.retrieval_accuracy`);
4. MQAR and selective copying: a fresh model per (task, seed) trained on the task
   (:func:`.tasks.train_on_task`), then scored;
5. continual LM over the plan's domain stream (:func:`nlc.continual.run_continual`, no
   extra baselines: the Transformer row *is* the naive fine-tuning baseline).

Returns one JSON-ready dict with every number (``docs/results/paper.json``); the summary
(mean ± std, ranks) is :func:`.summary.summarise`.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .lm import best_lr, parameter_count, train_lm
from .params import match_params, spec_params
from .plan import MODELS, BenchModel, BenchPlan
from .summary import summarise
from .tasks import RETRIEVAL_TASKS, fresh_model, retrieval_accuracy, task_accuracy, train_on_task

Log = Callable[[str], None]


def run_and_report(plan: BenchPlan, runs: Path, docs: Path, command: str, threads: int = 1,
                   log: Log = print) -> dict[str, Path]:
    """Run ``plan`` on ``threads`` torch threads and write ``docs/results.md``,
    ``docs/results/paper.json`` and the figures (:func:`.report.write_outputs`).

    One thread is the default: these models are small enough that intra-op parallelism
    costs more than it gains, and on a shared machine a spinning second thread slows
    every op down (measured: a 12k-parameter Transformer step takes 1.2 s on 2 threads
    under load, 0.02 s on 1)."""
    import torch

    from .report import write_outputs

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = run_paper(plan, runs, log)
        results["command"] = command
        return write_outputs(results, docs)
    finally:
        torch.set_num_threads(before)


def run_paper(plan: BenchPlan, runs: Path, log: Log = print) -> dict:
    """Run ``plan`` with its training runs under ``runs``; every number, as a dict."""
    from ..data import load_corpus
    from .report import machine

    started, clock = datetime.now(timezone.utc), time.perf_counter()
    models = plan.bench_models()
    corpus = load_corpus("shakespeare")
    target = target_params(plan)
    log(f"[paper/{plan.mode}] target: {target:,} parameters (Transformer++ at width {plan.reference_width}); "
        f"{plan.tokens_per_run:,} tokens per LM run")
    domains = _continual_domains(plan)
    results: dict = {"plan": plan.to_json(), "target_params": target, "started": started.isoformat(),
                     "machine": machine(), "models": {}}
    for model in models:
        results["models"][model.label] = _run_model(model, plan, target, corpus, domains, runs, log)
        log(f"[paper/{plan.mode}] {model.label} done at {time.perf_counter() - clock:.0f}s")
    results["wall_seconds"] = time.perf_counter() - clock
    results["summary"] = summarise(results)
    return results


def _continual_domains(plan: BenchPlan) -> dict:
    from ..continual.domains import load_domains

    return load_domains(list(plan.continual_stream), "bytes")


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
        log(f"    lr {lr:g} seed {first}: val bpb {record.val_bpb:.4f} ({record.tokens_per_s:.0f} tok/s, "
            f"{record.seconds:.0f}s)")
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
        log(f"    lr {lr:g} seed {seed}: val bpb {record.val_bpb:.4f}")
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
            log(f"    {task} seed {seed}: " + ", ".join(f"{k}: {v:.2f}" for k, v in accuracy.items()))
    return mqar, copy


def _continual(model: BenchModel, plan: BenchPlan, overrides: list[str], domains: dict, runs: Path) -> list[dict]:
    from ..continual import run_continual

    records = []
    for seed in plan.continual_seeds:
        (run,) = run_continual(model.path, list(plan.continual_stream), plan.continual_tokens,
                               out=runs / Path(model.spec).stem / f"continual-s{seed}", overrides=overrides,
                               seed=seed, eval_batches=plan.eval_batches, baselines=False, progress=False,
                               corpora=domains)
        records.append({"seed": seed, **run.to_json()})
    return records


def target_params(plan: BenchPlan) -> int:
    """The parameter count every model is matched to: Transformer++ at ``reference_width``."""
    return spec_params(MODELS[0].path, [f"model.heads={plan.heads}", f"model.width={plan.reference_width}"])

