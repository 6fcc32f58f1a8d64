"""The paper comparison, end to end: match, choose the lr, train, evaluate, continual, summarise.

For every model of the plan (:mod:`.plan`), four kinds of unit of work (:mod:`.jobs`):

1. ``<label>`` (:func:`grid_unit`): the parameter match to the Transformer at
   ``reference_width`` (:func:`.lm.match_for`) and the learning rate: the plan's grid,
   trained at the first seed for ``grid_steps`` on the fit tokens and scored on the
   held-apart tune split (:mod:`.tune_split`), extended past a winning edge
   (:func:`.lr_grid.search_lr`; a diverged point counts as worst);
2. ``<label> / seed <s>`` (:func:`seed_unit`), one per seed, each needing 1: the reported
   LM run at the chosen lr (``steps`` on the fit tokens, scored on the corpus validation
   split), zero-shot passkey / NIAH on it (:func:`.tasks.retrieval_accuracy`) and its
   deployment (:func:`nlc.continual.deploy`: outer parameters frozen, ``deploy_tokens`` of
   the unseen ``deploy_domain`` streamed in segments of ``seq_len`` with the whole state
   carried, fresh against carried, and forgetting on Shakespeare; the Transformer also with
   dynamic evaluation at the period and lr of HOPE's fastest CMS level);
3. ``<label> / synthetic`` (:func:`synthetic_unit`), needing every calibration (not 1: the
   tasks train at their own width and lr, :class:`.plan.TaskSettings`): the synthetic tasks
   that count (MQAR, selective copying, passkey; a fresh model per task and seed trained for
   the task's calibrated budget, :func:`.synthetic.train_task`);
4. ``<label> / continual`` (:func:`continual_unit`), needing 1: continual LM over the plan's
   domain stream at the chosen lr (:func:`nlc.continual.run_continual`, no extra baselines:
   the Transformer row *is* the naive fine-tuning baseline).

Before them, one ``calibrate / <task>`` unit per synthetic task (:func:`calibration_unit`):
the step budget every model gets, fixed on the Transformer at the matched size
(:mod:`.calibration`: the first budget at which it reaches the target at the training
shapes, or "not counted" with the reason). The calibration and synthetic units are keyed by
the task protocols and :class:`.plan.TaskSettings` only, so changing the LM budget, the grid,
the continual stream or the deployment reruns none of them. Then the probes (:mod:`.probes`, each needing its model's unit 1). Units run side by side
on ``jobs`` processes, slowest model first, and are saved as they finish; a rerun with the
same run folder loads every unit whose key is unchanged, and an interrupted LM run resumes
from its last checkpoint (:mod:`.lm`). :func:`run_paper` gathers the units into one entry
per model (``models[label]``: ``match``, ``grid``, ``sweep`` (the grid's runs, scored on
tune), ``best_lr``, ``lm`` (one run per seed, scored on validation), ``retrieval``,
``synthetic`` ({task: {seed: run}}), ``continual``), and ``synthetic`` ({task: protocol,
calibration, chance}); the summary (mean ± std, ranks) is
:func:`.summary.summarise`.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from ..continual import DynamicEval, Text, deploy, run_continual
from ..continual.dynamic_eval import cms_step
from ..continual.domains import load_domains
from ..data import load_corpus
from ..errors import NLCError, NonFiniteError
from .budget import estimate, missing_rates
from .calibration import calibrate_task
from .jobs import Unit, run_units
from .lm import fresh, match_for, parameter_count, target_params, train_lm
from .lr_grid import search_lr
from .params import ParamMatch
from .plan import COST_ORDER, MODELS, BenchModel, BenchPlan, TaskSettings, bench_model
from .probes import probe_units
from .report import machine, write_outputs
from .stamps import span_seconds, spec_digest, utc_now
from .summary import summarise
from .synthetic import chance, train_task
from .task_protocol import TaskProtocol
from .tasks import RETRIEVAL_TASKS, retrieval_accuracy
from .tune_split import RULE, reported_data, tuning_data

Log = Callable[[str], None]


class ReportPathError(NLCError):
    """A report path the report writer cannot write."""


REPORT_NAME = "results.md"  # the report file report.write_outputs writes into its folder


def run_and_report(plan: BenchPlan, out: Path, report: Path | None, command: str, threads: int = 1, jobs: int = 1,
                   log: Log = print) -> dict[str, Path]:
    """Run ``plan`` in the run folder ``out`` on ``jobs`` worker processes of ``threads``
    torch threads each, and write the report to ``report`` (default ``out/results.md``),
    with ``paper.json`` and the figures in ``results/`` next to it.

    One thread per job is the default: these models are small enough that intra-op
    parallelism costs more than it gains, and on a shared machine a spinning second thread
    slows every op down (measured: a 12k-parameter Transformer step takes 1.2 s on 2 threads
    under load, 0.02 s on 1); ``jobs`` = the number of free cores runs models side by side."""
    report = checked_report_path(report or out / REPORT_NAME)  # fails before the run, not after it
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = run_paper(plan, out, log, jobs=jobs, threads=threads)
        results["command"] = command
        return write_report(results, report)
    finally:
        torch.set_num_threads(before)


def checked_report_path(report: Path) -> Path:
    """``report``, when the report writer can write it (:func:`.report.write_outputs` names
    the report ``results.md`` and puts ``paper.json`` and the figures in ``results/`` beside it)."""
    if report.name != REPORT_NAME:
        raise ReportPathError(f"the report is written as {REPORT_NAME}, with paper.json and the figures in results/ "
                              f"beside it: give a path that ends in {REPORT_NAME} (e.g. --report docs/{REPORT_NAME}), "
                              f"not {report}")
    return report


def write_report(results: dict, report: Path) -> dict[str, Path]:
    """The report at ``report`` (a :func:`checked_report_path`) with its JSON and figures."""
    return write_outputs(results, checked_report_path(report).parent)


def run_paper(plan: BenchPlan, runs: Path, log: Log = print, jobs: int = 1, threads: int = 1) -> dict:
    """Run ``plan`` with its training runs and per-unit results under ``runs``
    (:mod:`.jobs`: rerunning with the same ``runs`` resumes); every number, as a dict."""
    started, clock = utc_now(), time.perf_counter()
    models = sorted(plan.bench_models(), key=lambda m: COST_ORDER.index(m.label))
    target = target_params(plan)
    log(f"[paper/{plan.mode}] target: {target:,} parameters (Transformer++ at width {plan.reference_width}); "
        f"{jobs} job(s) x {threads} thread(s) on {plan.device}; run folder {runs}")
    settings = plan.settings()
    calibrations = [Unit(calibration_name(p.task), calibration_unit, lambda done, p=p: (p, plan.task_settings()),
                         salt=spec_digest(REFERENCE)) for p in plan.synthetic]
    units = [unit for m in models for unit in model_units(m, settings, target, runs)]
    done = run_units(calibrations + units + probe_units(plan, runs), runs, jobs, threads, log)
    entries = {m.label: model_entry(m, settings, done) for m in plan.bench_models()}
    expected = estimate(plan, jobs)
    results: dict = {"plan": plan.to_json(), "target_params": target, "started": started,
                     "machine": {**machine(), "threads": threads, "jobs": jobs},
                     "estimate": asdict(expected) if expected else {"missing": missing_rates(plan)},
                     "models": entries, "probes": {p.label: done[p.label] for p in plan.probes},
                     "synthetic": {p.task: done[calibration_name(p.task)] for p in plan.synthetic}}
    finished = [*results["models"].values(), *results["probes"].values(), *results["synthetic"].values()]
    results["started"] = min((e["started"] for e in finished), default=started)  # a resumed run's first start
    results["wall_seconds"] = time.perf_counter() - clock
    results["span_seconds"] = span_seconds(finished)
    results["unit_seconds"] = sum(entry["seconds"] for entry in finished)
    results["summary"] = summarise(results)
    return results


REFERENCE = MODELS[0]   # Transformer++: the model the synthetic tasks' budgets are calibrated on
HOPE_SPEC = bench_model("HOPE").path   # dynamic evaluation takes its period and lr from HOPE's CMS


def calibration_name(task: str) -> str:
    return f"calibrate / {task}"


def seed_name(label: str, seed: int) -> str:
    return f"{label} / seed {seed}"


def synthetic_name(label: str) -> str:
    return f"{label} / synthetic"


def continual_name(label: str) -> str:
    return f"{label} / continual"


def model_units(model: BenchModel, plan: BenchPlan, target: int, runs: Path) -> list[Unit]:
    """The units of one model (module doc), in the order they should start."""
    label, salt = model.label, f"{spec_digest(model)}|{RULE}"  # the spec and the split rule the runs use

    def chosen(done: dict) -> tuple[float, dict]:
        return done[label]["best_lr"], done[label]["match"]

    grid = Unit(label, grid_unit, lambda done: (label, plan, target, runs), salt=salt)
    # the Transformer's deployment takes dynamic evaluation's period and lr from HOPE's spec
    seed_salt = f"{salt}|{spec_digest(bench_model('HOPE'))}" if label == REFERENCE.label else salt
    seeds = [Unit(seed_name(label, seed), seed_unit, lambda done, seed=seed: (label, plan, *chosen(done), seed, runs),
                  needs=(label,), salt=seed_salt) for seed in plan.seeds]
    calibrated = tuple(calibration_name(p.task) for p in plan.synthetic)
    synthetic = Unit(synthetic_name(label), synthetic_unit,
                     lambda done: (label, plan.synthetic, plan.task_settings(),
                                   {n: done[n]["calibration"] for n in calibrated}),
                     needs=calibrated, salt=spec_digest(model))  # not the LM's tune-split rule
    continual = Unit(continual_name(label), continual_unit, lambda done: (label, plan, *chosen(done), runs),
                     needs=(label,), salt=salt)
    return [grid, *seeds, synthetic, continual]


def model_entry(model: BenchModel, plan: BenchPlan, done: dict) -> dict:
    """One model's results, gathered from its units."""
    label = model.label
    grid, synthetic, continual = done[label], done[synthetic_name(label)], done[continual_name(label)]
    seeds = [done[seed_name(label, seed)] for seed in plan.seeds]
    parts = [grid, *seeds, synthetic, continual]
    return {"spec": model.spec, "family": model.family, "match": grid["match"],
            "params_compiled": seeds[0]["params_compiled"], "grid": grid["grid"], "sweep": grid["sweep"],
            "best_lr": grid["best_lr"], "lm": [s["lm"] for s in seeds],
            "retrieval": {task: {str(seed): s["retrieval"][task] for seed, s in zip(plan.seeds, seeds)}
                          for task in RETRIEVAL_TASKS},
            "deployment": [s.get("deployment") for s in seeds],
            "synthetic": synthetic["synthetic"], "continual": continual["continual"],
            "seconds": sum(p["seconds"] for p in parts), "started": min(p["started"] for p in parts),
            "finished": max(p["finished"] for p in parts)}


