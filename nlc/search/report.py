"""The report of a search: a table of trials, the best spec(s) as YAML, PNG plots, JSON.

Files written into the report folder:

* ``best.yaml``: the spec the best trial trained (single objective: lowest val_bpb;
  multi-objective: the Pareto-optimal trial with the lowest val_bpb), byte for byte its
  user attr ``run_spec`` (resolved, with the trial's ``train.steps`` and ``train.seed``):
  ``nlc train best.yaml`` repeats that trial, with the spec hash of its checkpoint;
* ``pareto/trial-NNNN.yaml`` (multi-objective): every Pareto-optimal trial's run spec;
* ``history.png``, ``pareto.png`` (multi-objective), ``importances.png``;
* ``report.json``: the study, its budget and any changes of it allowed on resume
  (:mod:`nlc.search.budget`), its trials (state, values, sampled values, seconds, notes),
  the best trial(s) and the files written.

Surplus trials (claimed beyond the budget by concurrent workers, never run) are left out.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from .budget import BUDGET_ATTR, CHANGES_ATTR
from .resume import RETRY_ATTR, SURPLUS_ATTR


def objectives_of(study: optuna.Study) -> list[str]:
    stored = study.user_attrs.get("objectives")
    return list(stored) if stored else ["val_bpb"] * len(study.directions)


def reported_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials() if not t.system_attrs.get(SURPLUS_ATTR)]


def failure_counts(study: optuna.Study) -> dict[str, int]:
    """Reported trials that failed, by cause: ``error`` (training raised or diverged) and
    ``invalid`` (the sampled spec did not validate). A trial failed only because its worker
    was lost is not counted: it was retried. ``nlc search`` exits 1 when any count is > 0."""
    failed = [t for t in reported_trials(study) if t.state == TrialState.FAIL]
    return {"error": sum("error" in t.user_attrs for t in failed),
            "invalid": sum("invalid" in t.user_attrs for t in failed)}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain row per trial, in trial order."""
    objectives = objectives_of(study)
    trials = reported_trials(study)
    retried_by = {t.system_attrs[RETRY_ATTR]: t.number for t in trials if RETRY_ATTR in t.system_attrs}
    rows = []
    for t in trials:
        note = t.user_attrs.get("invalid") or t.user_attrs.get("error") or ""
        if t.number in retried_by:
            note = f"worker lost; retried as trial {retried_by[t.number]}"
        elif RETRY_ATTR in t.system_attrs:
            note = f"retry of trial {t.system_attrs[RETRY_ATTR]}" + (f"; {note}" if note else "")
        elif t.state == TrialState.PRUNED:
            note = f"pruned at step {t.last_step}" if t.last_step is not None else "pruned"
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "values": dict(zip(objectives, t.values)) if t.values else {},
            "params": dict(t.params),
            "seconds": t.user_attrs.get("seconds"),
            "tokens_per_s": t.user_attrs.get("tokens_per_s"),
            "model_params": t.user_attrs.get("params"),
            "note": note.splitlines()[0] if note else "",
        })
    return rows


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective) or the Pareto front, best val_bpb first."""
    complete = [t for t in study.get_trials(states=(TrialState.COMPLETE,))]
    if not complete:
        return []
    front = [study.best_trial] if len(study.directions) == 1 else study.best_trials
    index = objectives_of(study).index("val_bpb") if "val_bpb" in objectives_of(study) else 0
    return sorted(front, key=lambda t: t.values[index])


def export_spec(trial: FrozenTrial, path: Path) -> str:
    """Write the spec the trial trained (its ``run_spec``, unchanged) at ``path``; the path,
    or why it was skipped (a study made before run specs were recorded)."""
    text = trial.user_attrs.get("run_spec")
    if text is None:
        return (f"skipped: trial {trial.number} has no recorded run spec (its study predates them; "
                "the sampled spec is its user attr 'spec', without the trial's steps and seed)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_plots(study: optuna.Study, out: Path) -> dict[str, str]:
    """PNG plots; a plot that needs more trials than the study has is skipped with the reason."""
    import matplotlib.pyplot as plt  # lazy: keeps import nlc.search free of pyplot (it picks a backend)
    from optuna.visualization import matplotlib as ovm

    objectives = objectives_of(study)
    multi = len(objectives) > 1
    first = (lambda t: t.values[0]) if multi else None
    plots = {
        "history.png": lambda: ovm.plot_optimization_history(study, target=first, target_name=objectives[0]),
        "importances.png": lambda: ovm.plot_param_importances(study, target=first, target_name=objectives[0]),
    }
    if multi:
        plots["pareto.png"] = lambda: ovm.plot_pareto_front(study, target_names=objectives)
    written: dict[str, str] = {}
    backend = plt.get_backend()
    plt.switch_backend("Agg")  # headless for these figures only; the user's backend comes back
    try:
        _draw_plots(plots, out, written)
    finally:
        plt.switch_backend(backend)
    return written


def _draw_plots(plots: dict, out: Path, written: dict[str, str]) -> None:
    import matplotlib.pyplot as plt  # lazy: keeps import nlc.search free of pyplot (it picks a backend)

    for name, draw in plots.items():
        try:
            axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            written[name] = f"skipped: {err}"
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        written[name] = str(out / name)


def write_report(study: optuna.Study, out: Path) -> dict[str, Any]:
    """Write the report folder; the JSON report (also written as ``report.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    best = best_trials(study)
    files: dict[str, str] = {}
    if best:
        files["best.yaml"] = export_spec(best[0], out / "best.yaml")
    if len(study.directions) > 1:
        for t in best:
            files[f"pareto/trial-{t.number:04d}.yaml"] = export_spec(t, out / "pareto" / f"trial-{t.number:04d}.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        files.update(write_plots(study, out))
    states = [r["state"] for r in rows]
    report = {
        "study": study.study_name,
        "objectives": objectives_of(study),
        "directions": [d.name.lower() for d in study.directions],
        "target_trials": study.user_attrs.get("trials"),
        "budget": study.user_attrs.get(BUDGET_ATTR),
        "budget_changes": study.user_attrs.get(CHANGES_ATTR, []),
        "counts": {s: states.count(s) for s in sorted(set(states))},
        "best": [{"number": t.number, "values": dict(zip(objectives_of(study), t.values)),
                  "params": dict(t.params)} for t in best],
        "trials": rows,
        "files": files,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


def render_table(report: dict[str, Any]) -> Any:
    """A rich table of the trials (best first by the first objective)."""
    objectives = report["objectives"]
    names = sorted({p for r in report["trials"] for p in r["params"]})
    table = Table(title=f"study {report['study']}: {report['counts']}")
    for column in ["#", "state", *objectives, *names, "s", "note"]:
        table.add_column(column, overflow="fold")
    sign = -1 if report["directions"][0] == "maximize" else 1

    def order(row: dict) -> tuple:
        value = row["values"].get(objectives[0])
        return (value is None, sign * value if value is not None else 0.0, row["number"])

    for row in sorted(report["trials"], key=order):
        cells = [str(row["number"]), row["state"]]
        cells += [_fmt(row["values"].get(o)) for o in objectives]
        cells += [_fmt(row["params"].get(n)) for n in names]
        cells += [_fmt(row["seconds"], 0), row["note"]]
        table.add_row(*cells)
    return table


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if digits else f"{value:.0f}"
    return str(value)
