"""``docs/results.md`` from the results dict of :func:`.run.run_paper` (and its summary).

Sections: how the run was made (command, machine, wall time, mode), the protocol, the
parameter match, the paper's table with measured numbers and ranks, the diverged runs per
model, a mechanical check of the paper's ordering (:mod:`.ordering`: agree / reversed /
unresolved per column, with the numbers), findings computed from the numbers (LM order,
cost, lr grid edges, divergence), the lr sweep, per-task tables, the figures, the scale of
the run against the paper's, and the probes. The statistics (mean ± std, median with
diverged seeds at the worst value, ranks, ordered / unresolved) are :mod:`.aggregate`'s.

Every sentence that says something about the results is computed from them; the rest is
the protocol (what was run) and quoted numbers of the paper. Rerunning the benchmark
rewrites the page.
"""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import torch

from ..files import atomic_write_text
from .aggregate import Stat, format_stat, format_value, order, seed_stat, unresolved_reason
from .report_sections import deployment_lines, synthetic_protocol_lines
from .ordering import ordering_lines
from .plan import NAIVE_BASELINE
from .plots import write_plots
from .summary import SYNTHETIC_KEYS
from .tasks import RETRIEVAL_TASKS

# The paper's numbers quoted next to the measured ones (Wiki ppl; the order is :mod:`.ordering`'s).
PAPER_LM = {
    "Transformer++": "24.18 (NL-arXiv T2, 760M)", "Samba*": "21.07 (NL-arXiv T2, 760M)",
    "Titans (LMM)": "20.08 (NL-arXiv T2, 760M)", "Titans (MAC)*": "19.93 (Titans T1, 760M)",
    "HOPE": "18.68 (NL-arXiv T2, 760M)", "HOPE-Attention": "--",
    "HOPE w/o CMS": "13.04 vs HOPE 12.24 (NL-arXiv T6, 1.3B)", "HOPE, 1-level CMS": "worse (NL-arXiv Fig. 7)",
}


