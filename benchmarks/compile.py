"""Benchmark of ``nlc.compile``: spec -> module time, torch.compile time, and the generated
Titans LMM model against a hand-written PyTorch module of the same block.

Run ``python benchmarks/compile.py`` (every bundled spec; Titans at batch 4 x seq 512) or add
``--quick`` (titans_lmm and transformer; seq 128, fewer rounds). Prints a table and writes
``benchmarks/results/compile.json``. fp32, ``--threads`` intra-op threads (default 2).

1. **spec -> module** (every spec): ``nlc.compile(path)`` without torch.compile (load, IR,
   codegen, exec, init, schedule, graph), median wall and CPU time (``build cpu``: the wall
   time on an idle machine) of ``build_reps`` calls after a warm-up call. Target < 0.5 s.
2. **torch.compile time** (same specs): ``torch.compile(model.run)`` (``--backend``, default
   inductor; parameters require grad, so AOTAutograd traces the joint graph) on a (2, 64)
   batch: first compiled call - a warm eager call, dynamo reset and inductor's FX-graph /
   AOTAutograd caches off (its C++ kernel cache stays on). ``graphs/breaks``: dynamo's counts.
3. **generated vs hand-written**: ``specs/titans_lmm.yaml`` (without its surprise clip, which
   the twin lacks) compiled by nlc against :class:`HandTitansLMM`, the same model written here in plain PyTorch (its sizes read from
   the generated model; :func:`hand_config` refuses any other block). Both hold the same
   weights, and their logits and gradients are compared. Timing: fwd + cross-entropy + bwd,
   eager and ``torch.compile`` (the generated model through ``nlc.compile(compile=
   "default")``), the two models' steps interleaved ABBA after a first step each, so load
   drift hits both alike; ``ratio`` = generated / hand-written tok/s = the median over rounds
   of t_hand / t_gen. Target >= 0.95.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional

import torch
import torch._functorch.config as functorch_config
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from torch import Tensor, nn
from torch._dynamo.utils import counters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, ROOT)

import nlc  # noqa: E402
from benchmarks._harness import fmt_si, format_table, time_call  # noqa: E402
from nlc.primitives.deep import deep_memory_chunked  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "compile.json")
SPECS_DIR = os.path.join(ROOT, "specs")
TITANS = "titans_lmm"
# The hand-written twin has no per-token surprise clip; both models run the spec without it.
TITANS_OVERRIDES = ("~levels.lmm.update.grad_clip",)
BUILD_TARGET_S = 0.5
RATIO_TARGET = 0.95


@dataclass(frozen=True)
class Settings:
    specs: Optional[tuple] = None       # spec names; None: every specs/*.yaml
    build_reps: int = 5
    compile_batch: tuple = (2, 64)      # part 2
    backend: str = "inductor"
    batch: int = 4                      # part 3
    seq: int = 512
    rounds: int = 6
    compile_titans: bool = True         # the torch.compile row of part 3
    match_seq: int = 150                # exactness check: two whole chunks and a partial one
    threads: int = 2


FULL = Settings()
QUICK = replace(FULL, specs=(TITANS, "transformer"), build_reps=3, seq=128, rounds=4)


def spec_path(name: str) -> str:
    return os.path.join(SPECS_DIR, f"{name}.yaml")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ======================================================================= hand-written model
def _rms(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _l2(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class HandTitansMemory(nn.Module):
    """``x + y``, ``y`` the Titans LMM layer of ``u = RMSNorm(x)``: fused q/k/v projection,
    causal depthwise conv (width 4), SiLU, l2-normalised q/k; gates lr = max sigmoid(.),
    momentum = sigmoid(.), retention = 1 - sigmoid(.); ``deep_memory_chunked`` (2-layer GELU
    MLP memory, momentum + forget gate, learned initial weights); output projection times a
    sigmoid output gate. x (B, T, D); q, k, v (B, H, T, Dh); gates (B, H, T)."""

    def __init__(self, width: int, heads: int, hidden: int, chunk: int, lr_max: float,
                 conv: int = 4) -> None:
        super().__init__()
        D, H, dh = width, heads, width // heads
        self.heads, self.chunk, self.conv, self.lr_max = H, chunk, conv, lr_max
        self.norm = nn.Parameter(torch.ones(D))
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(3 * D, 1, conv))
        # three Linear(D, H), not one Linear(D, 3H): the fused GEMM rounds differently
        self.lr_gate, self.momentum_gate, self.forget_gate = (nn.Linear(D, H) for _ in range(3))
        self.W1 = nn.Parameter(torch.empty(H, hidden, dh))
        self.W2 = nn.Parameter(torch.empty(H, dh, hidden))
        self.out = nn.Linear(D, D, bias=False)
        self.out_gate = nn.Linear(D, D, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        H = self.heads
        u = _rms(x, self.norm)
        h = F.conv1d(F.pad(self.qkv(u).transpose(1, 2), (self.conv - 1, 0)), self.conv_weight,
                     groups=3 * D)                                             # (B, 3D, T)
        q, k, v = F.silu(h).view(B, 3, H, D // H, T).transpose(-1, -2).unbind(1)
        lr = self.lr_max * torch.sigmoid(self.lr_gate(u).transpose(1, 2))
        momentum = torch.sigmoid(self.momentum_gate(u).transpose(1, 2))
        retention = 1.0 - torch.sigmoid(self.forget_gate(u).transpose(1, 2))
        memory = {"W1": self.W1.expand(B, -1, -1, -1), "S1": self.W1.new_zeros(B, *self.W1.shape),
                  "W2": self.W2.expand(B, -1, -1, -1), "S2": self.W2.new_zeros(B, *self.W2.shape)}
        o, _ = deep_memory_chunked(memory, _l2(q), _l2(k), v, lr, momentum, retention,
                                   chunk=self.chunk, activation="gelu", objective="l2")
        y = self.out(o.transpose(1, 2).reshape(B, T, D)) * torch.sigmoid(self.out_gate(u))
        return x + y


class HandSwiGLU(nn.Module):
    """``x + W_down (silu(W_gate u) * W_up u)``, ``u = RMSNorm(x)``, gate/up fused."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.norm = nn.Parameter(torch.ones(width))
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.gate_up(_rms(x, self.norm)).split(self.hidden, dim=-1)
        return x + self.down(F.silu(a) * b)