def _stamped(body: Callable[[], dict]) -> dict:
    clock, started = time.perf_counter(), utc_now()
    entry = body()
    entry.update(seconds=time.perf_counter() - clock, started=started, finished=utc_now())
    return entry


def grid_unit(label: str, plan: BenchPlan, target: int, runs: Path, log: Log = print) -> dict:
    """The parameter match and the learning rate of one model (module doc, unit 1)."""
    model = bench_model(label)
    match = match_for(model, plan, target)
    log(f"  {label}: width {match.width}, MLP hidden {match.hidden}, {match.params:,} parameters "
        f"({match.deviation:+.1%})")
    data, short, seed = tuning_data(load_corpus("shakespeare")), plan.grid_plan(), plan.seeds[0]
    records = {}

    def score(lr: float) -> float:
        records[lr], _ = train_lm(model, match, short, lr, seed, data, runs, kind="grid")
        log(f"    {label} grid lr {lr:g} seed {seed}: tune bpb {records[lr].val_bpb:.4f} "
            f"({records[lr].tokens_per_s:.0f} tok/s, {records[lr].seconds:.0f}s)")
        return records[lr].val_bpb

    def body() -> dict:
        search = search_lr(score, plan.lrs, plan.lr_ratio, plan.lr_extensions)
        log(f"  {label}: lr {search.best_lr:g}" + ("" if search.bracketed else " (NOT bracketed)")
            + "".join(f"; {e['reason']}" for e in search.extensions))
        grid = {**search.to_json(), "seed": seed, "steps": short.steps, "tokens_per_run": short.tokens_per_run,
                "fraction": plan.grid_fraction, "scored_on": "tune", "split": RULE,
                "tune_tokens": int(data.val.numel()), "fit_tokens": int(data.train.numel())}
        return {"match": match.to_json(), "best_lr": search.best_lr, "grid": grid,
                "sweep": [records[lr].to_json() for lr, _ in search.points]}

    return _stamped(body)


