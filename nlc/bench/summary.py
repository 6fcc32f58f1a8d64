"""From the raw per-seed numbers of a comparison run to ranked metrics.

Every metric is a list of per-seed values per model, reduced by :func:`.aggregate.ranked`
to mean ± std and a rank. Per-length metrics are named ``<task>@<length>``; the task's
column in the main table is, per seed, the mean accuracy over the lengths that have
examples. Continual metrics come from each seed's matrix R (validation bpb): ACC is the
final mean bpb (lower is better), BWT < 0 and forgetting > 0 mean old domains got worse
(:func:`nlc.continual.cl_metrics`). The main table's "mean rank" averages a model's ranks
over the main columns it has (the analogue of the paper's "Avg" column).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .aggregate import ranked
from .tasks import RETRIEVAL_TASKS


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    higher_is_better: bool
    percent: bool
    values: Callable[[dict], list]     # model entry -> one value per seed (None: no examples)
    digits: int = 3


def _mean_present(values) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _per_seed(table: dict, key: str | None = None) -> list:
    """``{seed: {length: acc}}`` -> per seed, the accuracy at ``key`` or the mean over lengths."""
    return [(lengths.get(key) if key else _mean_present(lengths.values())) for lengths in table.values()]


def _task_table(entry: dict, task: str) -> dict:
    return {seed: run["accuracy"] for seed, run in entry[task].items()}


def metrics_of(results: dict) -> list[Metric]:
    """The metrics of a run, per-length ones included (lengths read from the results)."""
    any_entry = next(iter(results["models"].values()))
    out = [Metric("val_bpb", "val bpb", False, False, lambda e: [r["val_bpb"] for r in e["lm"]])]
    titles = {"passkey": "passkey", "niah_number": "NIAH (number)", "niah_word": "NIAH (word)"}
    for task in RETRIEVAL_TASKS:
        out.append(Metric(task, titles[task], True, True, lambda e, t=task: _per_seed(e["retrieval"][t])))
        for length in next(iter(any_entry["retrieval"][task].values()), {}):
            out.append(Metric(f"{task}@{length}", f"{titles[task]} @ {length}", True, True,
                              lambda e, t=task, n=length: _per_seed(e["retrieval"][t], n)))
    for task, title in (("mqar", "MQAR"), ("copy", "selective copy")):
        out.append(Metric(task, title, True, True, lambda e, t=task: _per_seed(_task_table(e, t))))
        for length in next(iter(any_entry[task].values()))["accuracy"]:
            out.append(Metric(f"{task}@{length}", f"{title} @ {length}", True, True,
                              lambda e, t=task, n=length: _per_seed(_task_table(e, t), n)))
    for key, title, higher in (("acc", "CL ACC (bpb)", False), ("bwt", "CL BWT", True),
                               ("forgetting", "CL forgetting", False)):
        out.append(Metric(f"cl_{key}", title, higher, False,
                          lambda e, k=key: [run["metrics"][k] for run in e["continual"]]))
    out.append(Metric("tokens_per_s", "train tokens/s", True, False,
                      lambda e: [r["tokens_per_s"] for r in e["lm"]], digits=0))
    return out


MAIN_COLUMNS = ("val_bpb", "passkey", "niah_number", "niah_word", "mqar", "copy", "cl_acc", "cl_forgetting")


def summarise(results: dict) -> dict:
    """``{"metrics": {key: {title, higher_is_better, percent, stats: {model: Stat}}},
    "main_columns": [...], "mean_rank": {model: float | None}}``."""
    metrics = {}
    for metric in metrics_of(results):
        per_model = {label: metric.values(entry) for label, entry in results["models"].items()}
        stats = ranked(per_model, metric.higher_is_better)
        metrics[metric.key] = {"title": metric.title, "higher_is_better": metric.higher_is_better,
                               "percent": metric.percent, "digits": metric.digits,
                               "stats": {m: s.to_json() for m, s in stats.items()}}
    mean_rank = {}
    for label in results["models"]:
        ranks = [metrics[c]["stats"][label]["rank"] for c in MAIN_COLUMNS]
        ranks = [r for r in ranks if r is not None]
        mean_rank[label] = sum(ranks) / len(ranks) if ranks else None
    return {"metrics": metrics, "main_columns": list(MAIN_COLUMNS), "mean_rank": mean_rank}