class HandTitansLMM(nn.Module):
    """The language model of ``specs/titans_lmm.yaml``, written by hand (tokens -> logits).
    Its parameters are left uninitialised: :func:`build_pair` copies the generated ones in."""

    def __init__(self, vocab: int, width: int, heads: int, mem_hidden: int, chunk: int,
                 lr_max: float, mlp_hidden: int, repeats: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList([block for _ in range(repeats) for block in (
            HandTitansMemory(width, heads, mem_hidden, chunk, lr_max), HandSwiGLU(width, mlp_hidden))])
        self.norm = nn.Parameter(torch.ones(width))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return _rms(x, self.norm) @ self.embed.weight.T


def hand_config(gen: nn.Module) -> dict[str, Any]:
    """:class:`HandTitansLMM` arguments for a generated model; ``ValueError`` if its block is
    not the one written by hand."""
    mixers = [getattr(gen, name).mixer for name in gen.LAYERS]
    kinds = [type(m).__name__ for m in mixers]
    if kinds != ["MemoryMixer", "MLPMixer"] * (len(kinds) // 2) or gen.head is not None:
        raise ValueError(f"not the hand-written block: layers {kinds}, untied head {gen.head is not None}")
    mem, mlp, rule = mixers[0].ir, mixers[1], mixers[0].ir.rule
    sources = [(s.source, s.conv, s.silu, s.l2_norm) for s in (mem.queries, mem.keys, mem.values)]
    knobs = [(k.kind, k.source, k.per_chunk, k.complement) for k in (rule.lr, rule.momentum, rule.retention)]
    expected = ([("input", 4, True, True)] * 2 + [("input", 4, True, False)],
                [("data", "input", False, False)] * 2 + [("data", "input", False, True)])
    if ((mem.memory, mem.depth, mem.activation, mem.residual, mem.read_after_write, mem.init,
         mem.output_gate, mem.objective.kind, mem.objective.window, rule.kind, rule.retention_kind,
         rule.weight_decay, rule.grad_clip, rule.grad_normalize, rule.momentum.max, rule.retention.max)
            != ("mlp", 2, "gelu", False, False, "learned", True, "l2", 1, "momentum", "l2",
                0.0, None, False, 1.0, 1.0)
            or (sources, knobs) != expected or mlp.activation != "swiglu"):
        raise ValueError(f"memory level {mem.name!r} is not the hand-written Titans layer")
    return dict(vocab=gen.vocab, width=gen.width, heads=mem.heads, mem_hidden=mem.hidden,
                chunk=mem.chunk, lr_max=rule.lr.max, mlp_hidden=mlp.mlp.down.in_features,
                repeats=len(mixers) // 2)


def weight_map(gen: nn.Module, hand: HandTitansLMM) -> list[tuple[Tensor, list[Tensor], Callable]]:
    """[(hand parameter, generated parameters, combine)]: ``combine(generated tensors)`` has
    the hand parameter's layout (for the weights and for their gradients alike)."""
    def one(ts): return ts[0]
    def conv(ts): return ts[0].unsqueeze(1)
    pairs = [(hand.embed.weight, [gen.embed.weight], one), (hand.norm, [gen.final_norm.weight], one)]
    for name, block in zip(gen.LAYERS, hand.blocks):
        layer = getattr(gen, name)
        m = layer.mixer
        pairs.append((block.norm, [layer.norm.weight], one))
        if isinstance(block, HandSwiGLU):
            pairs += [(block.gate_up.weight, [m.mlp.gate_up.weight], one),
                      (block.down.weight, [m.mlp.down.weight], one)]
            continue
        pairs += [(block.qkv.weight, [m.sources.weight], one),
                  (block.conv_weight, [m.sources.conv_w4], conv),
                  (block.W1, [m.state0["W1"]], one), (block.W2, [m.state0["W2"]], one),
                  (block.out.weight, [m.out.weight], one), (block.out_gate.weight, [m.gate.weight], one)]
        for gate, knob in ((block.lr_gate, m.lr), (block.momentum_gate, m.momentum),
                           (block.forget_gate, m.retention)):
            pairs += [(gate.weight, [knob.weight], one), (gate.bias, [knob.bias], one)]
    return pairs


def build_pair(seed: int = 0, perturb: float = 0.0, compile: Optional[str] = None
               ) -> tuple[nn.Module, HandTitansLMM]:
    """The generated Titans model (``nlc.compile(..., compile=compile)``) and its hand-written
    twin holding the same weights (each parameter of both mapped exactly once)."""
    gen = nlc.compile(spec_path(TITANS), overrides=TITANS_OVERRIDES, seed=seed, compile=compile)
    hand = HandTitansLMM(**hand_config(gen))
    pairs = weight_map(gen, hand)
    assert sorted(id(h) for h, _, _ in pairs) == sorted(id(p) for p in hand.parameters())
    assert sorted(id(g) for _, gs, _ in pairs for g in gs) == sorted(id(p) for p in gen.parameters())
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for p in gen.parameters() if perturb else ():
            p.add_(perturb * torch.randn(p.shape, generator=g))
        for h, gs, combine in pairs:
            h.copy_(combine(gs))
    return gen, hand


def _loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _batch(vocab: int, batch: int, seq: int, seed: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, vocab, (batch, seq), generator=g) for _ in range(2))


def check_match(seq: int, batch: int = 2) -> dict[str, Any]:
    """Max abs differences of the twins' logits and gradients (perturbed weights copied)."""
    gen, hand = build_pair(perturb=0.05)
    tokens, targets = _batch(gen.vocab, batch, seq, seed=2)
    lg, lh = gen(tokens)[0], hand(tokens)
    (_loss(lg, targets) + _loss(lh, targets)).backward()  # two separate graphs
    grad = max((h.grad - combine([p.grad for p in gs])).abs().max().item()
               for h, gs, combine in weight_map(gen, hand))
    return {"seq": seq, "batch": batch, "logits_max_abs_diff": (lg - lh).abs().max().item(),
            "logits_max_abs": lg.abs().max().item(), "grad_max_abs_diff": grad,
            "params_gen": n_params(gen), "params_hand": n_params(hand)}


# ================================================================================ timing
def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Wall times of ``rounds`` calls of each fn, interleaved ABBA: even rounds call the fns
    in order, odd rounds in reverse."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(_seconds(fns[name]))
    return times


def paired_ratio(gen_s: list[float], hand_s: list[float]) -> float:
    """Generated / hand-written throughput: the median of the per-round t_hand / t_gen."""
    return statistics.median(h / g for g, h in zip(gen_s, hand_s))


def train_step(model: nn.Module, tokens: Tensor, targets: Tensor) -> Callable[[], None]:
    """One fwd + cross-entropy + bwd (an NLCModel returns ``(logits, state)``)."""
    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(tokens)
        _loss(out[0] if isinstance(out, tuple) else out, targets).backward()
    return step


def titans_row(s: Settings, mode: str) -> dict[str, Any]:
    """Part 3 in ``mode`` ``eager`` or ``compile`` (first steps timed: the compile cost)."""
    torch._dynamo.reset()
    gen, hand = build_pair(compile="default" if mode == "compile" else None)
    if mode == "compile":
        hand = torch.compile(hand)
    tokens, targets = _batch(gen.vocab, s.batch, s.seq)
    steps = {"gen": train_step(gen, tokens, targets), "hand": train_step(hand, tokens, targets)}
    first = {name: _seconds(step) for name, step in steps.items()}
    times = interleaved(steps, s.rounds)
    n = s.batch * s.seq
    gen_s, hand_s = statistics.median(times["gen"]), statistics.median(times["hand"])
    return {"mode": mode, "gen_s": gen_s, "hand_s": hand_s, "gen_tok_s": n / gen_s, "hand_tok_s": n / hand_s,
            "ratio": paired_ratio(times["gen"], times["hand"]), "first_step_s": first,
            "gen_times_s": times["gen"], "hand_times_s": times["hand"]}


# ============================================================================= per spec
def spec_row(name: str, s: Settings) -> dict[str, Any]:
    """Parts 1 and 2 for one spec (a failing torch.compile is reported, not raised)."""
    path = spec_path(name)
    timed = time_call(lambda: nlc.compile(path), min_reps=s.build_reps, max_reps=s.build_reps, budget_s=0)
    model = nlc.compile(path)
    row = {"spec": name, "params": n_params(model), "build_s": timed["median_s"],
           "build_min_s": timed["min_s"], "build_cpu_s": timed["cpu_s"]}
    tokens, _ = _batch(model.vocab, *s.compile_batch)

    def call(run: Callable) -> float:
        return _seconds(lambda: run(tokens, model.init_state(s.compile_batch[0])))

    row["eager_fwd_s"] = statistics.median([call(model.run) for _ in range(4)][1:])  # after a warm-up
    torch._dynamo.reset()
    counters.clear()
    try:  # the whole pipeline runs: no FX-graph or AOTAutograd cache
        with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
            row["compile_s"] = call(torch.compile(model.run, backend=s.backend)) - row["eager_fwd_s"]
    except Exception as err:  # noqa: BLE001 - one failing compile must not sink the run
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    row["graphs"] = int(counters["stats"]["unique_graphs"])
    row["graph_breaks"] = int(sum(counters["graph_break"].values()))
    return row


# ================================================================================ report
def render(res: dict) -> str:
    m, st, match = res["meta"], res["meta"]["settings"], res["titans"]["match"]
    verdict = {True: "PASS", False: "FAIL"}
    specs = [{"spec": r["spec"], "params": f"{r['params']:,}", "build ms": f"{1e3 * r['build_s']:.0f}",
              f"< {BUILD_TARGET_S} s": verdict[r["build_s"] < BUILD_TARGET_S],
              "build cpu ms": f"{1e3 * r['build_cpu_s']:.0f}",
              "eager fwd ms": f"{1e3 * r['eager_fwd_s']:.0f}",
              "compile s": f"{r['compile_s']:.1f}" if "compile_s" in r else r["error"],
              "graphs/breaks": f"{r['graphs']}/{r['graph_breaks']}"} for r in res["specs"]]
    titans = [{"mode": r["mode"], "gen tok/s": fmt_si(r["gen_tok_s"]), "hand tok/s": fmt_si(r["hand_tok_s"]),
               "ratio": f"{r['ratio']:.3f}", f">= {RATIO_TARGET}": verdict[r["ratio"] >= RATIO_TARGET],
               "first step s gen/hand": f"{r['first_step_s']['gen']:.1f}/{r['first_step_s']['hand']:.1f}"}
              for r in res["titans"]["rows"]]
    return "\n".join([
        f"nlc.compile benchmark ({'quick' if m['quick'] else 'full'}): torch {m['torch']}, {st['threads']} "
        f"threads, fp32, {m['cpu_count']} cores, load avg {m['loadavg'][0]:.1f} -> {m['loadavg'][1]:.1f}",
        f"\n1-2. spec -> module (median of {st['build_reps']}), torch.compile(model.run) on "
        f"{tuple(st['compile_batch'])} tokens (backend {st['backend']})",
        format_table(specs, [(key, key) for key in specs[0]]),
        f"\n3. {TITANS}: generated vs hand-written, fwd+bwd of {st['batch']} x {st['seq']} tokens, "
        f"{st['rounds']} interleaved rounds",
        f"   parameters {match['params_gen']:,} / {match['params_hand']:,}; same weights: max abs diff of "
        f"logits {match['logits_max_abs_diff']:.2g}, of gradients {match['grad_max_abs_diff']:.2g}",
        format_table(titans, [(key, key) for key in titans[0]]), f"\ntotal {m['total_s']:.0f} s"])


def run(s: Settings, quick: bool = False, out: Optional[str] = RESULTS, log: Callable = print) -> dict:
    """Run the benchmark; returns the results (also written as JSON to ``out``)."""
    t0, load0, threads = time.perf_counter(), os.getloadavg()[0], torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        match, rows, specs = check_match(s.match_seq), [], []
        for mode in ["eager"] + ["compile"] * s.compile_titans:
            rows.append(titans_row(s, mode))
            log(f"[{time.perf_counter() - t0:5.0f}s] {TITANS} {mode}: ratio {rows[-1]['ratio']:.3f}")
        for name in s.specs or sorted(os.path.basename(p)[:-5] for p in glob.glob(spec_path("*"))):
            specs.append(spec_row(name, s))
            log(f"[{time.perf_counter() - t0:5.0f}s] {name}: {specs[-1]}")
    finally:
        torch.set_num_threads(threads)
    res = {"meta": {"quick": quick, "settings": asdict(s), "torch": torch.__version__,
                    "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "loadavg": [load0, os.getloadavg()[0]], "total_s": time.perf_counter() - t0},
           "specs": specs, "titans": {"match": match, "rows": rows}}
    res["table"] = render(res)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 specs, seq 128, fewer rounds")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of part 2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=RESULTS, help="JSON output path ('' = none)")
    a = ap.parse_args(argv)
    s = replace(QUICK if a.quick else FULL, backend=a.backend, threads=a.threads)
    res = run(s, quick=a.quick, out=a.out or None, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(res["table"])


if __name__ == "__main__":
    main()