def seed_unit(label: str, plan: BenchPlan, lr: float, match: dict, seed: int, runs: Path, log: Log = print) -> dict:
    """One reported LM run and zero-shot retrieval on it (module doc, unit 2)."""
    def body() -> dict:
        model = bench_model(label)
        data = reported_data(load_corpus("shakespeare"))
        record, net = train_lm(model, ParamMatch.from_json(match), plan, lr, seed, data, runs)
        log(f"    {label} lr {lr:g} seed {seed}: val bpb {record.val_bpb:.4f} ({record.tokens_per_s:.0f} tok/s, "
            f"{record.seconds:.0f}s" + (f", resumed at step {record.resumed_at}" if record.resumed_at else "") + ")")
        lengths = [m * plan.seq_len for m in plan.retrieval_multiples]
        retrieval = {task: {str(k): v for k, v in retrieval_accuracy(net, task, lengths, plan.retrieval_examples,
                                                                    seed).items()}
                     for task in RETRIEVAL_TASKS}
        return {"lm": record.to_json(), "params_compiled": parameter_count(net), "retrieval": retrieval,
                "deployment": _deployment(model, net, plan, log)}

    return _stamped(body)


def _deployment(model: BenchModel, net, plan: BenchPlan, log: Log) -> dict | None:
    """The deployment protocol on the trained ``net`` (module doc, unit 2); ``{"diverged":
    reason}`` when a score is not finite (a result, like a diverged LM); None without one."""
    if not plan.deploy_tokens:
        return None
    dynamic = DynamicEval(*cms_step(HOPE_SPEC)) if model.label == REFERENCE.label else None
    try:
        found = deploy(net, Text.validation_of(load_corpus(plan.deploy_domain)),
                       Text.validation_of(load_corpus("shakespeare")), tokens=plan.deploy_tokens,
                       segment=plan.seq_len, streams=plan.deploy_streams, carry="all", dynamic=dynamic,
                       check_finite=False)  # a condition that diverges is recorded; the others still count
    except NonFiniteError as err:
        log(f"    {model.label} deployment: not finite ({err})")
        return {"diverged": str(err)}
    result = found.to_json()
    log(f"    {model.label} deployment on {plan.deploy_domain}: " + ", ".join(
        f"{name} {c['bpb_all']:.3f}" for name, c in result["conditions"].items()))
    return result


