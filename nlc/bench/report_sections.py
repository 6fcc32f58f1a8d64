"""Sections of the report for the second edition's protocols: the synthetic tasks' protocol
bullets (with what each calibration found) and continual learning at deployment, per model.

Each seed's reported LM is deployed (:func:`nlc.continual.deploy`, unit 2 of :mod:`.run`):
its outer parameters frozen, an unseen domain streamed through it in segments, every token
scored before any level learns from it, with the whole state reset per segment (``fresh``)
or carried (``carried``); the Transformer again with dynamic evaluation (``dynamic_*``).
The table gives, per model and condition, the whole stream's bpb, its last quarter's and the
forgetting on the pre-training domain (after - before), each as mean ± std over the seeds
whose deployment ended finite and the median over all seeds with a diverged seed counted as
the worst value (:mod:`.aggregate`). Nothing in it is typed by hand.
"""
from __future__ import annotations

from .aggregate import format_stat, seed_stat
from .plan import NAIVE_BASELINE
from .summary import SYNTHETIC_TITLES, deployed_values

CONDITION_TITLES = {"fresh": "fresh", "carried": "carried", "dynamic_fresh": "dynamic eval, fresh",
                    "dynamic_carried": "dynamic eval, carried"}


def synthetic_protocol_lines(results: dict) -> list[str]:
    """One bullet per synthetic task: its protocol and what its calibration found."""
    out = []
    for task, info in results.get("synthetic", {}).items():
        protocol, found = info["protocol"], info["calibration"]
        settings = found["settings"]
        reached = (f"reached {settings['target']:.0%} at step {found['reached_at']} of the curve run"
                   if found["reached_at"] is not None else f"never reached {settings['target']:.0%}")
        tried = "; ".join(f"a {budget}-step run: " + ("diverged" if acc is None else f"{acc:.1%}")
                          for budget, acc in found["confirmations"])
        verdict = f"budget **{found['budget']} steps**" if found["counts"] else "**not counted**"
        out.append(f"* **{SYNTHETIC_TITLES[task]}** (trained per model from scratch, seeds as the LM): training "
                   f"shapes {', '.join(protocol['train'])}, tested also at {', '.join(protocol['test'])}; "
                   f"{protocol['tokens_per_step']:,} tokens a step, lr {protocol['lr']:g} (warm-up "
                   f"{protocol['warmup']}, {protocol['schedule']}, clip {protocol['grad_clip']:g}), "
                   f"{protocol['examples']} held-out examples per shape; chance {100 * info['chance']:.3g}%. Budget: "
                   f"{NAIVE_BASELINE}, scored every {settings['eval_every']} steps (at most {settings['max_steps']}) "
                   f"at its lowest training shape, {reached}" + (f"; confirmation: {tried}" if tried else "")
                   + f": {verdict} ({found['reason']}).")
    return out


def _cell(runs: list, pick) -> str:
    """``mean ± std, med M`` (lower is better) of one value of the seeds' deployment records."""
    return format_stat(seed_stat(deployed_values(runs, pick), False))


def deployment_lines(results: dict) -> list[str]:
    """The section's lines ([] when the run deployed nothing)."""
    models = {label: entry.get("deployment") or [] for label, entry in results["models"].items()}
    first = next((run for runs in models.values() for run in runs if run and "diverged" not in run), None)
    if first is None:
        return []
    out = ["## Continual learning at deployment", "",
           f"Outer parameters frozen; {first['tokens']:,} tokens of `{first['domain']}` (unseen in training) per "
           f"stream, {first['streams']} stream(s), segments of {first['segment']} tokens, state carried: "
           f"{first['carry']}" + (" (attention caches and positions continue too: for a model without a level "
                                     "that learns at test time, `carried` measures a longer context, not learning)"
                                     if first["carry"] == "all" else "")
           + f"; forgetting on `{first['pretrain_domain']}` = bpb after the stream - before "
           "(`nlc.continual.deployment`). Per cell: mean ± std over finite seeds, `med` over all seeds.", "",
           "| model | condition | bpb | last quarter | forgetting |", "|---|---|---|---|---|"]
    for label, runs in models.items():
        conditions = [c for c in CONDITION_TITLES if any(r and c in r.get("conditions", {}) for r in runs)]
        for condition in conditions:
            cells = [_cell(runs, lambda r, k=key: r["conditions"][condition][k])
                     for key in ("bpb_all", "bpb_last_quarter")]
            forgetting = (_cell(runs, lambda r: r["pretrain"]["forgetting"][condition])
                          if condition.endswith("carried") else "--")
            out.append(f"| {label} | {CONDITION_TITLES[condition]} | {cells[0]} | {cells[1]} | {forgetting} |")
    return out + [""]
