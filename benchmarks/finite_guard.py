"""Benchmark of the non-finite guard of ``nlc.train`` (``check_finite``): its cost per step.

Run ``python benchmarks/finite_guard.py`` (``--quick``: fewer steps). Prints a table and
writes ``benchmarks/results/finite_guard.json``. fp32, ``--threads`` intra-op threads
(default 1), ``--device`` (default cpu).

Two measurements per spec (``transformer`` and ``hope``, width 64, batch 4 x 128 tokens):

1. **training steps**: one run of ``nlc.train``'s loop (``nlc.training.loop._Run``) whose
   steps alternate the guard on and off in ABBA order, so load drift hits both alike; a
   step's time is the wall time the loop itself measures (batch, forward, backward, guard,
   optimizer step). The first two steps are warm-up. ``overhead`` = the median over
   adjacent on/off pairs of (step on / step off) - 1. On a shared machine this is
   noise-dominated at the percent level: it can come out negative.
2. **the check itself**: after one real forward + backward, the guard's extra work alone --
   the gradients' norms summed and read with the loss in one sync (what the step does) --
   against the plain ``loss.item()`` the unguarded step does, median of ``reps`` calls.
   ``check share`` = (guard - item) / median step time off: the cost that the noise of
   measurement 1 hides.

The guard's other work (parameter check before a validation or checkpoint, the diagnostic
re-run after a NaN) happens outside the timed steps or only once a run has failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402
from benchmarks._harness import format_table  # noqa: E402
from nlc.training.config import TrainConfig  # noqa: E402
from nlc.training.distributed import join_world  # noqa: E402
from nlc.training.inputs import run_spec, train_data  # noqa: E402
from nlc.training.loop import _Run  # noqa: E402

SPECS = ("transformer", "hope")
SIZE = ["model.width=64", "model.heads=4", "train.batch=4", "train.seq_len=128", "train.eval_batches=1"]


def text_data() -> SimpleNamespace:
    """Real English text in memory (docs/design.md as bytes, 90/10): no corpus fetch."""
    raw = torch.tensor(list((ROOT / "docs" / "design.md").read_bytes()), dtype=torch.uint8)
    cut = int(raw.numel() * 0.9)
    return SimpleNamespace(name="design-doc", train=raw[:cut], val=raw[cut:], vocab=256)


def interleaved_steps(spec: Path, data, pairs: int, device: str) -> list[tuple[float, float]]:
    """``(seconds on, seconds off)`` of adjacent training steps of one run, ABBA order,
    after two warm-up steps (the loop's own step timing, as in ``metrics.jsonl``)."""
    steps = 2 + 2 * pairs
    spec = run_spec(spec, tuple(SIZE), steps=steps, seed=0, data_name=data.name)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.from_spec(spec, out, progress=False, device=device)
        world = join_world(config.device)
        try:
            run = _Run(spec, spec, config, train_data(data, spec), world, resume=False)
            seconds = {True: [], False: []}
            for step in range(steps):
                check = step < 2 or (step // 2) % 2 == (step % 2)  # warm-up, then off on on off ...
                run.check_finite, run.step = check, run.step + 1
                record = run._train_step()
                if step >= 2:
                    seconds[check].append(config.batch * config.seq_len / record["tokens_per_s"])
        finally:
            world.close()
    return list(zip(seconds[True], seconds[False]))


def check_cost(spec: Path, data, device: str, reps: int) -> dict[str, float]:
    """Median seconds of the guard's read (grad norms + loss, one sync) and of a plain
    ``loss.item()``, on the gradients of one real forward + backward."""
    model = nlc.compile(spec, overrides=SIZE, device=device, seed=0)
    x = data.train[:4 * 129].long().view(4, 129).to(device)
    logits, _ = model(x[:, :-1], model.init_state(4), targets=x[:, 1:])
    loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    loss = loss.detach()
    grads = [p.grad for p in model.parameters() if p.grad is not None]

    def guarded() -> None:  # what nlc.training.loop._Run._finite_loss reads
        norms = [n.float() for n in torch._foreach_norm(grads)]
        torch.stack([loss.float(), torch.stack(norms).sum()]).tolist()

    def plain() -> None:
        loss.item()

    times: dict[str, list[float]] = {"guard": [], "item": []}
    for _ in range(reps):
        for name, fn in (("guard", guarded), ("item", plain)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench(name: str, data, pairs: int, reps: int, device: str) -> dict:
    spec = ROOT / "specs" / f"{name}.yaml"
    timed = interleaved_steps(spec, data, pairs, device)
    ratios = [on / off for on, off in timed]
    cost = check_cost(spec, data, device, reps)
    step_off = statistics.median(off for _, off in timed)
    return {"spec": name, "step_on_s": statistics.median(on for on, _ in timed), "step_off_s": step_off,
            "overhead_pct": 100 * (statistics.median(ratios) - 1), "pairs": len(timed),
            "check_guard_s": cost["guard"], "check_item_s": cost["item"],
            "check_share_pct": 100 * (cost["guard"] - cost["item"]) / step_off}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer step pairs and check repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finite_guard.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs, reps = (4, 50) if args.quick else (12, 200)
    data = text_data()
    rows = [bench(name, data, pairs if name == "hope" else 8 * pairs, reps, args.device) for name in SPECS]
    table = [{"spec": r["spec"], "on": f"{r['step_on_s'] * 1e3:.1f}", "off": f"{r['step_off_s'] * 1e3:.1f}",
              "overhead": f"{r['overhead_pct']:+.2f}%",
              "check": f"{(r['check_guard_s'] - r['check_item_s']) * 1e6:.0f}",
              "share": f"{r['check_share_pct']:.3f}%"} for r in rows]
    print(format_table(table, [("spec", "spec"), ("on", "step on (ms)"), ("off", "step off (ms)"),
                               ("overhead", "overhead"), ("check", "check extra (us)"),
                               ("share", "check share")]))
    payload = {"rows": rows, "device": args.device, "threads": args.threads, "quick": args.quick,
               "size": SIZE, "torch": torch.__version__, "python": platform.python_version(),
               "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
