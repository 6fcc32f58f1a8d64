"""Scaling benchmark: fwd+bwd tokens/s and peak memory of each level kind as T grows.

Run::

    OMP_NUM_THREADS=2 python benchmarks/scaling.py                 # T 512 ... 8192
    python benchmarks/scaling.py --rules titans,delta --seqs 512,2048 --budget 300
    python benchmarks/scaling.py --quick                           # toy shapes, seconds

Prints a table, writes ``benchmarks/results/scaling.json`` (``--json``) and a two-panel
log-log plot next to it, ``scaling.png`` (``--plot``; default the JSON's path, ``.png``):
tokens/s vs T and peak MiB vs T, one line per kind. One row per (kind, T): the level blocks of the primitives benchmark
(:mod:`benchmarks._rules`; layouts in the ``benchmarks/primitives.py`` docstring) at its
shapes: fp32, ``torch.set_num_threads(2)``, d = 256 = 4 heads x 64, batch 4, chunk 64
(``--chunk``), eager, the fast (chunked) forms, T in {512, 1024, 2048, 4096, 8192}. Default
kinds: linear_attn, delta, gated_delta, titans (deep memory), omega_w4, hope_selfmod,
cms_chain, and the softmax ``sdpa_block`` as the yardstick (``--rules``: any names of
:func:`benchmarks._rules.rule_specs`).

Subnormal floats are flushed to zero, as nlc's commands run models (:mod:`nlc.subnormals`);
``--keep-subnormals`` keeps them (torch's default), which bends the deep memories' curves.

Measurements: peak allocated bytes of one fwd+bwd (:func:`benchmarks._harness.
peak_alloc_bytes`, allocations made during the call: activations, gradients, workspaces;
that call doubles as the warm-up), then fwd+bwd tokens/s (B T / median time of
:func:`~benchmarks._harness.time_call`). Per kind, the issue's targets (memory levels,
T = 512 -> 8192): ``tok/s ratio`` = tokens/s at the largest T / at the smallest T, flat if
>= 0.8; ``peak slope`` = (peak(T_max) / peak(T_min)) / (T_max / T_min), linear if in
[0.8, 1.25]. A verdict is given only where both ends were measured.

Time budget: rows run by T, smallest first, every kind at one T before the next T (the JSON
is written after every row, so a run cut short keeps what it measured). A row
starts only if its estimated peak memory (the previous T's, scaled and doubled) fits in half
the available memory, and if its estimate (the kind's previous row scaled by the growth seen so far) fits
in ``--row-budget`` (default 240 s) and what is left of ``--budget`` (default 1500 s); a
row still running at either limit is stopped. Cut rows stay in the JSON (status
``skipped`` / ``timeout``, with the reason); a row that raises keeps its first error line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Optional

import torch

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import (  # noqa: E402
    MiB, OutOfTime, add_subnormals_flag, apply_subnormals, available_bytes, deadline, estimate_peak, fmt_si,
    format_table, peak_alloc_bytes, time_call,
)
from benchmarks._measure import first_line, fwd_bwd_fns  # noqa: E402
from benchmarks._rules import RuleSpec, rule_specs  # noqa: E402
from benchmarks._shapes import FULL, TINY, Shape  # noqa: E402
from nlc.figures import new_figure, save_figure  # noqa: E402
from nlc.files import atomic_write_text  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scaling.json")
DEFAULT_RULES = ["linear_attn", "delta", "gated_delta", "titans", "omega_w4", "hope_selfmod",
                 "cms_chain", "sdpa_block"]
SEQS, QUICK_SEQS = [512, 1024, 2048, 4096, 8192], [64, 128]
QUICK = replace(TINY, d=64, heads=2, deep_hidden=64, cms_hidden=128, mlp_hidden=128)
FLAT_MIN, LINEAR_RANGE = 0.8, (0.8, 1.25)
TIMING = dict(min_reps=3, max_reps=7, budget_s=1.0)
QUICK_TIMING = dict(min_reps=1, max_reps=2, budget_s=0.0)


def measure_row(spec: RuleSpec, s: Shape, T: int, chunk: int, timing: dict) -> dict:
    """Peak bytes of one fwd+bwd (also the warm-up), then the median fwd+bwd time."""
    torch.manual_seed(0)
    block = spec.build(s, chunk, True)
    x = torch.randn(s.batch, T, s.d, requires_grad=True)
    _, fwd_bwd = fwd_bwd_fns(block, x, torch.randn_like(x), list(block.parameters()))
    peak = peak_alloc_bytes(fwd_bwd)
    t = time_call(fwd_bwd, warmup=0, **timing)
    n_tok = s.batch * T
    return {"status": "ok", "fwdbwd_s": t["median_s"], "fwdbwd_tok_s": n_tok / t["median_s"],
            "peak_bytes": peak, "peak_bytes_per_token": None if peak is None else peak / n_tok,
            "reps": t["reps"], "fwdbwd_times_s": t["times_s"],
            "cpu_util": t["cpu_s"] / t["median_s"]}


def estimate_s(rows: list[dict], rule: str, T: int, timing: dict) -> float:
    """Seconds the (rule, T) row will take: ``min_reps`` + 2 calls (the profiled call costs
    about two) of the rule's last fwd+bwd time scaled by T^p, p the growth exponent of its
    last two rows (at least 1); 0 when the rule has no row yet."""
    done = [r for r in rows if r["rule"] == rule and r["status"] == "ok"]
    if not done:
        return 0.0
    p = 1.0
    if len(done) >= 2:
        a, b = done[-2], done[-1]
        p = max(1.0, math.log(b["fwdbwd_s"] / a["fwdbwd_s"]) / math.log(b["seq"] / a["seq"]))
    return (timing["min_reps"] + 2) * done[-1]["fwdbwd_s"] * (T / done[-1]["seq"]) ** p


def run_row(spec: RuleSpec, s: Shape, T: int, chunk: int, timing: dict, rows: list[dict],
            row_budget: float, left: float) -> dict:
    """One row, within ``min(row_budget, left)`` seconds and half the available memory (a
    row killed for memory would take the run with it); cut or failed rows say why."""
    row = {"rule": spec.name, "seq": T, "chunk": chunk if spec.chunked else None}
    cut = [r for r in rows if r["rule"] == spec.name and r["status"] in ("timeout", "skipped")]
    est, limit = estimate_s(rows, spec.name, T, timing), min(row_budget, left)
    peak = estimate_peak([(r["seq"], r["peak_bytes"]) for r in rows
                          if r["rule"] == spec.name and r["status"] == "ok" and r["peak_bytes"]], T)
    free = available_bytes()
    t0 = time.perf_counter()
    if cut:
        row.update(status="skipped", note=f"T={cut[-1]['seq']} was cut")
    elif peak > free / 2:
        row.update(status="skipped", note=f"memory: ~{peak / 2**30:.1f} GiB estimated, "
                   f"{free / 2**30:.1f} GiB available")
    elif left <= 0 or est > limit:
        row.update(status="skipped", note=f"time budget: ~{est:.0f} s estimated, "
                   f"{max(left, 0):.0f} s left, {row_budget:.0f} s per row")
    else:
        OutOfTime.hit = False
        try:
            with deadline(limit):
                measured = measure_row(spec, s, T, chunk, timing)
            if OutOfTime.hit:  # the alarm fired where Python swallows exceptions (a finalizer)
                raise OutOfTime()
            row.update(measured)
        except Exception as e:  # noqa: BLE001 -- one broken row must not sink the run
            if isinstance(e, OutOfTime) or OutOfTime.hit:  # (torch may wrap OutOfTime)
                which = "row" if row_budget <= left else "total"
                row.update(status="timeout", note=f"stopped at the {which} budget after "
                           f"{time.perf_counter() - t0:.0f} s")
            else:
                row.update(status="error", note=first_line(e))
    row.update(wall_s=time.perf_counter() - t0, estimate_s=est)
    return row


def summarize(rows: list[dict], specs: list[RuleSpec], seqs: list[int]) -> list[dict]:
    """Per kind: the tokens/s ratio and the peak-memory slope over the measured T range;
    a pass verdict only where both requested ends (min and max T) were measured."""
    out = []
    for sp in specs:
        ok = sorted((r for r in rows if r["rule"] == sp.name and r["status"] == "ok"
                     and r["peak_bytes"]), key=lambda r: r["seq"])
        entry = {"rule": sp.name, "memory_level": sp.memory, **dict.fromkeys(
            ("t_lo", "t_hi", "tok_s_ratio", "flat_pass", "peak_slope", "linear_pass"))}
        if len(ok) >= 2:
            lo, hi = ok[0], ok[-1]
            flat = hi["fwdbwd_tok_s"] / lo["fwdbwd_tok_s"]
            slope = hi["peak_bytes"] / lo["peak_bytes"] / (hi["seq"] / lo["seq"])
            entry.update(t_lo=lo["seq"], t_hi=hi["seq"], tok_s_ratio=flat, peak_slope=slope)
            if (lo["seq"], hi["seq"]) == (min(seqs), max(seqs)):
                entry.update(flat_pass=flat >= FLAT_MIN,
                             linear_pass=LINEAR_RANGE[0] <= slope <= LINEAR_RANGE[1])
        out.append(entry)
    return out


def render(res: dict) -> str:
    m = res["meta"]
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    rows = [{**r, "tok": fmt_si(r.get("fwdbwd_tok_s")), "C": str(r["chunk"] or "-"),
             "mib": f"{r['peak_bytes'] / MiB:.1f}" if r.get("peak_bytes") else "-",
             "bpt": fmt_si(r.get("peak_bytes_per_token"), "B"), "wall": f"{r['wall_s']:.1f}",
             "cpu": f"{r['cpu_util']:.2f}" if "cpu_util" in r else "-"} for r in res["rows"]]
    summ = [{**e, "range": f"{e['t_lo']}-{e['t_hi']}" if e["t_lo"] else "-",
             "mem": "yes" if e["memory_level"] else "no",
             "flat": f"{e['tok_s_ratio']:.2f} {verdict[e['flat_pass']]}"
             if e["tok_s_ratio"] else "-",
             "lin": f"{e['peak_slope']:.2f} {verdict[e['linear_pass']]}"
             if e["peak_slope"] else "-"} for e in res["summary"]]
    return "\n".join([
        f"scaling benchmark ({'quick' if m['quick'] else 'full'}): torch {m['torch']}, "
        f"{m['threads']} threads, fp32, d={m['shape']['d']} ({m['shape']['heads']} heads), "
        f"batch {m['shape']['batch']}, load avg {m['loadavg_1m_start_end'][0]:.1f} -> "
        f"{m['loadavg_1m_start_end'][1]:.1f}, {m['total_s']:.0f} s",
        format_table(rows, [("rule", "kind"), ("seq", "T"), ("C", "C"), ("status", "status"),
                            ("tok", "fwd+bwd tok/s"), ("mib", "peak MiB"),
                            ("bpt", "peak/token"), ("cpu", "cpu/wall"), ("wall", "wall s"),
                            ("note", "note")]),
        f"\nTargets: tok/s(T max) / tok/s(T min) >= {FLAT_MIN}; (peak(T max) / peak(T min))"
        f" / (T max / T min) in [{LINEAR_RANGE[0]}, {LINEAR_RANGE[1]}]",
        format_table(summ, [("rule", "kind"), ("mem", "memory level"), ("range", "T range"),
                            ("flat", "tok/s ratio"), ("lin", "peak slope")])])


def plot(res: dict, path: str) -> None:
    """Two log-log panels, tokens/s and peak MiB against T, one line per kind."""
    fig = new_figure(11, 4.2)
    ax_tok, ax_mem = fig.subplots(1, 2)
    for name in res["meta"]["rules"]:
        ok = [r for r in res["rows"] if r["rule"] == name and r["status"] == "ok"]
        style = {"marker": "o", "label": name, "ls": "--" if name == "sdpa_block" else "-"}
        ax_tok.plot([r["seq"] for r in ok], [r["fwdbwd_tok_s"] for r in ok], **style)
        ax_mem.plot([r["seq"] for r in ok], [(r["peak_bytes"] or math.nan) / MiB for r in ok],
                    **style)
    for ax, label in ((ax_tok, "fwd+bwd tokens/s"), (ax_mem, "peak MiB (one fwd+bwd)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(res["meta"]["seqs"], [str(T) for T in res["meta"]["seqs"]])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("T (tokens per sequence)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    ax_tok.legend(fontsize=8)
    fig.suptitle(f"level blocks, d={res['meta']['shape']['d']}, batch "
                 f"{res['meta']['shape']['batch']}, {res['meta']['threads']} threads, fp32")
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(res: dict, out: Optional[str], plot_path: Optional[str]) -> None:
    """The plot (skipped, saying why, without matplotlib), then the JSON (atomic)."""
    if plot_path:
        try:
            plot(res, plot_path)
            res["plot"] = plot_path
        except ImportError as e:
            res["plot_note"] = (f"plot skipped ({first_line(e)}): pip install matplotlib "
                                "(a dependency of nlc: pip install -e .)")
    if out:
        atomic_write_text(out, json.dumps(res, indent=1))


def run(rules: list[str], seqs: list[int], chunk: int, threads: int, budget: float,
        row_budget: float, quick: bool, out: Optional[str], plot_path: Optional[str],
        verbose: bool = True, command: str = "", subnormals_flushed: bool = False) -> dict:
    """Measure every (kind, T) row; writes the JSON and the plot; returns the results.
    ``subnormals_flushed`` is recorded (``main`` sets it before any tensor op)."""
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    threads_before = torch.get_num_threads()
    random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    s, timing = (QUICK, QUICK_TIMING) if quick else (FULL, TIMING)
    specs = [sp for sp in rule_specs() if sp.name in rules]
    rows: list[dict] = []
    try:
        for T, sp in ((T, sp) for T in seqs for sp in specs):
            left = budget - (time.perf_counter() - t_start)
            rows.append(r := run_row(sp, s, T, chunk, timing, rows, row_budget, left))
            if out:  # after every row: a run cut short keeps what it measured
                atomic_write_text(out, json.dumps({"meta": {"partial": True, "command": command}, "rows": rows}))
            if verbose:
                print(f"[{time.perf_counter() - t_start:6.1f}s] {r['rule']:13s} T={T:<5d} "
                      f"{r['status']:8s} {fmt_si(r.get('fwdbwd_tok_s'))} tok/s "
                      f"({r['wall_s']:.1f}s) {r.get('note', '')}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads_before)
    meta = {"quick": quick, "subnormals_flushed": subnormals_flushed, "rules": [sp.name for sp in specs], "seqs": seqs, "chunk": chunk,
            "shape": asdict(s), "dtype": "float32", "mode": "eager", "threads": threads,
            "timing": timing, "budget_s": budget, "row_budget_s": row_budget,
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "command": command,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "loadavg_1m_start_end": [load_start, os.getloadavg()[0]],
            "total_s": time.perf_counter() - t_start}
    res = {"meta": meta, "rows": rows, "summary": summarize(rows, specs, seqs),
           "cut": [f"{r['rule']} T={r['seq']}: {r['status']} ({r['note']})" for r in rows
                   if r["status"] in ("skipped", "timeout")], "plot": None}
    res["table"] = render(res)
    write_outputs(res, out, plot_path)
    if verbose:
        print(res["table"] + ("\n" + (res.get("plot_note") or f"plot: {res['plot']}")
                              if plot_path else ""), flush=True)
    return res


def main(argv: Optional[list[str]] = None) -> int:
    """Command line (module docstring); returns 1 if a row raised, else 0."""
    names = [sp.name for sp in rule_specs()]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rules", help=f"comma-separated kinds (default {','.join(DEFAULT_RULES)})"
                    f", of: {','.join(names)}")
    ap.add_argument("--seqs", help="comma-separated T (default 512,1024,2048,4096,8192)")
    ap.add_argument("--chunk", type=int, help="chunk (default 64, quick 16)")
    ap.add_argument("--threads", type=int, help="torch threads (default 2, quick 1)")
    ap.add_argument("--budget", type=float, help="total seconds (default 1500, quick 60)")
    ap.add_argument("--row-budget", type=float, help="seconds per row (default 240, quick 30)")
    ap.add_argument("--quick", action="store_true", help="toy shapes, T 64,128: seconds")
    ap.add_argument("--json", default=RESULTS, help="JSON output path ('' = none)")
    ap.add_argument("--plot", help="PNG path ('' = none; default: the JSON path, .png)")
    add_subnormals_flag(ap)
    a = ap.parse_args(argv)
    flushed = apply_subnormals(a.keep_subnormals)
    rules = a.rules.split(",") if a.rules else DEFAULT_RULES
    if [r for r in rules if r not in names]:
        ap.error(f"unknown --rules {[r for r in rules if r not in names]}; known: {names}")
    seqs = sorted(int(t) for t in a.seqs.split(",")) if a.seqs else QUICK_SEQS if a.quick else SEQS
    plot_path = a.plot if a.plot is not None else a.json and os.path.splitext(a.json)[0] + ".png"
    q = a.quick
    res = run(rules, seqs, a.chunk or (16 if q else 64), a.threads or (1 if q else 2),
              a.budget or (60.0 if q else 1500.0), a.row_budget or (30.0 if q else 240.0), q,
              a.json or None, plot_path or None, command=" ".join(
                  ["python benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)]),
              subnormals_flushed=flushed)
    return 1 if any(r["status"] == "error" for r in res["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
