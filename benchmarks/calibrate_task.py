"""Is a synthetic task learnable at the comparison's size? The calibration of ``nlc bench
paper`` (:mod:`nlc.bench.calibration`) on its own, for one task.

Run ``python benchmarks/calibrate_task.py mqar`` (``copy`` | ``passkey``; ``--width``
default 128, the full plan's ``task_width``; ``--max-steps`` default 4000, ``--every``
default 250). The reference Transformer (``nlc/bundled/transformer.yaml`` at ``--width``,
4 heads, seed 0, one thread, subnormals flushed) trains on the task's protocol of
``nlc.bench.task_protocol.PAPER_PROTOCOLS`` and is scored every ``--every`` steps on the
calibration split; the budget is the first step at which its lowest training-shape accuracy
reaches 90%, confirmed by a run of that length, or the task is "not counted". Prints the
curve as it goes and writes ``benchmarks/results/calibrate_<task>.json`` (``--json``;
atomically) with the curve, the budget, the reason and the confirmed run's test accuracy at
every shape (the longer ones: length extrapolation).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(ROOT))

from nlc.subnormals import flush_subnormals  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("mqar", "copy", "passkey"))
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--json", help="output path (default benchmarks/results/calibrate_<task>.json)")
    args = parser.parse_args(argv)
    flush_subnormals()  # before any tensor op (nlc.subnormals)
    import torch

    from nlc.bench.calibration import calibrate_task
    from nlc.bench.task_protocol import PAPER_PROTOCOLS, CalibrationSettings
    from nlc.files import atomic_write_text

    torch.set_num_threads(1)
    protocol = next(p for p in PAPER_PROTOCOLS if p.task == args.task)
    start = time.perf_counter()
    found = calibrate_task(ROOT / "nlc" / "bundled" / "transformer.yaml", [f"model.width={args.width}", "model.heads=4"],
                           protocol, CalibrationSettings(max_steps=args.max_steps, eval_every=args.every), seed=0,
                           log=lambda line: print(f"[{time.perf_counter() - start:6.0f}s]{line}", flush=True))
    result = {**{k: v for k, v in found.to_json().items() if k != "reference"}, "width": args.width,
              "protocol": protocol.to_json(), "seconds": time.perf_counter() - start,
              # the confirmed run's test accuracy at every shape, the longer test shapes included
              "test_accuracy": found.reference["accuracy"] if found.reference else None}
    out = Path(args.json or ROOT / "benchmarks" / "results" / f"calibrate_{args.task}.json")
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"{args.task}: " + ("counts" if found.counts else "NOT counted") + f": {found.reason}\nwrote {out}")


if __name__ == "__main__":
    main()
