"""The figures of docs/results.md, drawn from the results dict of :func:`.run.run_paper`.

* ``bpb_curves.png``: validation bits per byte against training tokens, one line per
  model (mean over seeds at the model's chosen lr);
* ``retrieval.png``: zero-shot passkey / NIAH (number, word) accuracy against context
  length, with the training length marked;
* ``synthetic.png``: the trained synthetic tasks (:mod:`.synthetic`), one panel per task:
  accuracy at each shape (training shapes shaded, then the longer ones), one line per
  model (mean over seeds, bars from the lowest to the highest seed), chance dotted, the
  calibrated budget or "not counted" in the title;
* ``deployment.png``: cumulative bpb on the unseen domain against tokens seen, per model,
  carried, fresh and (the Transformer) dynamic evaluation (:func:`plot_deployment`);
* ``continual_R_<k>.png``: the continual-learning matrices R (first seed), one panel per
  model, four models per file;
* ``probes.png``: the probes' bpb curves against their models' main runs, one panel per
  question they test.

Matplotlib's Agg backend; every file written to a temporary name and renamed into place.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from ..continual.plots import plot_matrices
from ..figures import new_figure, save_figure
from .tasks import RETRIEVAL_TASKS


def _figure(width: float, height: float):
    return new_figure(width, height, layout="constrained")


def _save(figure, path: Path) -> Path:
    return save_figure(figure, path, bbox_inches="tight")


def _save_with_legend(figure, path: Path) -> Path:
    """``figure`` with one legend below its panels (each label once), saved to ``path``."""
    handles = {}
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=5, fontsize=7)
    return _save(figure, path)


def _mean(values: list) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def mean_curve(runs: list[dict]) -> tuple[list[float], list[float]]:
    """(training tokens, mean validation bpb) over the runs' curves, cut to the shortest."""
    curves = [run["curve"] for run in runs if run["curve"]]
    if not curves:
        return [], []
    points = min(len(c) for c in curves)
    return [curves[0][i][1] for i in range(points)], [_mean([c[i][2] for c in curves]) for i in range(points)]


def plot_bpb_curves(results: dict, path: Path) -> Path:
    figure = _figure(7, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    for label, entry in results["models"].items():
        tokens, bpb = mean_curve(entry["lm"])
        if tokens:
            axes.plot(tokens, bpb, marker="o", markersize=3, label=f"{label} (lr {entry['best_lr']:g})")
    axes.set_xlabel("training tokens")
    axes.set_ylabel("validation bits per byte")
    axes.set_title("Shakespeare, matched parameters and tokens")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def plot_probes(results: dict, path: Path) -> Path:
    """One panel per question the probes test: each probe's mean bpb curve (solid) next to
    its model's main runs (dashed, same colour)."""
    groups: dict[str, list[str]] = {}
    for label, probe in results["probes"].items():
        groups.setdefault(probe["tests"], []).append(label)
    figure = _figure(4.2 * len(groups), 3.8)
    for index, (question, labels) in enumerate(groups.items()):
        axes = figure.add_subplot(1, len(groups), index + 1)
        for label in labels:
            probe = results["probes"][label]
            line, = axes.plot(*mean_curve(probe["lm"]), marker="o", markersize=2, label=label)
            base = results["models"][probe["model"]]
            axes.plot(*mean_curve(base["lm"]), linestyle="--", color=line.get_color(),
                      label=f"{probe['model']} (main)")
        axes.set_title(f"probes: {question}")
        axes.set_xlabel("training tokens")
        axes.set_ylabel("validation bits per byte")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6)
    return _save(figure, path)


def _accuracy_by_length(table: dict) -> dict[int, float]:
    """``{seed: {length: acc | None}}`` -> mean over seeds per length (lengths with values)."""
    lengths = sorted({int(k) for per_seed in table.values() for k in per_seed})
    means = {n: _mean([per_seed.get(str(n)) for per_seed in table.values()]) for n in lengths}
    return {n: v for n, v in means.items() if v is not None}


def plot_retrieval(results: dict, path: Path) -> Path:
    titles = {"passkey": "passkey", "niah_number": "NIAH, number values", "niah_word": "NIAH, word values"}
    figure = _figure(4 * len(RETRIEVAL_TASKS), 3.6)
    seq_len = results["plan"]["seq_len"]
    for index, task in enumerate(RETRIEVAL_TASKS):
        axes = figure.add_subplot(1, len(RETRIEVAL_TASKS), index + 1)
        for label, entry in results["models"].items():
            points = _accuracy_by_length(entry["retrieval"][task])
            if points:
                axes.plot(list(points), [100 * v for v in points.values()], marker="o", label=label)
        axes.axvline(seq_len, color="grey", linestyle=":", label="training length")
        axes.set_xscale("log", base=2)
        axes.set_ylim(-3, 103)
        axes.set_xlabel("context length (bytes)")
        axes.set_ylabel("accuracy (%)")
        axes.set_title(f"{titles[task]} (zero-shot)")
        axes.grid(alpha=0.3)
    return _save_with_legend(figure, path)


