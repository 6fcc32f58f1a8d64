"""Training throughput of the comparison's models on one CUDA GPU (eager and torch.compile).

Run ``python benchmarks/cuda_throughput.py`` on a machine with a GPU (``--device cpu`` times
the same step on the CPU, threads from ``OMP_NUM_THREADS``). For each model: the bundled spec
at ``--width`` (default 256), one training step = forward with the teach signal +
cross-entropy + backward + AdamW, on a batch of ``--batch`` x ``--seq`` tokens (default
8 x 1024); ``--no-teach`` runs the forward without targets, so task-driven CMS levels do not
learn (the difference is what the teach loop costs). float32 with TF32 matmuls allowed (what a
user gets by default on Hopper: ``torch.set_float32_matmul_precision("high")``). Two warm-up
steps, then the median of ``--steps`` timed steps (``torch.cuda.synchronize`` around each);
peak memory is ``torch.cuda.max_memory_allocated``. ``step FLOP/tok`` is the matmul,
convolution and attention FLOPs of one whole step (forward, teach signal, backward) per
token, counted once by ``torch.utils.flop_counter.FlopCounterMode`` outside the timed steps
of the eager row (a compiled row reuses its count; elementwise ops are not counted);
``GFLOP/s`` is that count over the median step time, and ``x FLOP-bound`` the tokens/s ratio
to the run's first model that a model would reach at the first model's FLOP/s (its
FLOP/token ratio inverted): a model whose tokens/s ratio is far below its FLOP-bound ratio
loses to overhead, one near it to arithmetic. Subnormal floats are flushed to zero as
``nlc train`` does (:mod:`nlc.subnormals`; ``--keep-subnormals`` keeps them). ``compiled`` rows use
``nlc.compile(compile="default")`` and report the first call (compile) time separately.
Prints a table and writes ``benchmarks/results/cuda_throughput.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import nlc  # noqa: E402
from benchmarks._harness import add_subnormals_flag, apply_subnormals  # noqa: E402
from nlc.spec.load import bundled_specs  # noqa: E402

MODELS = ("transformer", "samba", "titans_lmm", "titans_mac", "hope_attention", "hope")
COMPILED = ("transformer", "titans_lmm")   # HOPE's torch.compile takes minutes on its own
RESULTS = Path(__file__).resolve().parent / "results" / "cuda_throughput.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, args, device: torch.device, compiled: bool, flops: float | None = None) -> dict:
    """One row; ``flops`` (per token) given: the eager row's count of the same algorithm, for a
    compiled row (the counter sees only what dispatches through aten, not inductor's kernels)."""
    overrides = [f"model.width={args.width}"]
    model = nlc.compile(bundled_specs()[name], overrides=overrides, seed=0, device=device,
                        compile="default" if compiled else None)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.vocab, (args.batch, args.seq), generator=gen).to(device)
    targets = torch.roll(x, -1, 1)
    teach = targets if getattr(model, "teach_period", None) is not None and not args.no_teach else None

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        logits, _ = model(x, model.init_state(args.batch), teach)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = step()
    if flops is None:
        with FlopCounterMode(display=False) as counter:  # the second step, warm
            step()
        flops = counter.get_total_flops() / (args.batch * args.seq)
    else:
        step()
    times = [step() for _ in range(args.steps)]
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"model": name, "mode": "compiled" if compiled else "eager", "params": params,
            "step_s": seconds, "tokens_per_s": args.batch * args.seq / seconds, "first_step_s": first,
            "peak_gib": peak, "step_flop_per_token": flops,
            "gflop_per_s": flops * args.batch * args.seq / seconds / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-teach", action="store_true",
                    help="no targets in the forward: task-driven CMS levels keep their state (what the teach loop costs)")
    ap.add_argument("--out", default=str(RESULTS))
    add_subnormals_flag(ap)
    args = ap.parse_args()
    flushed = apply_subnormals(args.keep_subnormals)
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")
    machine = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
               "torch": torch.__version__, "python": platform.python_version(), "subnormals_flushed": flushed}
    rows: list[dict] = []
    for name in args.models:
        for compiled in (False, True):
            if compiled and (args.no_compile or name not in COMPILED):
                continue
            row = measure(name, args, device, compiled, rows[-1]["step_flop_per_token"] if compiled else None)
            rows.append(row)
            base = rows[0]
            row["x_first"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["x_flop_bound"] = base["step_flop_per_token"] / row["step_flop_per_token"]
            peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "--"
            print(f"{name:16s} {row['mode']:9s} {row['params']:>10,d} params  {row['tokens_per_s']:>10,.0f} tok/s  "
                  f"x {row['x_first']:6.3f}  step FLOP/tok {row['step_flop_per_token'] / 1e6:7.2f}M  "
                  f"{row['gflop_per_s']:6.1f} GFLOP/s  x FLOP-bound {row['x_flop_bound']:6.3f}  "
                  f"step {row['step_s'] * 1e3:8.1f} ms  first {row['first_step_s']:6.1f} s  peak {peak} GiB",
                  flush=True)
            if args.out:  # after every row: a run cut short keeps what it measured
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"machine": machine, "settings": vars(args), "rows": rows}, indent=1) + "\n")
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
