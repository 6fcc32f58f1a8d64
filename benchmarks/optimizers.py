"""Benchmark of the optimizer levels (issue 14): the same small LM trained on real text by
each rule for the same steps and seeds.

Run ``python benchmarks/optimizers.py`` (``--quick``: 40 steps, 2 seeds). Prints a table and
writes ``benchmarks/results/optimizers.json``. CPU, fp32, one intra-op thread.

Per rule (``--rules``, default adamw, muon, m3, dmgd, sgd) and seed (``--seeds``, default 3): one
``nlc.train`` run of ``--spec`` (default ``specs/transformer.yaml``) at width 64, 8 x 128
tokens per step, with ``levels.outer.rule`` and ``lr`` set (``--lrs rule=lr,...``;
defaults below) and everything else the spec's. Seeds run rule after rule (ABAB), so load
drift on a shared machine hits every rule alike. Reported:

* ``val bpb``: the final validation bits per byte (``train.eval_batches`` fixed windows),
  mean ± the standard deviation over seeds;
* ``time/step``: the median step time (the loop's own clock, first 3 steps left out), as
  a ratio to AdamW's in the same run;
* ``memory``: bytes of parameters + optimizer state (read from the checkpoint), as a
  ratio to AdamW's.

``--sweep``: one seed, each rule at lrs spread around its default, to pick the defaults
(the table printed is that sweep's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import nlc  # noqa: E402
from benchmarks._harness import format_table  # noqa: E402

LRS = {"adamw": 1e-2, "muon": 3e-2, "m3": 1e-3, "dmgd": 0.09, "sgd": 1.0}  # the best of --sweep (docs/benchmarks.md)
EXTRA = {"sgd": ["levels.outer.momentum=0.9"]}  # SGD with momentum


def run_one(spec: str, rule: str, lr: float, seed: int, steps: int, out: Path) -> dict:
    overrides = ["model.width=64", "train.seq_len=128", "train.batch=8", "train.eval_batches=8",
                 f"train.eval_every={steps}", f"levels.outer.rule={rule}", f"levels.outer.lr={lr}",
                 *EXTRA.get(rule, [])]
    result = nlc.train(spec, overrides=overrides, steps=steps, seed=seed, out=out, progress=False)
    steps_s = [8 * 128 / r["tokens_per_s"] for r in result.metrics if r["kind"] == "train"][3:]
    return {"rule": rule, "lr": lr, "seed": seed, "val_bpb": result.val_bpb,
            "step_s": statistics.median(steps_s), "state_bytes": _state_bytes(out / "checkpoint")}


def _state_bytes(checkpoint: Path) -> int:
    total = 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        with safe_open(str(checkpoint / name), framework="pt") as f:
            for key in f.keys():
                if name == "model.safetensors" or key.startswith("opt/"):
                    t = f.get_slice(key)
                    total += _numel(t.get_shape()) * 4
    return total


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def summary(rows: list[dict]) -> list[dict]:
    base = [r for r in rows if r["rule"] == "adamw"]
    base_step = statistics.median(r["step_s"] for r in base) if base else None
    base_bytes = base[0]["state_bytes"] if base else None
    out = []
    for key in dict.fromkeys((r["rule"], r["lr"]) for r in rows):
        mine = [r for r in rows if (r["rule"], r["lr"]) == key]
        bpbs = [r["val_bpb"] for r in mine]
        out.append({"rule": key[0], "lr": key[1], "seeds": len(mine), "val_bpb": statistics.mean(bpbs),
                    "val_bpb_sd": statistics.stdev(bpbs) if len(bpbs) > 1 else None,
                    "step_ratio": statistics.median(r["step_s"] for r in mine) / base_step if base_step else None,
                    "memory_ratio": mine[0]["state_bytes"] / base_bytes if base_bytes else None})
    return out


def _f(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "transformer.yaml"))
    parser.add_argument("--rules", default="adamw,muon,m3,dmgd,sgd")
    parser.add_argument("--lrs", default="", help="rule=lr,... (default: LRS)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40 steps, 2 seeds")
    parser.add_argument("--sweep", action="store_true", help="one seed, lrs around each default")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "optimizers.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    lrs = {**LRS, **{k: float(v) for k, v in (p.split("=") for p in args.lrs.split(",") if p)}}
    steps, seeds = (40, 2) if args.quick else (args.steps, args.seeds)
    rules = args.rules.split(",")
    plan = [(rule, lrs[rule] * f) for rule in rules for f in ((0.3, 1, 3) if args.sweep else (1,))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1 if args.sweep else seeds):
            for rule, lr in plan:
                rows.append(run_one(args.spec, rule, lr, seed, steps, Path(tmp) / f"{rule}-{lr}-{seed}"))
                print(f"  {rule} lr {lr:g} seed {seed}: val bpb {rows[-1]['val_bpb']:.4f}", flush=True)
    table = summary(rows)
    print(format_table([{"rule": r["rule"], "lr": f"{r['lr']:g}", "seeds": r["seeds"], "bpb": f"{r['val_bpb']:.4f}",
                         "sd": _f(r["val_bpb_sd"], 4), "step": _f(r["step_ratio"], 2), "memory": _f(r["memory_ratio"], 2)}
                        for r in table],
                       [("rule", "rule"), ("lr", "lr"), ("seeds", "seeds"), ("bpb", "val bpb"), ("sd", "± sd"),
                        ("step", "time/step vs adamw"), ("memory", "memory vs adamw")]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"spec": args.spec, "steps": steps, "sweep": args.sweep,
                                           "rows": rows, "summary": table}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
