"""Targets and the printed table of the primitives benchmark.

:func:`evaluate_targets` checks the issue's targets on the measured rows (each PASS, FAIL
or n/a); :func:`render` formats the rows and the targets as plain-text tables. Rows are the
dicts ``benchmarks/primitives.py`` measures (keys ``rule``, ``impl``, ``mode``, ``seq``,
``chunk``, ``status``, ``fwdbwd_tok_s``, ``fwdbwd_us_per_tok``, ``fwdbwd_flops_s``, ...).
"""
from __future__ import annotations

from typing import Optional

from benchmarks._harness import fmt_si, format_table
from benchmarks._rules import RuleSpec
from benchmarks._shapes import Shape


def find_row(rows: list[dict], **kw) -> Optional[dict]:
    """The first row whose items include ``kw``."""
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _ratio(a: Optional[dict], b: Optional[dict], key: str) -> Optional[float]:
    return a[key] / b[key] if (a and b) else None


def evaluate_targets(rows: list[dict], specs: list[RuleSpec], s: Shape, modes: list[str],
                     quick: bool = False) -> list[dict]:
    """The issue's targets, each PASS / FAIL (or n/a when the run lacks the data).

    Evaluated at the largest chunk of the grid (64: the Titans anchor shape), fwd+bwd; a
    rule is compared with the yardstick in the same mode (eager with eager, compile with
    compile). Eager targets are always listed; compile targets only where both rows were
    measured. Quick runs have one sequence length: the long-sequence targets use it and the
    flatness target is n/a. A tokens/s target's note gives its *FLOP ceiling*: the ratio the
    block would reach at the yardstick's FLOP/s (the yardstick's analytic FLOP/token over the
    block's), so a threshold above it asks for more FLOP/s than the yardstick's large GEMMs.
    """
    out: list[dict] = []
    T_lo, T_hi = s.seqs[0], (s.seqs[0] if quick else s.seqs[-1])
    C = s.chunks[-1]
    ok = [r for r in rows if r.get("status") == "ok"]

    def add(name, mode, value, op, thr, note=""):
        if value is None and mode != "eager":
            return
        res = None if value is None else (value >= thr if op == ">=" else value <= thr)
        out.append({"target": name, "mode": mode, "value": value, "op": op, "threshold": thr,
                    "pass": res, "note": note})

    def get(name, mode, T, chunked=True):
        return find_row(ok, rule=name, impl="fast", mode=mode, seq=T,
                        chunk=C if chunked else None)

    def speed(name, mode, T, thr, chunked=True):
        row, sd = get(name, mode, T, chunked), get("sdpa_block", mode, T, False)
        ceiling = None if not (row and sd) else sd["flops_per_token_fwd"] / row["flops_per_token_fwd"]
        add(f"{name} / sdpa_block tok/s, T={T}" + (f" C={C}" if chunked else ""), mode,
            _ratio(row, sd, "fwdbwd_tok_s"), ">=", thr, "" if ceiling is None else f"FLOP ceiling {ceiling:.3g}")

    fast = [sp for sp in specs if sp.fast_rule]
    for mode in modes:
        for T, thr in ((T_lo, 1.0), (T_hi, 1.4))[:1 if quick else 2]:
            speed("titans", mode, T, thr)
        speed("hope_selfmod", mode, T_hi, 0.4)
        speed("cms_chain", mode, T_hi, 0.35, chunked=False)
        sd = get("sdpa_block", mode, T_hi, False)
        for sp in fast:
            x = _ratio(get(sp.name, mode, T_hi, sp.chunked), sd, "fwdbwd_flops_s")
            add(f"{sp.name}: FLOP/s / sdpa_block FLOP/s, T={T_hi}", mode, x, ">=", 0.7)
        for sp in fast:
            ref = find_row(ok, rule=sp.name, impl="reference")
            x = _ratio(ref, get(sp.name, mode, T_hi, sp.chunked), "fwdbwd_us_per_tok")
            note = "lower bound (reference cost per token grows with T)" \
                if sp.name.startswith("softmax") else ""
            add(f"{sp.name}: fast / reference speed-up, T={T_hi} (ref T={s.ref_seq})",
                mode, x, ">=", 20.0, note)
        for sp in fast if not quick else []:
            if sp.memory:
                x = _ratio(get(sp.name, mode, T_hi), get(sp.name, mode, T_lo),
                           "fwdbwd_us_per_tok")
                add(f"{sp.name}: time/token T={T_hi} / T={T_lo} (flat)", mode, x, "<=", 1.2)
    return out


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def render(res: dict) -> str:
    """The run as text: a header, one line per measured row (skipped rows summed up), the
    targets and a PASS / FAIL count."""
    m = res["meta"]
    rows = res["rows"]
    load = m.get("loadavg_1m_start_end", [float("nan")] * 2)
    lines = [
        f"nlc primitives benchmark: d={m['d']} ({m['heads']} heads x {m['d'] // m['heads']}), "
        f"batch {m['batch']}, fp32, {m['threads']} threads, torch {m['torch']}, "
        f"{m['cpu_count']} CPUs; load average (1 min) at start / end {load[0]:.1f} / "
        f"{load[1]:.1f}; cpu/wall = process CPU time / wall "
        "time of fwd+bwd (~2 = both threads had a core; lower = other processes took them)",
        "Rows time whole level blocks x(B,T,d) -> (B,T,d): RMSNorm, q/k/v/gate and output "
        "projections, residual (benchmarks/primitives.py docstring).",
        f"reference rows (T marked *): eager per-token loop measured at T={m['ref_seq']}; its "
        "time per token is flat in T and is extrapolated to longer T.",
        "fwd = training forward. FLOP/tok = analytic forward matmul FLOPs of the fast "
        "algorithm; fwd+bwd FLOP/s counts 3x. peak = max bytes allocated during one fwd+bwd "
        "(profiler); saved = tensors saved for backward (eager); aten ops = outermost aten ops "
        "per fwd+bwd (profiler; each costs dispatch overhead, and on a busy machine an OpenMP "
        "rendezvous).",
        "",
    ]
    cols = [("rule", "rule"), ("impl", "impl"), ("mode", "mode"), ("seq", "T"),
            ("chunk", "C"), ("fwd", "fwd tok/s"), ("fb", "fwd+bwd tok/s"),
            ("usf", "us/tok"), ("cpu", "cpu/wall"),
            ("fl", "FLOP/tok"), ("afl", "FLOP/s"), ("vs", "x sdpa"), ("ops", "aten ops"),
            ("peak", "peak MiB"),
            ("saved", "saved MiB"), ("comp", "compile s"), ("note", "note")]

    table = []
    for r in rows:
        if r.get("status") == "skipped":
            continue
        if r.get("status") != "ok":
            table.append({"rule": r["rule"], "impl": r.get("impl", "-"),
                          "mode": r.get("mode", "-"), "seq": r.get("seq", "-"),
                          "chunk": r.get("chunk") or "-",
                          "note": f"{r.get('status', '').upper()}: {r.get('note', '')}"})
            continue
        sd = find_row(rows, rule="sdpa_block", impl="fast", mode=r["mode"], seq=r["seq"],
                      status="ok")
        vs = _ratio(r, sd, "fwdbwd_tok_s") if r["impl"] == "fast" else None
        table.append({
            "rule": r["rule"], "impl": r["impl"], "mode": r["mode"],
            "seq": r["seq"] if r["impl"] == "fast" else f"{r['seq']}*",
            "chunk": r["chunk"] if r["chunk"] is not None else "-",
            "fwd": fmt_si(r["fwd_tok_s"]), "fb": fmt_si(r["fwdbwd_tok_s"]),
            "usf": _f(r["fwdbwd_us_per_tok"]), "cpu": _f(r.get("fwdbwd_cpu_util"), 2),
            "fl": fmt_si(r.get("flops_per_token_fwd")), "afl": fmt_si(r.get("fwdbwd_flops_s")),
            "vs": _f(vs), "ops": _f(r.get("aten_ops_fwdbwd")), "peak": _f(r.get("peak_mib")),
            "saved": _f(r.get("saved_mib")), "comp": _f(r.get("compile_s"), 3),
            "note": r.get("note", ""),
        })
    lines.append(format_table(table, cols))
    skipped = [r for r in rows if r.get("status") == "skipped"]
    if skipped:
        lines.append(f"{len(skipped)} rows skipped: " + "; ".join(
            f"{r['rule']} T={r['seq']} C={r['chunk']} ({r['note']})" for r in skipped[:8])
            + (f"; {len(skipped) - 8} more in the JSON" if len(skipped) > 8 else ""))
    lines += ["", "Targets (fwd+bwd, chunk 64; compile rows against the compiled yardstick):"]
    tcols = [("target", "target"), ("mode", "mode"), ("value", "value"), ("thr", "target"),
             ("res", "result"), ("note", "note")]
    tt = []
    for t in res["targets"]:
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        tt.append({"target": t["target"], "mode": t["mode"], "value": _f(t["value"]),
                   "thr": f"{t['op']} {t['threshold']}", "res": verdict, "note": t["note"]})
    lines.append(format_table(tt, tcols))
    n_pass = sum(1 for t in res["targets"] if t["pass"])
    n_fail = sum(1 for t in res["targets"] if t["pass"] is False)
    lines.append(f"\n{n_pass} PASS, {n_fail} FAIL, "
                 f"{len(res['targets']) - n_pass - n_fail} n/a; total {m['total_s']:.0f} s")
    return "\n".join(lines)
