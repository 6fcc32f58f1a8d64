"""Stability sweep (issue 15): does each spec train to a finite loss at every outer learning
rate of the paper benchmark's grid, for every seed, at the bench size, with nothing added?

Run ``python benchmarks/stability.py --specs hope,titans_lmm`` (default: every bundled spec
at the top of specs/ and every Table 6 ablation in specs/ablations/). Prints a table and writes
``benchmarks/results/stability.json`` after every run (atomically), so ``--resume`` carries an
interrupted sweep on: it keeps the rows of the JSON that match this sweep's steps and width and
runs only the missing (spec, lr, seed). CPU, fp32, one intra-op thread.

Each run is one ``nlc.train`` of the spec with the settings the first edition of
``nlc bench paper --full`` used (the sizes of issue 15, fixed here so the table in
docs/benchmarks.md stays reproducible): heads 4, sequences of 128, batch 8, 64 steps (``--steps``;
``--factor 4`` for 4x the tokens, where HOPE used to diverge), at each lr of the grid
(2e-3, 4e-3, 8e-3, 1.6e-2) and seed (``--seeds``, default 3), and ``--width`` (default 64, the
bench's reference width; the bench matches each model's parameter count instead). A run that
stops with a non-finite loss, gradient or parameter (:class:`nlc.errors.NonFiniteError`) is
*diverged*, reported with its step and the level that went non-finite first; nothing is
clipped or bounded beyond what the spec says.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import nlc  # noqa: E402
from benchmarks._harness import format_table  # noqa: E402
from nlc.errors import NonFiniteError  # noqa: E402
from nlc.files import atomic_write_text  # noqa: E402

HEADS, SEQ_LEN, BATCH, STEPS, WIDTH = 4, 128, 8, 64, 64
LRS = (2e-3, 4e-3, 8e-3, 1.6e-2)


def run_one(spec: Path, lr: float, seed: int, steps: int, width: int, out: Path) -> dict:
    """One training run; ``diverged`` with the step and level where it stopped."""
    overrides = [f"model.width={width}", f"model.heads={HEADS}", f"train.seq_len={SEQ_LEN}",
                 f"train.batch={BATCH}", f"levels.outer.lr={lr}", f"train.eval_every={steps}",
                 "train.eval_batches=2"]
    row = {"spec": spec.stem, "lr": lr, "seed": seed, "steps": steps}
    start = time.perf_counter()
    try:
        result = nlc.train(spec, overrides=overrides, steps=steps, seed=seed, out=out, progress=False)
        row.update(diverged=False, val_bpb=result.val_bpb)
    except NonFiniteError as err:
        row.update(diverged=True, step=err.step, level=err.level, message=str(err).split(".")[0])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default="", help="comma-separated bundled names or paths (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--factor", type=int, default=1, help="multiply the steps (the bench's 4x-tokens probe)")
    parser.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in LRS))
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "stability.json"))
    parser.add_argument("--resume", action="store_true", help="keep the JSON's rows of this sweep, run the rest")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.specs:
        specs = [Path(n) if Path(n).suffix else ROOT / "specs" / f"{n}.yaml" for n in args.specs.split(",") if n]
    else:
        specs = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "ablations").glob("*.yaml"))
    lrs = [float(x) for x in args.lrs.split(",")]
    steps, out_json = args.steps * args.factor, Path(args.json)
    header = {"steps": steps, "width": args.width, "lrs": lrs, "seeds": args.seeds}
    rows = []
    if args.resume and out_json.exists():
        saved = json.loads(out_json.read_text())
        if (saved.get("steps"), saved.get("width")) == (steps, args.width):
            rows = saved["rows"]
    done = {(r["spec"], r["lr"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            for seed in range(args.seeds):
                for lr in lrs:
                    if (spec.stem, lr, seed) in done:
                        continue
                    row = run_one(spec, lr, seed, steps, args.width, Path(tmp) / f"{spec.stem}-{lr}-{seed}")
                    rows.append(row)
                    atomic_write_text(out_json, json.dumps({**header, "rows": rows}, indent=1) + "\n")
                    what = f"diverged at step {row['step']} in {row['level']!r}" if row["diverged"] else \
                        f"val bpb {row['val_bpb']:.4f}"
                    print(f"  {spec.stem} lr {lr:g} seed {seed}: {what} ({row['seconds']} s)", flush=True)
    table = []
    for spec in specs:
        mine = [r for r in rows if r["spec"] == spec.stem and r["lr"] in lrs and r["seed"] < args.seeds]
        bad = [r for r in mine if r["diverged"]]
        table.append({"spec": spec.stem, "runs": str(len(mine)), "diverged": str(len(bad)),
                      "where": "; ".join(f"lr {r['lr']:g} s{r['seed']} step {r['step']} {r['level']!r}" for r in bad)})
    print(format_table(table, [("spec", "spec"), ("runs", "runs"), ("diverged", "diverged"), ("where", "where")]))
    atomic_write_text(out_json, json.dumps({**header, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
