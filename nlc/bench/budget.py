"""The expected wall time of a comparison run, from measured tokens/s (:data:`.plan.RATES`,
:data:`.plan.TASK_RATES`).

Notation, per model m: r_m its training tokens/s, e_m its evaluation tokens/s (one process,
one thread: :func:`.lm.measure_rates`), q_m its training tokens/s matched at the synthetic
tasks' width (:data:`.plan.TASK_RATES`), S the seeds, G the grid points trained (the starting
grid; the search adds up to ``lr_extensions`` more), V the tokens of one validation.

    grid_m   = G · (grid_steps · B · T / r_m + V / e_m)
    seeds_m  = S · (steps · B · T / r_m + evals_per_run · V / e_m)
    rest_m   = (continual: S_c · stages · tokens_c + probes of m: S · steps_p · B · T) / r_m
               + tasks: S · N_max · Σ_task tokens_per_step / q_m  +  S_c · stages · (stages + 1) · V / e_m

(N_max: the calibration's step cap, ``calibration.max_steps``: the synthetic tasks' budget is
fixed on the Transformer at or below it, so they are counted at the cap, an upper bound;
the Transformer's calibration runs, up to twice the cap, are not counted. q_m is measured on
the LM's batch shape (4 x 256) at the task width, a proxy for the tasks' own shapes (MQAR
trains 64 to 128 tokens a sequence). Deployment is not counted. The continual protocol
scores every domain after every stage, and each stage's ``nlc.train`` run scores its own
domain once more, at the plan's validation size.) ``rest`` is coarse: the continual stream
trains other batch shapes than the LM runs, counted at the LM's rate. With J jobs the estimate is the lower
bound ``max(Σ_m total_m / J, max_m (grid_m + seeds_m / S + rest_m))``: the work shared
out evenly, or one model's chain (its grid, then one seed, then the rest), whichever is
longer; each job is assumed to have a core to itself. ``worst`` adds every allowed grid
extension to every model.
"""
from __future__ import annotations

from dataclasses import dataclass

from .plan import RATES, RATES_AT, TASK_RATES, TASK_RATES_AT, BenchPlan


@dataclass(frozen=True)
class Estimate:
    """Seconds of compute per model (starting grid), of the LM runs alone, and the wall time
    on ``jobs`` jobs."""

    per_model: dict[str, float]
    compute: float
    lm_compute: float            # the grids and the reported seeds (no tasks, continual, probes)
    wall: float
    worst_wall: float            # every model extending its grid ``lr_extensions`` times
    jobs: int

    def describe(self) -> str:
        slowest = max(self.per_model, key=self.per_model.get)
        return (f"expected wall time {self.wall / 60:.0f} min on {self.jobs} job(s), up to {self.worst_wall / 60:.0f} "
                f"min if every lr grid is extended to its bound; {self.compute / 3600:.1f} h of single-thread "
                f"compute ({self.lm_compute / 3600:.1f} h of it the LM grids and seeds; the synthetic tasks "
                f"counted at their step cap), the most for {slowest} "
                f"({self.per_model[slowest] / 60:.0f} min); from the tokens/s in nlc.bench.plan.RATES and "
                f"TASK_RATES")


def missing_rates(plan: BenchPlan) -> str | None:
    """Why the plan cannot be estimated (None: it can)."""
    tables = [("RATES", RATES, RATES_AT)] + ([("TASK_RATES", TASK_RATES, TASK_RATES_AT)] if plan.synthetic else [])
    for name, rates, measured_at in tables:
        size = {key: getattr(plan, key) for key in measured_at}
        if size != measured_at:
            differ = ", ".join(f"{key} {size[key]} (measured: {measured_at[key]})" for key in measured_at
                               if size[key] != measured_at[key])
            return f"nlc.bench.plan.{name} were measured at another size: {differ}"
        absent = [m.label for m in plan.bench_models() if m.label not in rates]
        if absent:
            return f"no measured rate in nlc.bench.plan.{name} for {', '.join(absent)}"
    return None


def _model_seconds(plan: BenchPlan, label: str, grid_points: int) -> tuple[float, float, float]:
    """``(grid, seeds, rest)`` seconds of one model (module doc)."""
    train_rate, eval_rate = RATES[label]
    step_tokens = plan.batch * plan.seq_len
    grid = grid_points * (plan.grid_steps * step_tokens / train_rate + plan.eval_tokens / eval_rate)
    one_seed = plan.steps * step_tokens / train_rate + plan.evals_per_run * plan.eval_tokens / eval_rate
    rest_tokens = (len(plan.continual_seeds) * len(plan.continual_stream) * plan.continual_tokens
                   + sum(len(plan.seeds) * plan.probe_plan(p).tokens_per_run for p in plan.probes if p.model == label))
    task_tokens = len(plan.seeds) * plan.calibration.max_steps * sum(p.tokens_per_step for p in plan.synthetic)
    tasks = task_tokens / TASK_RATES[label] if task_tokens else 0.0
    continual_evals = len(plan.continual_seeds) * len(plan.continual_stream) * (len(plan.continual_stream) + 1) \
        * plan.eval_tokens / eval_rate
    return grid, len(plan.seeds) * one_seed, rest_tokens / train_rate + tasks + continual_evals


def _wall(plan: BenchPlan, jobs: int, grid_points: int) -> tuple[dict[str, tuple[float, float, float]], float]:
    parts = {m.label: _model_seconds(plan, m.label, grid_points) for m in plan.bench_models()}
    chain = max(grid + seeds / len(plan.seeds) + rest for grid, seeds, rest in parts.values())
    return parts, max(sum(map(sum, parts.values())) / jobs, chain)


def estimate(plan: BenchPlan, jobs: int) -> Estimate | None:
    """The plan's expected wall time on ``jobs`` jobs (None when :func:`missing_rates`)."""
    if missing_rates(plan) is not None:
        return None
    parts, wall = _wall(plan, jobs, len(plan.lrs))
    _, worst = _wall(plan, jobs, len(plan.lrs) + plan.lr_extensions)
    per_model = {label: sum(part) for label, part in parts.items()}
    lm = sum(grid + seeds for grid, seeds, _ in parts.values())
    return Estimate(per_model, sum(per_model.values()), lm, wall, worst, jobs)


def describe_plan(plan: BenchPlan, jobs: int) -> list[str]:
    """What ``plan`` runs and how long it should take, as log lines (printed before a run)."""
    grid = ", ".join(f"{lr:g}" for lr in plan.lrs)
    lines = [f"[paper/{plan.mode}] {len(plan.models)} model(s) x {len(plan.seeds)} seed(s) on {plan.device}: "
             f"{plan.tokens_per_run:,} training tokens per LM run, {plan.eval_tokens:,} validation tokens per "
             f"evaluation; lr grid {grid} (x{plan.lr_ratio:g}, up to {plan.lr_extensions} extension(s)) at "
             f"{plan.grid_fraction:g} of the tokens, scored on the tune split; {len(plan.probes)} probe(s)"]
    found = estimate(plan, jobs)
    lines.append(f"[paper/{plan.mode}] " + (found.describe() if found else f"no wall-time estimate: "
                                                                          f"{missing_rates(plan)}"))
    return lines