def calibration_unit(protocol: TaskProtocol, tasks: TaskSettings, log: Log = print) -> dict:
    """The step budget of one synthetic task, on the Transformer at the tasks' reference width
    (module doc)."""
    def body() -> dict:
        found = calibrate_task(REFERENCE.path, task_overrides(REFERENCE, tasks), protocol, tasks.calibration,
                               seed=tasks.seeds[0], device=tasks.device, log=log)
        log(f"  {protocol.task}: " + ("counts" if found.counts else "NOT counted") + f": {found.reason}")
        return {"protocol": protocol.to_json(), "calibration": found.to_json(), "chance": chance(protocol.task)}

    return _stamped(body)


def task_overrides(model: BenchModel, tasks: TaskSettings) -> list[str]:
    """The overrides that build ``model`` for the synthetic tasks: matched to the Transformer
    at the tasks' width, with their heads."""
    return [*match_for(model, tasks, target_params(tasks)).overrides, f"model.heads={tasks.heads}"]


def synthetic_unit(label: str, protocols: tuple[TaskProtocol, ...], tasks: TaskSettings, calibrations: dict,
                   log: Log = print) -> dict:
    """The synthetic tasks of one model (module doc, unit 3)."""
    def body() -> dict:
        model = bench_model(label)
        overrides = task_overrides(model, tasks) if protocols else []
        return {"synthetic": {p.task: _synthetic_runs(model, tasks, overrides, p, calibrations[calibration_name(p.task)],
                                                      log) for p in protocols}}

    return _stamped(body)


def continual_unit(label: str, plan: BenchPlan, lr: float, match: dict, runs: Path, log: Log = print) -> dict:
    """Continual LM over the plan's domain stream at the chosen lr and match (module doc, unit 4)."""
    def body() -> dict:
        model = bench_model(label)
        domains = load_domains(list(plan.continual_stream), "bytes")
        overrides = [*ParamMatch.from_json(match).overrides, *plan.train_overrides(lr)]
        return {"continual": _continual(model, plan, overrides, domains, runs)}

    return _stamped(body)


def _synthetic_runs(model: BenchModel, tasks: TaskSettings, overrides: list[str], protocol: TaskProtocol,
                    calibration: dict, log: Log) -> dict:
    """``{seed: run}`` of one task at its calibrated budget ({} when the task does not count).
    The Transformer's first seed is the calibration's confirmed run (the same model, seed,
    protocol and budget), not trained twice."""
    if not calibration["counts"]:
        return {}
    runs = {}
    for seed in tasks.seeds:
        if model.label == REFERENCE.label and seed == tasks.seeds[0] and calibration["reference"]:
            run = calibration["reference"]
        else:
            run = train_task(model.path, overrides, protocol, seed, calibration["budget"], tasks.device)
        runs[str(seed)] = run
        log(f"    {model.label} {protocol.task} seed {seed}: " + ", ".join(f"{k}: {v:.2f}" for k, v in
                                                                           run["accuracy"].items()))
    return runs


def _continual(model: BenchModel, plan: BenchPlan, overrides: list[str], domains: dict, runs: Path) -> list[dict]:
    records = []
    for seed in plan.continual_seeds:
        (run,) = run_continual(model.path, list(plan.continual_stream), plan.continual_tokens,
                               out=fresh(runs / Path(model.spec).stem / f"continual-s{seed}"), overrides=overrides,
                               seed=seed, eval_batches=plan.eval_batches, baselines=False, progress=False,
                               corpora=domains, check_finite=False)
        records.append({"seed": seed, **run.to_json()})
    return records
