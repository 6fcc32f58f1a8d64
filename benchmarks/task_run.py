"""Does a model of the comparison learn a synthetic task at the calibrated budget? One model,
one task, one seed, trained as ``nlc bench paper`` trains it (:mod:`nlc.bench.synthetic`).

Run ``python benchmarks/task_run.py "Titans (LMM)" copy --steps 1500`` (a label or spec stem
of ``nlc.bench.plan.MODELS``; ``copy`` | ``mqar`` | ``passkey``; ``--steps`` the budget, e.g.
the Transformer's calibrated one in docs/benchmarks.md; ``--width`` default 128, the full
plan's ``task_width``; ``--every`` default 250: accuracy at the training shapes every
that many steps, on the calibration split; the test split scores the end only). The model
is matched to the Transformer at ``--width`` (4 heads), trained
on the task's protocol of ``nlc.bench.task_protocol.PAPER_PROTOCOLS`` with seed ``--seed``
(default 0) on one thread, subnormals flushed. Prints the curve as it goes and writes
``benchmarks/results/task_<stem>_<task>.json`` (``--json``; atomically): the curve and the
final run's test accuracy at every shape (the longer ones: length extrapolation), and chance.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(ROOT))

from nlc.subnormals import flush_subnormals  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a label or spec stem of nlc.bench.plan.MODELS")
    parser.add_argument("task", choices=("mqar", "copy", "passkey"))
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="output path (default benchmarks/results/task_<stem>_<task>.json)")
    args = parser.parse_args(argv)
    flush_subnormals()  # before any tensor op (nlc.subnormals)
    import torch

    from nlc.bench.plan import bench_model, plan_for
    from nlc.bench.run import task_overrides
    from nlc.bench.synthetic import chance, start_run
    from nlc.bench.task_protocol import PAPER_PROTOCOLS
    from nlc.files import atomic_write_text

    torch.set_num_threads(1)
    model = bench_model(args.model)
    protocol = next(p for p in PAPER_PROTOCOLS if p.task == args.task)
    tasks = replace(plan_for("full").task_settings(), reference_width=args.width)
    run = start_run(model.path, task_overrides(model, tasks), protocol, args.seed, args.steps)
    params = sum(p.numel() for p in run.model.parameters())
    start, curve = time.perf_counter(), []
    print(f"{model.label} on {args.task}: {params:,} parameters, {args.steps} steps, chance "
          f"{chance(args.task):.4f}", flush=True)
    for step in [*range(args.every, args.steps, args.every), args.steps]:
        run.train_to(step)
        accuracy = run.accuracy(protocol.train, "calibration")  # the test split only at the end
        curve.append({"step": run.step, "seconds": time.perf_counter() - start, "accuracy": accuracy})
        print(f"[{time.perf_counter() - start:6.0f}s] step {run.step}: " + ", ".join(
            f"{shape} {value:.1%}" for shape, value in accuracy.items()), flush=True)
        if run.step < step:  # stopped early: a non-finite loss
            break
    result = {"model": model.label, "spec": model.spec, "task": args.task, "width": args.width, "params": params,
              "seed": args.seed, "steps": args.steps, "chance": chance(args.task), "curve": curve,
              "protocol": protocol.to_json(), "run": run.result(), "seconds": time.perf_counter() - start}
    out = Path(args.json or ROOT / "benchmarks" / "results" / f"task_{Path(model.spec).stem}_{args.task}.json")
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"test accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in result["run"]["accuracy"].items())
          + f"\nwrote {out}")


if __name__ == "__main__":
    main()
