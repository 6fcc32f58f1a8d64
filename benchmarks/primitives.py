"""Benchmark of the level primitives as level blocks, against a plain SDPA Transformer block.

Run::

    OMP_NUM_THREADS=2 python benchmarks/primitives.py        # full grid, < 10 min, 2 cores
    python benchmarks/primitives.py --quick                  # seq 512, chunk 64 only
    python benchmarks/primitives.py --profile titans --seq 2048 --chunk 64   # top ops

Prints a table and writes ``benchmarks/results/primitives.json``. fp32,
``torch.set_num_threads(2)``, subnormal floats flushed to zero as nlc's commands run models
(``--keep-subnormals`` keeps them; :mod:`nlc.subnormals`), width d = 256 = 4 heads x 64, batch 4, T in {512, 2048},
chunk in {16, 64}, eager and ``torch.compile`` (inductor), fast (chunked) and reference
(per-token loop) forms. Every row is a *level block as used in a model*,
``x (B, T, d) -> (B, T, d)`` (:mod:`benchmarks._rules`):

* memory rules (linear attention ... MIRAS lq): ``h = RMSNorm(x)``; q, k, v, g from one
  fused Linear(d, 4d); G per-head gates ``sigmoid(Linear(d, G H)(h))``; q, k l2-normalised
  per head; ``o = rule(state0, q, k, v, gates, chunk=C)``; ``y = x + Linear(d, d)(o *
  silu(g))``. The initial state is zeros (matrix) or meta-learned (deep memories; their
  gradients are computed). Gates: lr / gamma in (0, 1) (x 0.1 for deep memories),
  retention in (0.9, 1), momentum in (0, 0.9).
* HOPE self-modifying memory: projections ``x_in, q, g = Linear(d, 3d)(h)``, x_in and q
  l2-normalised per head, five residual MLP memories 64 -> 256 -> 64 per head,
  ``chunk_memory = C``, ``chunk_other = gcd(C, 16)``.
* CMS chain: ``x + cms_chunked(RMSNorm(x))``, 3 sequential GELU MLP levels d -> 1024 -> d,
  periods 16 / 64 / 256, local signal, lr 1e-3, ``policy="carry"`` (the chunk does not apply).
* softmax attention (full causal / sliding window 128): RMSNorm, fused QKV, one SDPA call,
  output projection, residual (no RoPE, as the yardstick).
* ``sdpa_block`` (the yardstick): pre-norm causal Transformer block, ``x + O(SDPA(QKV(
  RMSNorm(x)), is_causal=True))`` then ``x + W2 gelu(W1 RMSNorm(x))``, W1: 256 -> 1024.

Measurements (:mod:`benchmarks._measure`): fwd and fwd+bwd tokens/s (median of repeats),
peak MiB (profiler, one fwd+bwd), saved MiB (autograd, eager), outermost aten ops per
fwd+bwd, analytic forward FLOPs per token (:mod:`benchmarks._flops`; fwd+bwd = 3x) and the
achieved FLOP/s. ``reference`` rows run at a short length (``ref_seq``) and report time per
token: a per-token loop's time per token is flat in T, so it extrapolates (for softmax
attention, whose reference does O(t) work at token t, the speed-up is a lower bound).
Targets and the table: :mod:`benchmarks._report`. On a shared machine compare only ratios
of rows in the same run; ``cpu/wall`` shows whether the threads had their cores.

Time budget: rows run in priority order (:func:`plan`); the required rows (every rule eager
at the anchor shape T=512 C=64, and its reference) always start; every other row starts
only if its estimated time fits in what is left of ``--budget`` (default 540 s), and a row
still running at the end of the budget is stopped. A row whose estimated peak memory (the
rule's measured peaks, :func:`benchmarks._harness.estimate_peak`) exceeds half the memory
still available is skipped too: killed for memory it would take the run with it (the HOPE
block at T=2048, C=16 did on the 24 GiB box). Skipped rows are listed as such.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import traceback
from typing import Optional

import torch
from torch.profiler import ProfilerActivity, profile

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import (  # noqa: E402
    MiB, OutOfTime, add_subnormals_flag, apply_subnormals, available_bytes, deadline, estimate_peak, fmt_si,
    peak_alloc_bytes, saved_tensor_bytes,
)
from benchmarks._measure import Config, first_line, fwd_bwd_fns, measure  # noqa: E402
from benchmarks._report import evaluate_targets, find_row, render  # noqa: E402
from benchmarks._rules import RuleSpec, rule_specs  # noqa: E402
from benchmarks._shapes import FULL, TINY, Shape  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "primitives.json")
RULES = [sp.name for sp in rule_specs()]
# cheapest first (as measured on 2 cores): the order of the rows that always run
USUAL_COST = ["sdpa_block", "titans", "softmax_full", "softmax_swa", "linear_attn", "gla",
              "omega_w4", "delta", "gated_delta", "dgd", "deep_huber", "deep_lp", "miras_lq",
              "cms_chain", "hope_selfmod"]


def plan(specs: list[RuleSpec], s: Shape, quick: bool, compile: bool,
         compile_rules: Optional[list[str]] = None) -> list[tuple[bool, list[Config]]]:
    """Groups of configurations in priority order, each ``(required, configs)``:

    1. every rule eager at the anchor shape T = 512, C = 64, each followed by its
       reference row (required);
    2. eager at the longer sequence, C = 64 (the targets need it);
    3. compile at the anchor shape;
    4. eager at the smaller chunk;
    5. compile at the longer sequence, C = 64;
    6. compile at the smaller chunk.
    """
    seqs = s.seqs[:1] if quick else s.seqs
    chunks = s.chunks[-1:] if quick else s.chunks
    T0, C_hi = seqs[0], chunks[-1]

    def at(mode, T, C=None, chunked_only=False):
        return [Config(sp.name, "fast", mode, T, (C or C_hi) if sp.chunked else None)
                for sp in specs if (sp.chunked or not chunked_only) and (
                    mode == "eager" or compile_rules is None or sp.name in compile_rules
                    or sp.name == "sdpa_block")]

    refs = {sp.name: Config(sp.name, "reference", "eager", s.ref_seq,
                            s.ref_chunk if sp.chunked else None)
            for sp in specs if sp.fast_rule}
    anchor = [c for a in at("eager", T0) for c in [a] + ([refs[a.rule]] if a.rule in refs
                                                          else [])]
    groups = [(True, anchor)] + [(False, at("eager", T)) for T in seqs[1:]]
    if compile:
        groups.append((False, at("compile", T0)))
    groups += [(False, at("eager", T, C, True)) for C in chunks[:-1] for T in seqs]
    if compile:
        groups += [(False, at("compile", T)) for T in seqs[1:]]
        groups += [(False, at("compile", T, C, True)) for C in chunks[:-1] for T in seqs]
    return groups


class Estimator:
    """Seconds a row will take, from the rows measured so far: an eager row scales its
    rule's anchor row by T (and by the worst observed growth of time per token with T, and
    1.5 at the smaller chunk); a compile row scales the rule's last compile row by the
    number of unrolled chunks, or guesses ``compile_guess`` + 5 x the eager anchor."""

    def __init__(self, rows: list[dict], T0: int, C_hi: int, compile_guess: float):
        self.rows, self.T0, self.C_hi, self.compile_guess = rows, T0, C_hi, compile_guess

    def _anchor(self, rule: str) -> float:
        r = find_row(self.rows, rule=rule, impl="fast", mode="eager", seq=self.T0)
        return r["wall_s"] if r else 0.0

    def _growth(self, T: int) -> float:
        g = 1.0
        for r in self.rows:
            if (r["seq"] == T != self.T0 and r.get("mode") == "eager" and r["impl"] == "fast"
                    and r["status"] == "ok" and self._anchor(r["rule"]) > 0):
                g = max(g, r["wall_s"] / self._anchor(r["rule"]) * self.T0 / T)
        return g

    def __call__(self, cfg: Config) -> float:
        anchor = self._anchor(cfg.rule) * cfg.seq / self.T0
        if cfg.mode == "eager":
            small = (cfg.chunk or self.C_hi) < self.C_hi
            return anchor * self._growth(cfg.seq) * (1.5 if small else 1.0)
        units = cfg.seq / (cfg.chunk or cfg.seq)  # unrolled chunks (attention: one graph)
        prev = [r for r in self.rows if r["rule"] == cfg.rule
                and r.get("mode") == "compile" and r["status"] == "ok"]
        if prev:
            p = prev[-1]
            return p["wall_s"] * max(1.0, units / (p["seq"] / (p["chunk"] or p["seq"])))
        return self.compile_guess + 5.0 * anchor


def _process_warmup() -> None:
    """One-time costs (profiler start-up, first autograd / allocator use) before any row is
    timed, so they do not land on the first row or its time estimates."""
    w = torch.randn(64, 64, requires_grad=True)
    peak_alloc_bytes(lambda: (torch.randn(8, 64) @ w).sum().backward())
    saved_tensor_bytes(lambda: torch.randn(8, 64) @ w)


def _meta(s: Shape, quick: bool, tiny: bool, specs: list[RuleSpec], **extra) -> dict:
    return {"d": s.d, "heads": s.heads, "batch": s.batch,
            "seqs": list(s.seqs[:1] if quick else s.seqs),
            "chunks": list(s.chunks[-1:] if quick else s.chunks), "ref_seq": s.ref_seq,
            "ref_chunk": s.ref_chunk, "quick": quick, "tiny": tiny, "dtype": "float32",
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "rules": [sp.name for sp in specs], **extra}


def run(quick: bool = False, tiny: bool = False, out: Optional[str] = RESULTS,
        compile: bool = True, backend: Optional[str] = None, only: Optional[list[str]] = None,
        memory: bool = True, verbose: bool = True, threads: Optional[int] = None,
        budget_s: Optional[float] = None, compile_rules: Optional[list[str]] = None,
        subnormals_flushed: bool = False) -> dict:
    """Run the benchmark; returns the result dict and writes it as JSON to ``out``.
    ``subnormals_flushed`` is recorded (``main`` sets it before any tensor op).

    ``budget_s``: wall-clock budget (default 540 s, quick 240 s, tiny 16 s; ``inf`` runs the
    whole grid; see the module docstring). ``only``: rules to run (+ the yardstick);
    ``compile_rules``: rules that get compile rows (default all; + the yardstick).
    ``tiny``: toy shapes for tests; defaults ``backend`` to ``"eager"`` (dynamo capture
    only) and ``threads`` to 1 (toy ops are far below OpenMP's break-even).
    """
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    OutOfTime.hit = False
    torch.set_num_threads(threads or (1 if tiny else 2))
    _process_warmup()
    s = TINY if tiny else FULL
    backend = backend or ("eager" if tiny else "inductor")
    budget = budget_s if budget_s is not None else (16.0 if tiny else 240.0 if quick
                                                      else 540.0)
    specs = [sp for sp in rule_specs() if not only or sp.name in only
             or sp.name == "sdpa_block"]
    by_name = {sp.name: sp for sp in specs}
    if tiny:
        timing, ref_timing = dict(min_reps=1, max_reps=2, budget_s=0.0), dict(
            min_reps=1, max_reps=1, budget_s=0.0)
    else:  # median of the repeats that fit in ~0.6 s (at least one, at most 7)
        timing, ref_timing = dict(min_reps=1, max_reps=7, budget_s=0.6), dict(
            min_reps=1, max_reps=3, budget_s=0.3)
    opts = {"backend": backend, "timing": timing, "ref_timing": ref_timing, "memory": memory}
    rows: list[dict] = []
    estimate = Estimator(rows, s.seqs[0], s.chunks[-1], 1.0 if tiny else 20.0)

    def log(row: dict) -> None:
        if verbose:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {row['rule']:13s} "
                  f"{row['impl']:9s} {row['mode']:8s} T={row['seq']:<5d} "
                  f"C={str(row['chunk']):4s} {row['status']:7s} fwd+bwd "
                  f"{fmt_si(row.get('fwdbwd_tok_s'))} tok/s ({row['wall_s']:.1f}s) "
                  f"{row.get('note', '')}", file=sys.stderr, flush=True)

    def one(cfg: Config, required: bool) -> None:
        spec = by_name[cfg.rule]
        left = budget - (time.perf_counter() - t_start)
        est = estimate(cfg)
        peak = estimate_peak([(r["seq"], r["peak_mib"] * MiB) for r in rows if r["rule"] == cfg.rule
                              and r["status"] == "ok" and r.get("peak_mib")], cfg.seq)
        free = available_bytes()
        row = {"rule": cfg.rule, "impl": cfg.impl, "mode": cfg.mode, "seq": cfg.seq,
               "chunk": cfg.chunk, "status": "skipped",
               "note": f"time budget: ~{est:.0f} s estimated, {max(left, 0):.0f} s left"}
        if peak > free / 2:
            row["note"] = f"memory: ~{peak / 2**30:.1f} GiB estimated, {free / 2**30:.1f} GiB available"
        t0 = time.perf_counter()
        if not (left <= 0 or OutOfTime.hit or (not required and est > left) or peak > free / 2):
            try:
                with deadline(left):
                    row = {**measure(spec, cfg, s, opts), "status": "ok"}
            except OutOfTime:
                row["note"] = f"stopped at the time budget after {time.perf_counter() - t0:.0f} s"
            except Exception as e:  # noqa: BLE001 -- one broken rule must not sink the run
                if verbose:
                    traceback.print_exc()
                row.update(status="error", note=first_line(e))
        row.update(what=spec.what, wall_s=time.perf_counter() - t0, estimate_s=est,
                   max_rss_gib_so_far=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        rows.append(row)
        log(row)

    for required, grp in plan(specs, s, quick, compile, compile_rules):
        lead = [c for r in ("sdpa_block", "titans") for c in grp if c.rule == r]
        rest = [c for c in grp if c not in lead]  # cheapest first: the most rows in budget
        rest.sort(key=(lambda c: USUAL_COST.index(c.rule)) if required else estimate)
        for cfg in lead + rest:
            one(cfg, required)

    rows.sort(key=lambda r: (RULES.index(r["rule"]), r["impl"] != "fast",
                             r.get("mode") != "eager", r["seq"], -(r.get("chunk") or 0)))
    modes = ["eager"] + (["compile"] if compile else [])
    meta = _meta(s, quick, tiny, specs, modes=modes, compile_backend=backend,
                 budget_s=budget, timing=timing, ref_timing=ref_timing,
                 compile_rules=compile_rules)
    meta["subnormals_flushed"] = subnormals_flushed
    res = {"meta": meta, "rows": rows,
           "targets": evaluate_targets(rows, specs, s, modes, quick)}
    meta["total_s"] = time.perf_counter() - t_start
    meta["loadavg_1m_start_end"] = [load_start, os.getloadavg()[0]]
    res["table"] = render(res)
    if verbose:
        print(res["table"])
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res


def profile_one(name: str, seq: int, chunk: int, mode: str, impl: str, tiny: bool = False,
                top: int = 25) -> None:
    """Print torch.profiler's top ops (self CPU time) of one fwd+bwd of one row."""
    torch.set_num_threads(1 if tiny else 2)
    s = TINY if tiny else FULL
    spec = next(sp for sp in rule_specs() if sp.name == name)
    block = spec.build(s, chunk, impl == "fast")
    runner = torch.compile(block, dynamic=False) if mode == "compile" else block
    x = torch.randn(s.batch, seq, s.d, requires_grad=True)
    _, fwd_bwd = fwd_bwd_fns(runner, x, torch.randn_like(x), list(block.parameters()))
    fwd_bwd()
    t0 = time.perf_counter()
    fwd_bwd()
    print(f"{name} {impl} {mode} T={seq} C={chunk}: fwd+bwd {time.perf_counter() - t0:.3f} s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fwd_bwd()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seq 512 and chunk 64 only")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (tests)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--no-memory", action="store_true", help="skip memory measurement")
    ap.add_argument("--backend", default=None, help="torch.compile backend (default inductor)")
    ap.add_argument("--budget", type=float, default=None, help="wall-clock budget, seconds")
    ap.add_argument("--only", nargs="*", choices=RULES, help="rules to run (+ sdpa_block)")
    ap.add_argument("--compile-only", nargs="*", choices=RULES,
                    help="rules that get compile rows (default all; + sdpa_block)")
    ap.add_argument("--out", default=RESULTS, help="JSON output path ('' = none)")
    ap.add_argument("--profile", metavar="RULE", choices=RULES,
                    help="profile one row's fwd+bwd instead (with --seq/--chunk/--mode/--impl)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--mode", default="eager", choices=["eager", "compile"])
    ap.add_argument("--impl", default="fast", choices=["fast", "reference"])
    add_subnormals_flag(ap)
    a = ap.parse_args(argv)
    flushed = apply_subnormals(a.keep_subnormals)
    if a.profile:
        profile_one(a.profile, a.seq, a.chunk, a.mode, a.impl, a.tiny)
        return
    res = run(quick=a.quick, tiny=a.tiny, out=a.out or None, compile=not a.no_compile,
              backend=a.backend, only=a.only, memory=not a.no_memory, budget_s=a.budget,
              compile_rules=a.compile_only, subnormals_flushed=flushed)
    sys.exit(1 if any(r.get("status") == "error" for r in res["rows"]) else 0)


if __name__ == "__main__":
    main()
