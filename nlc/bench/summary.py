"""From the raw per-seed numbers of a comparison run to ranked metrics.

Every metric is a list of per-seed values per model, reduced by :func:`.aggregate.ranked`
to mean ± std, the median, the divergence rate and a rank by median (the conventions are
:mod:`.aggregate`'s: a diverged seed is left out of the mean and counted as the worst value
in the median). Per-length metrics are named ``<task>@<length>``; a zero-shot retrieval
task's column in the main table is, per seed, the mean accuracy over the lengths that have
examples. The synthetic tasks trained per model (:mod:`.synthetic`: ``mqar``, ``copy`` and
``passkey_trained``) have a metric per scored shape (``mqar@64x4``) and a main column: per
seed, the mean accuracy over the *training* shapes (the longer test shapes are the
extrapolation columns); a task the calibration did not count has no runs, so no values.

What counts as diverged, per seed: an LM run whose final validation bpb is not finite;
then its zero-shot retrieval scores too (they were measured on that diverged model); a
synthetic-task run that stopped at a non-finite loss (its accuracies); a continual
run whose metrics are not finite. A length the task cannot fill stays missing (None), never
diverged. Continual metrics come from each seed's matrix R (validation bpb): ACC is the
final mean bpb (lower is better), BWT < 0 and forgetting > 0 mean old domains got worse
(:func:`nlc.continual.cl_metrics`). The main table's "mean rank" averages a model's ranks
over the main columns it has (the analogue of the paper's "Avg" column).
"""
from __future__ import annotations

import math
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
    values: Callable[[dict], list]     # model entry -> one value per seed (None: no examples, nan: diverged)
    digits: int = 3


def _mean_present(values) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _per_seed(table: dict, diverged: set[str], key: str | None = None) -> list:
    """``{seed: {length: acc}}`` -> per seed, the accuracy at ``key`` or the mean over lengths;
    nan for the seeds in ``diverged`` (None stays None: the length has no examples)."""
    out = []
    for seed, lengths in table.items():
        value = lengths.get(key) if key else _mean_present(lengths.values())
        out.append(math.nan if value is not None and seed in diverged else value)
    return out


def _lm_diverged(entry: dict) -> set[str]:
    """The seeds (as the tables' keys: text) whose LM ended with a bpb that is not finite."""
    return {str(run["seed"]) for run in entry["lm"] if not math.isfinite(run["val_bpb"])}


SYNTHETIC_KEYS = {"mqar": "mqar", "copy": "copy", "passkey": "passkey_trained"}   # task -> metric key
SYNTHETIC_TITLES = {"mqar": "MQAR", "copy": "selective copy", "passkey": "passkey (trained)"}


def _retrieval(entry: dict, task: str, length: str | None = None) -> list:
    return _per_seed(entry["retrieval"][task], _lm_diverged(entry), length)


def _synthetic(entry: dict, task: str, shapes: list[str]) -> list:
    """Per seed of one synthetic task, the mean test accuracy over ``shapes``; nan for a
    diverged run."""
    out = []
    for run in entry.get("synthetic", {}).get(task, {}).values():
        scores = [run["accuracy"][shape] for shape in shapes]
        out.append(math.nan if run["diverged"] else sum(scores) / len(scores))
    return out


def _carried_gain(run: dict) -> float:
    return run["conditions"]["fresh"]["bpb_all"] - run["conditions"]["carried"]["bpb_all"]


DEPLOYMENT_METRICS = (  # key, title, higher is better, per-seed value of a deployment record
    ("deploy_carried", "deployment bpb (state carried)", False, lambda r: r["conditions"]["carried"]["bpb_all"]),
    ("deploy_gain", "deployment gain (fresh - carried bpb)", True, _carried_gain),
    ("deploy_forgetting", "deployment forgetting (state carried, bpb)", False,
     lambda r: r["pretrain"]["forgetting"]["carried"]),
)


def deployed_values(runs: list, value: Callable[[dict], float]) -> list:
    """Per seed, ``value`` of its deployment record; nan for a diverged one (its LM or a score)."""
    return [math.nan if run is None or "diverged" in run else value(run) for run in runs]


def metrics_of(results: dict) -> list[Metric]:
    """The metrics of a run, per-length ones included (lengths read from the results)."""
    any_entry = next(iter(results["models"].values()))
    out = [Metric("val_bpb", "val bpb", False, False, lambda e: [r["val_bpb"] for r in e["lm"]])]
    titles = {"passkey": "passkey", "niah_number": "NIAH (number)", "niah_word": "NIAH (word)"}
    for task in RETRIEVAL_TASKS:
        out.append(Metric(task, titles[task], True, True, lambda e, t=task: _retrieval(e, t)))
        for length in next(iter(any_entry["retrieval"][task].values()), {}):
            out.append(Metric(f"{task}@{length}", f"{titles[task]} @ {length}", True, True,
                              lambda e, t=task, n=length: _retrieval(e, t, n)))
    for task, info in results.get("synthetic", {}).items():
        key, title, protocol = SYNTHETIC_KEYS[task], SYNTHETIC_TITLES[task], info["protocol"]
        out.append(Metric(key, title, True, True, lambda e, t=task, s=protocol["train"]: _synthetic(e, t, s)))
        for shape in protocol["shapes"]:
            out.append(Metric(f"{key}@{shape}", f"{title} @ {shape}", True, True,
                              lambda e, t=task, s=shape: _synthetic(e, t, [s])))
    if any(any(entry.get("deployment") or []) for entry in results["models"].values()):
        for key, title, higher, value in DEPLOYMENT_METRICS:
            out.append(Metric(key, title, higher, False,
                              lambda e, v=value: deployed_values(e.get("deployment", []), v)))
    for key, title, higher in (("acc", "CL ACC (bpb)", False), ("bwt", "CL BWT", True),
                               ("forgetting", "CL forgetting", False)):
        out.append(Metric(f"cl_{key}", title, higher, False,
                          lambda e, k=key: [run["metrics"][k] for run in e["continual"]]))
    out.append(Metric("tokens_per_s", "train tokens/s", True, False,
                      lambda e: [r["tokens_per_s"] for r in e["lm"]], digits=0))
    return out


MAIN_COLUMNS = ("val_bpb", "passkey", "niah_number", "niah_word", "mqar", "copy", "passkey_trained", "cl_acc",
                "cl_forgetting", "deploy_carried", "deploy_forgetting")


def summarise(results: dict) -> dict:
    """``{"metrics": {key: {title, higher_is_better, percent, digits, stats: {model: Stat as
    JSON}}}, "main_columns": [...], "mean_rank": {model: float | None}}``."""
    metrics = {}
    for metric in metrics_of(results):
        per_model = {label: metric.values(entry) for label, entry in results["models"].items()}
        stats = ranked(per_model, metric.higher_is_better)
        metrics[metric.key] = {"title": metric.title, "higher_is_better": metric.higher_is_better,
                               "percent": metric.percent, "digits": metric.digits,
                               "stats": {m: s.to_json() for m, s in stats.items()}}
    mean_rank = {}
    for label in results["models"]:
        ranks = [metrics[c]["stats"][label]["rank"] for c in MAIN_COLUMNS if c in metrics]
        ranks = [r for r in ranks if r is not None]
        mean_rank[label] = sum(ranks) / len(ranks) if ranks else None
    return {"metrics": metrics, "main_columns": [c for c in MAIN_COLUMNS if c in metrics], "mean_rank": mean_rank}