def _synthetic_panel(axes, task: str, info: dict, models: dict) -> None:
    """One task of :func:`plot_synthetic` on ``axes`` (the runs that ended finite, as the
    tables' means)."""
    protocol, calibration = info["protocol"], info["calibration"]
    shapes = protocol["shapes"]
    axes.axvspan(-0.5, len(protocol["train"]) - 0.5, color="grey", alpha=0.12, label="training shapes")
    axes.axhline(100 * info["chance"], color="grey", linestyle=":", label="chance")
    for label, entry in models.items():
        runs = [run for run in entry.get("synthetic", {}).get(task, {}).values() if not run["diverged"]]
        if not runs:  # no run, or every run diverged (the tables count those)
            continue
        per_shape = [[run["accuracy"][key] for run in runs if run["accuracy"].get(key) is not None] for key in shapes]
        xs = [i for i, values in enumerate(per_shape) if values]
        means = [100 * _mean(per_shape[i]) for i in xs]
        low = [m - 100 * min(per_shape[i]) for m, i in zip(means, xs)]
        high = [100 * max(per_shape[i]) - m for m, i in zip(means, xs)]
        axes.errorbar(xs, means, yerr=[low, high], marker="o", markersize=3, capsize=2, label=label)
    if calibration["counts"]:
        axes.set_title(f"{task}: budget {calibration['budget']:,} steps")
    else:
        axes.set_title(f"{task}: not counted")
        axes.text(0.5, 0.5, textwrap.fill(calibration["reason"], 45), transform=axes.transAxes, ha="center",
                  va="center", fontsize=7)
    axes.set_xticks(range(len(shapes)), shapes, rotation=45, fontsize=7)
    axes.set_xlim(-0.5, len(shapes) - 0.5)
    axes.set_ylim(-3, 103)
    axes.set_xlabel({"mqar": "length x key-value pairs", "passkey": "length (bytes)"}.get(task, "length (tokens)"))
    axes.set_ylabel("accuracy (%)")
    axes.grid(alpha=0.3)


def plot_synthetic(results: dict, path: Path) -> Path:
    """``synthetic.png`` (module doc) from ``results["synthetic"]`` (per task: its protocol,
    calibration and chance) and ``results["models"][label]["synthetic"][task][seed]`` (runs)."""
    tasks = results["synthetic"]
    figure = _figure(4.2 * len(tasks), 3.8)
    for index, (task, info) in enumerate(tasks.items()):
        _synthetic_panel(figure.add_subplot(1, len(tasks), index + 1), task, info, results["models"])
    return _save_with_legend(figure, path)


def plot_deployment(results: dict, path: Path) -> Path:
    """``deployment.png`` (module doc): cumulative bpb on the unseen domain against tokens
    seen, per model, carried (solid) and fresh (dotted), the Transformer's dynamic
    evaluation carried (dashed); the mean over the seeds whose deployment ended finite."""
    figure = _figure(6.5, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    for index, (label, entry) in enumerate(results["models"].items()):
        runs = [r for r in entry.get("deployment") or [] if r and "diverged" not in r]
        for condition, style in (("carried", "-"), ("fresh", ":"), ("dynamic_carried", "--")):
            curves = [r["conditions"][condition] for r in runs if condition in r["conditions"]]
            if curves:
                mean = [sum(c["cumulative"][i] for c in curves) / len(curves) for i in range(len(curves[0]["tokens"]))]
                axes.plot(curves[0]["tokens"], mean, style, color=f"C{index}",
                          label=f"{label}, {condition.replace('_', ' ')}" if condition != "fresh" else None)
    axes.set_xlabel("tokens of the unseen domain seen")
    axes.set_ylabel("cumulative bpb")
    axes.set_title("Deployment: solid carried, dotted fresh, dashed dynamic evaluation")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6)
    return _save(figure, path)


def plot_continual(results: dict, folder: Path, per_figure: int = 4) -> dict[str, Path]:
    """``continual_R_<k>.png``: the R matrices of the first continual seed, ``per_figure``
    models per file (one row of heatmaps each, so eight models stay legible)."""
    panels, tasks = {}, []
    for label, entry in results["models"].items():
        if entry["continual"]:
            first = entry["continual"][0]
            panels[label] = (first["stages"], first["R"])
            tasks = first["tasks"]
    labels = list(panels)
    paths = {}
    for k, start in enumerate(range(0, len(labels), per_figure), start=1):
        part = {label: panels[label] for label in labels[start:start + per_figure]}
        paths[f"continual_R_{k}"] = plot_matrices(part, tasks, folder / f"continual_R_{k}.png", "validation bpb",
                                                  lower_is_better=True)
    return paths


def write_plots(results: dict, folder: Path) -> dict[str, Path]:
    """Every figure into ``folder``; ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    has = {key: any(entry.get(key) for entry in results["models"].values()) for key in ("retrieval",)}
    return {"bpb_curves": plot_bpb_curves(results, folder / "bpb_curves.png"),
            **({"retrieval": plot_retrieval(results, folder / "retrieval.png")} if has["retrieval"] else {}),
            **({"synthetic": plot_synthetic(results, folder / "synthetic.png")} if results.get("synthetic") else {}),
            **({"deployment": plot_deployment(results, folder / "deployment.png")}
               if any(any(e.get("deployment") or []) for e in results["models"].values()) else {}),
            **plot_continual(results, folder),
            **({"probes": plot_probes(results, folder / "probes.png")} if results.get("probes") else {})}