def machine() -> dict:
    """nproc, CPU model (/proc/cpuinfo), torch and Python versions, platform."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}


def _stat(summary: dict, key: str, label: str) -> Stat:
    return Stat.from_json(summary["metrics"][key]["stats"][label])


def _cell(summary: dict, key: str, label: str, ranks: bool = False) -> str:
    """``mean ± std, med M`` of one metric and model, its rank, and ``[k/N finite]`` when
    only k of its N seeds gave a finite value (:func:`.aggregate.format_stat`)."""
    metric = summary["metrics"][key]
    stat = _stat(summary, key, label)
    return _with_finite(format_stat(stat, digits=metric.get("digits", 3), percent=metric["percent"])
                        + (f" ({stat.rank})" if ranks and stat.rank is not None else ""), stat)


def _with_finite(text: str, stat: Stat) -> str:
    return text + (f" [{stat.n}/{stat.seeds} finite]" if stat.diverged else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _wall(results: dict) -> str:
    """The run's wall time: first unit's start to last unit's finish (a resumed run counts
    its units, not the invocation that found them saved), and the summed compute."""
    jobs = results["machine"].get("jobs", 1)
    span = results.get("span_seconds", results["wall_seconds"])
    text = f"{span / 60:.1f} min"
    if "unit_seconds" in results:
        text += f" ({jobs} job(s) side by side; {results['unit_seconds'] / 60:.1f} min of single-thread compute summed)"
    return text


def _lengths(summary: dict, task: str) -> list[str]:
    return [k.split("@", 1)[1] for k in summary["metrics"] if k.startswith(f"{task}@")]


def render(results: dict, plots: dict[str, Path], docs: Path) -> str:
    """The text of docs/results.md."""
    plan, summary, models = results["plan"], results["summary"], results["models"]
    labels = list(models)
    seeds = len(plan["seeds"])
    out = ["# The Nested Learning comparison at CPU scale (`nlc bench paper`)", ""]
    if plan["mode"] != "full":
        out += [f"> **These are `--{plan['mode']}` numbers** ({seeds} seed(s), {plan['tokens_per_run']:,} tokens per "
                "LM run, tiny widths): they show the pipeline end to end, not the comparison. The full mode is the "
                "run this page is meant to hold.", ""]
    m = results["machine"]
    out += [f"* command: `{results['command']}`",
            f"* machine: {m['nproc']} CPUs ({m['cpu']}), torch {m['torch']} with {m['threads']} thread(s), "
            f"Python {m['python']}, {m['platform']}",
            f"* started {results['started']}, wall time {_wall(results)}",
            "* every number below: `results/paper.json` beside this page", ""]
    out += _protocol(results)
    out += ["## Parameter match", ""]
    out += _table(["model", "spec", "width", "MLP hidden", "parameters", "vs target"],
                  [[x, f"`{models[x]['spec']}`", str(models[x]["match"]["width"]), str(models[x]["match"]["hidden"] or
                    "spec's"), f"{models[x]['params_compiled']:,}", f"{models[x]['match']['deviation']:+.2%}"]
                   for x in labels]) + [""]
    out += ["## The paper's table, measured", "",
            "Per cell: mean ± std over the seeds that ended finite; `med` = the median over all seeds, a diverged "
            "seed counted as the worst value (`diverged` when at least half the seeds diverged); in brackets the "
            "rank by that median (1 = best, equal medians share a rank). `[k/N finite]`: only k of the N seeds "
            "ended finite; the mean leaves the others out, the median and the rank count them as the worst value. "
            "Accuracies in %, retrieval averaged over the lengths that have examples. Mean rank: over the columns. "
            "Paper column: Wiki perplexity where the paper has one (not comparable in scale; it gives the claimed "
            "order). Conventions: `nlc.bench.aggregate`.", ""]
    columns = summary["main_columns"]
    header = ["model", *[summary["metrics"][c]["title"] for c in columns], "mean rank", "paper (Wiki ppl)"]
    out += _table(header, [[x, *[_cell(summary, c, x, ranks=True) for c in columns],
                            f"{summary['mean_rank'][x]:.2f}" if summary["mean_rank"][x] is not None else "--",
                            PAPER_LM.get(x, "--")] for x in labels]) + [""]
    out += _divergence(results)
    out += ["## Does the paper's ordering reproduce?", "",
            "Every pair of models the paper orders, per column: **agree** / **reversed** when this run orders the "
            "pair (the difference of the medians exceeds the spread, the std over finite seeds, of both models), "
            "**unresolved** otherwise, with the reason (one seed, within the spread, or both medians diverged). "
            "Each pair: median ± spread of both models.", ""]
    out += ordering_lines(summary, models)
    out += _findings(results)
    out += _sweep(results)
    out += _per_task(summary, labels)
    out += deployment_lines(results)
    out += ["## Figures", ""] + [f"![{name}]({os.path.relpath(path, docs)})" for name, path in plots.items()] + [""]
    out += _scale(results) + [""]
    out += _probes(results)
    return "\n".join(out)


def _protocol(results: dict) -> list[str]:
    """What was run, from the plan (no results in it)."""
    plan, models = results["plan"], results["models"]
    spec_list = ", ".join(f"`{entry['spec']}`" for entry in models.values())
    return ["## Protocol", "",
            f"* **Models**: bundled specs ({spec_list}), each matched to "
            f"{results['target_params']:,} parameters (Transformer++ at width {plan['reference_width']}) within "
            f"±{plan['tolerance']:.0%}: the width is the multiple of 2 x heads ({plan['heads']} heads) nearest the "
            "target, then the hidden size of every MLP/CMS level is tuned (`nlc.bench.params`).",
            f"* **Language modelling**: Shakespeare (bytes), {plan['steps']} AdamW steps of {plan['batch']} x "
            f"{plan['seq_len']} tokens = {plan['tokens_per_run']:,} tokens per run, the same batches for every model "
            f"(seeds {list(plan['seeds'])}); outer optimizer = the specs' shared `outer` level (AdamW, warm-up 20 "
            f"steps); {_lr_choice(results)}",
            f"* **Passkey / NIAH** (number and word values): zero-shot on the LM, {plan['retrieval_examples']} "
            f"examples per length at {list(plan['retrieval_multiples'])} x the training length; `--` = no examples "
            "(the length is shorter than the task's prompt).",
            *synthetic_protocol_lines(results),
            f"* **Continual LM**: the stream {' -> '.join(plan['continual_stream'])}, {plan['continual_tokens']:,} "
            f"tokens per stage, validation bpb of every domain after each stage (`nlc.continual.run_continual`, seeds "
            f"{list(plan['continual_seeds'])}); {NAIVE_BASELINE} trained through the stream is the naive fine-tuning "
            "baseline. ACC = final mean bpb (lower is better), BWT < 0 / forgetting > 0 = old domains got worse.",
            "* **Diverged runs** (final LM validation bpb, synthetic-task loss or continual metrics not finite) are "
            "results: counted per model below and as the worst value in every median and rank.", ""]


DIVERGENCE_COLUMNS = (("val_bpb", "LM seeds"), ("mqar", "MQAR"), ("copy", "selective copy"),
                      ("passkey_trained", "passkey (trained)"), ("cl_acc", "continual"),
                      ("deploy_carried", "deployment"))


def _divergence(results: dict) -> list[str]:
    """Per model: diverged runs of the lr sweep and of each trained column, as d/N (rate)."""
    summary, models = results["summary"], results["models"]

    def cell(diverged: int, runs: int) -> str:
        return f"{diverged}/{runs} ({diverged / runs:.0%})" if runs else "--"

    rows, any_diverged = [], False
    for label, entry in models.items():
        sweep = sum(not math.isfinite(run["val_bpb"]) for run in entry["sweep"])
        stats = [_stat(summary, key, label) for key, _ in DIVERGENCE_COLUMNS if key in summary["metrics"]]
        any_diverged |= bool(sweep) or any(stat.diverged for stat in stats)
        rows.append([label, cell(sweep, len(entry["sweep"])), *[cell(s.diverged, s.seeds) for s in stats]])
    out = ["## Diverged runs per model", ""]
    if not any_diverged:
        return out + ["No run diverged (LM sweep and seeds, synthetic tasks, continual, deployment).", ""]
    all_diverged = [label for label, entry in models.items() if (entry.get("grid") or {}).get("all_diverged")]
    chosen = (f"every point diverged for {', '.join(all_diverged)}: the smallest lr was taken" if all_diverged
              else "a diverged lr is never chosen")
    out += [f"Diverged / all runs (rate). The lr sweep chooses each model's lr ({chosen}); "
            "the other columns are the seeds behind the tables.", ""]
    titles = [title for key, title in DIVERGENCE_COLUMNS if key in summary["metrics"]]
    return out + _table(["model", "LM lr sweep", *titles], rows) + [""]


def _grid(models: dict) -> dict | None:
    """How the lr was chosen (the first model's ``grid`` record), where every model has one."""
    grids = [entry.get("grid") for entry in models.values()]
    return grids[0] if grids and all(grids) else None


def _lr_choice(results: dict) -> str:
    """The lr protocol, from the models' grid records (older results: from the plan)."""
    plan, grid = results["plan"], _grid(results["models"])
    if grid is None:
        return (f"lr swept over {list(plan['lrs'])} at seed {plan['seeds'][0]} for every model and chosen on final "
                "validation bpb; the other seeds reuse it.")
    extended = [label for label, entry in results["models"].items() if entry["grid"]["extensions"]]
    return (f"lr from the grid {list(plan['lrs'])} at seed {grid['seed']}, each point trained on "
            f"{grid['tokens_per_run']:,} tokens ({grid['fraction']:g} of a reported run) and scored on the "
            f"{grid['scored_on']} split ({grid['split']}), not the reported validation set; a grid whose best point "
            f"is an edge is extended by x{grid['ratio']:g} up to {grid['max_extensions']} time(s) (extended: "
            f"{', '.join(extended) or 'none'}); every seed trains at the chosen lr.")


def _sweep(results: dict) -> list[str]:
    """The lr sweep: validation bpb per lr each model ran (``--`` where it ran none)."""
    summary, models = results["summary"], results["models"]
    lrs = sorted({run["lr"] for entry in models.values() for run in entry["sweep"]})
    rows = []
    for label, entry in models.items():
        by_lr = {run["lr"]: run["val_bpb"] for run in entry["sweep"]}
        rows.append([label, *[format_value(by_lr.get(lr), 4) for lr in lrs], f"{entry['best_lr']:g}",
                     _cell(summary, "tokens_per_s", label)])
    grid = _grid(models)
    scored = (f"{grid['scored_on']} bpb, {grid['tokens_per_run']:,} tokens per run, seed {grid['seed']}" if grid
              else "final validation bpb, first seed")
    return ([f"## Learning-rate sweep ({scored})", ""]
            + _table(["model", *[f"lr {lr:g}" for lr in lrs], "chosen", "train tokens/s"], rows) + [""])


def _findings(results: dict) -> list[str]:
    """What the numbers say, computed: the LM order with its resolved neighbours, the cost
    of HOPE, models whose lr sits at an edge of their grid, the diverged runs, and the
    retrieval columns where every finite run scores 0%."""
    summary, models = results["summary"], results["models"]
    bpb = {m: _stat(summary, "val_bpb", m) for m in models}
    order_ = sorted((m for m in models if bpb[m].median is not None), key=lambda m: bpb[m].median)
    resolved = [f"{a} ahead of {b}" for a, b in zip(order_, order_[1:])
                if order(bpb[a], bpb[b], higher_is_better=False).verdict == "ahead"]
    out = ["## Findings (computed from the numbers above)", "",
           "* **Validation bpb by median, best first**: "
           + ", ".join(f"{m} {format_value(bpb[m].median)}" for m in order_) + ". "
           + (f"Neighbouring pairs ordered: {len(resolved)} of {len(order_) - 1}"
              + (f" ({'; '.join(resolved)})" if resolved else "") + "; the others are unresolved."
              if len(order_) > 1 else "")]
    speed = {m: _stat(summary, "tokens_per_s", m).median for m in models}
    if "HOPE" in speed and "Transformer++" in speed and speed["HOPE"]:
        out.append(f"* **Cost**: HOPE trains at {speed['HOPE']:.0f} tokens/s, the Transformer at "
                   f"{speed['Transformer++']:.0f} ({speed['Transformer++'] / speed['HOPE']:.0f}x) on this machine"
                   + (f"; without the CMS HOPE runs at {speed['HOPE w/o CMS']:.0f}"
                      if speed.get("HOPE w/o CMS") else "") + " (medians over seeds).")
    for end, name in ((max, "largest"), (min, "smallest")):
        edge = [m for m, entry in models.items() if len({r["lr"] for r in entry["sweep"]}) > 1
                and entry["best_lr"] == end(r["lr"] for r in entry["sweep"])]
        if edge:
            out.append(f"* **Learning rate at the grid's edge** ({', '.join(edge)}): the chosen lr is the {name} the "
                       "model swept, so its grid does not bracket its best lr, which may lie beyond.")
    out.append(_diverged(results))
    floor = [summary["metrics"][task]["title"] for task in RETRIEVAL_TASKS
             if any(_stat(summary, task, m).n for m in models)
             and all(_stat(summary, task, m).mean in (0.0, None) for m in models)]
    if floor:
        out.append(f"* **{', '.join(floor)}**: every model's every finite run scores 0% at every length that has "
                   "examples.")
    return out + [""]


def _diverged(results: dict) -> str:
    """Every run (LM sweep, seeds and probes, task training, continual) that ended not finite."""
    models, probes = results["models"], results.get("probes") or {}
    bad = [f"{label} lr sweep (lr {run['lr']:g})" for label, entry in models.items() for run in entry["sweep"]
           if not math.isfinite(run["val_bpb"])]
    runs = [(label, run) for label, entry in [*models.items(), *probes.items()] for run in entry["lm"]]
    bad += [f"{label} LM (lr {run['lr']:g}, seed {run['seed']})" for label, run in runs
            if not math.isfinite(run["val_bpb"])]
    for label, entry in results["models"].items():
        bad += [f"{label} {task} (seed {seed})" for task, runs in entry.get("synthetic", {}).items()
                for seed, run in runs.items() if run["diverged"]]
        bad += [f"{label} continual (seed {run['seed']})" for run in entry["continual"]
                if not math.isfinite(run["metrics"]["acc"])]
        bad += [f"{label} deployment (seed {seed})" for seed, run in zip(results["plan"]["seeds"],
                                                                         entry.get("deployment") or [])
                if run is None or "diverged" in run
                or not all(math.isfinite(c["bpb_all"]) for c in run["conditions"].values())]
    if not bad:
        return "* **Divergence**: every run ended finite (LM validation bpb, task losses, continual ACC, deployment)."
    return (f"* **Diverged runs** (not finite: LM validation bpb, task training loss, continual ACC or a deployment "
            f"condition; left out "
            f"of the means, the worst value in the medians and ranks; a diverged LM's retrieval scores count as "
            f"diverged too): {'; '.join(bad)}.")


def _difference(difference: float, *stats: Stat) -> str:
    """A difference of medians (``+inf`` where one side's median diverged), ordered or
    unresolved with the reason (:func:`.aggregate.unresolved_reason`)."""
    reason = unresolved_reason(difference, *stats)
    verdict = (f"ordered: beyond every spread, {max(stat.spread for stat in stats):.4f} at most" if reason is None
               else f"unresolved: {reason}")
    return f"{difference:+.4f} ({verdict})"


def _probes(results: dict) -> list[str]:
    """Each probe against its model's main runs, then, for probes that make the same change
    to different models, how the gap between those models moves (:mod:`.probes`)."""
    probes, models = results.get("probes") or {}, results["models"]
    if not probes:
        return []
    bpb = {label: seed_stat([r["val_bpb"] for r in entry["lm"]], False) for label, entry in probes.items()}
    main = {label: seed_stat([r["val_bpb"] for r in entry["lm"]], False) for label, entry in models.items()}
    out = ["## Probes: one change at a time", "",
           "Each probe retrains one model with one change, on the same seeds at the lr its main sweep chose and "
           "with the same parameter match (`nlc.bench.probes`); *tests* names the question it was planned for, "
           "*main* is that model's row in the tables above. Difference: median of the probe minus median of "
           "main, ordered or unresolved as in the ordering check. Figure: `results/probes.png`.", ""]
    rows = []
    for label, probe in probes.items():
        stat, base = bpb[label], main[probe["model"]]
        known = stat.median is not None and base.median is not None
        difference = stat.median - base.median if known else None
        rows.append([label, probe["tests"], probe["change"], f"{probe['tokens_per_run']:,}",
                     _with_finite(format_stat(stat, 4), stat), _with_finite(format_stat(base, 4), base),
                     "--" if difference is None else _difference(difference, stat, base)])
    out += _table(["probe", "tests", "change", "tokens per run", "val bpb", "main", "difference"], rows) + [""]
    by_change: dict[str, list[str]] = {}
    for label, probe in probes.items():
        by_change.setdefault(probe["change"], []).append(label)
    for change, labels in by_change.items():
        for i, first in enumerate(labels):
            for second in labels[i + 1:]:
                a, b = probes[first]["model"], probes[second]["model"]
                medians = (main[a].median, main[b].median, bpb[first].median, bpb[second].median)
                if not all(m is not None and math.isfinite(m) for m in medians):
                    continue
                before, after = main[b].median - main[a].median, bpb[second].median - bpb[first].median
                out.append(f"* **{change}**: {b} minus {a} (medians): {before:+.4f} bpb in the main runs, {after:+.4f} "
                           f"with the change; the gap moves by "
                           f"{_difference(after - before, main[a], main[b], bpb[first], bpb[second])}.")
    return out + [""]


def _per_task(summary: dict, labels: list[str]) -> list[str]:
    out = ["## Per task", ""]
    for task in (*RETRIEVAL_TASKS, *SYNTHETIC_KEYS.values()):
        if task not in summary["metrics"]:
            continue
        lengths = _lengths(summary, task)
        out += [f"### {summary['metrics'][task]['title']}", ""]
        header = ["model", *[f"length x pairs {n}" if task == "mqar" else f"length {n}" for n in lengths]]
        out += _table(header, [[x, *[_cell(summary, f"{task}@{n}", x) for n in lengths]] for x in labels]) + [""]
    out += ["### Continual LM", ""]
    out += _table(["model", "ACC (bpb)", "BWT", "forgetting"],
                  [[x, *[_cell(summary, k, x) for k in ("cl_acc", "cl_bwt", "cl_forgetting")]] for x in labels]) + [""]
    return out


def _scale(results: dict) -> list[str]:
    """This run's size against the paper's, and what differs between the models' setups, from
    the results (widths of the parameter match, lr grids)."""
    plan, models = results["plan"], results["models"]
    out = ["## Scale of this run", "",
           f"* **Size and budget**: {results['target_params']:,} parameters and {plan['tokens_per_run']:,} tokens per "
           "LM run; the paper's models have 340M-1.3B parameters and 15-100B tokens."]
    widths = {label: entry["match"]["width"] for label, entry in models.items()}
    if len(set(widths.values())) > 1:
        def named(width: int) -> str:
            return f"{width} ({', '.join(m for m, w in widths.items() if w == width)})"

        out.append(f"* **Widths at the matched parameter count**: from {named(min(widths.values()))} to "
                   f"{named(max(widths.values()))}: the comparison matches parameters, not widths.")
    grids = {tuple(sorted(run["lr"] for run in entry["sweep"])) for entry in models.values()}
    same = f"the same for every model ({', '.join(f'{lr:g}' for lr in next(iter(grids)))})." if len(grids) == 1 else ""
    out.append("* **Learning-rate grid**: " + (same or "differs between models (see the sweep table)."))
    return out


def write_outputs(results: dict, docs: Path) -> dict[str, Path]:
    """``docs/results/paper.json``, the figures and ``docs/results.md``; their paths."""
    folder = docs / "results"
    folder.mkdir(parents=True, exist_ok=True)

    plots = write_plots(results, folder)
    json_path = atomic_write_text(folder / "paper.json", json.dumps(results, indent=1, sort_keys=False) + "\n")
    md = atomic_write_text(docs / "results.md", render(results, plots, docs))
    return {"json": json_path, "markdown": md, **plots}
