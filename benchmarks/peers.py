"""nlc against the public implementations: the same block and the same training step.

Needs the optional extra (``pip install -e '.[peers]'``: titans-pytorch 0.5.5 and
nested-learning 0.2.0, the versions whose APIs this file calls). Run
``python benchmarks/peers.py`` (``--seqs 512,2048``: the block lengths, default 512;
``--quick``: short sequences, a smoke test); it prints one
table and writes ``benchmarks/results/peers.json`` (``--json``). A peer that is not
installed is reported as such and its rows are skipped. fp32, ``--threads`` intra-op
threads (default 2), subnormal floats flushed to zero for every row as nlc's commands run
models (``--keep-subnormals`` keeps them; :mod:`nlc.subnormals`). Rates are tokens of the whole batch per second, the median of the
timed calls after a warm-up call (:func:`benchmarks._harness.time_call`: at least 2, until
10 s); ``x nlc`` = the row's rate / the rate of the
nlc row of its group, measured in the same run.

Groups (d = 256 = 4 heads x 64, batch 4, chunk 64, fwd + bwd of a fixed upstream gradient
unless named):

* ``titans block``: nlc's Titans block (:mod:`benchmarks._rules`, rule ``titans``: a per-head
  MLP memory 64 -> 256 -> 64 GELU, l2 objective, momentum and decay, chunk 64, pre-norm,
  gated output, residual), eager and ``torch.compile``; titans-pytorch ``NeuralMemory(dim 256,
  heads 4, dim_head 64, chunk 64)`` (its default memory: an MLP of depth 2, expansion 4;
  momentum on) in a pre-norm residual block, eager and compiled; the SDPA Transformer block
  as the yardstick.
* ``hope block``: HOPE's self-modifying memory. nlc's block (rule ``hope_selfmod``: five
  per-head residual MLP memories 64 -> 256 -> 64, chunks 16 / 64) differentiates through its
  writes. nested-learning's ``SelfModifyingTitans(dim 256)`` (six full-width residual MLP
  memories 256 -> 256 -> 256: the same matmul FLOPs per token as nlc's four heads) trains as
  its own training loop does: a differentiable read with the slow weights (fwd + bwd), then a
  no-grad update pass (``forward_with_updates``, chunks 16 / 64). ``in-context`` rows time the
  test-time pass alone (no grad): each memory reads and writes the sequence.
* ``titans MAC step`` / ``hope step``: one whole training step (forward, next-token
  cross-entropy, backward, gradient clip 1, AdamW) at batch 4 x seq 512, vocab 256, of the
  bundled spec (``specs/titans_mac.yaml``, ``specs/hope.yaml``: width 128, 2 blocks) and of the
  peer's model configured alike: titans-pytorch ``MemoryAsContextTransformer(dim 128, depth 2,
  heads 4 x 32, segment 64, 16 persistent tokens, a neural memory in every layer)``;
  nested-learning ``HOPEModel(block_variant hope_selfmod, dim 128, 2 layers, CMS periods 16 /
  64 / 128 with hidden 4 x 128, self-modifying chunks 16 / 64, momentum 0.5)`` with its step
  (read fwd + bwd, teach signal, no-grad update pass). ``params`` counts each model's
  parameters: the architectures differ in their details, so the step rows compare what a
  user gets from each library at the same width, depth and data, not identical models.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, ROOT)

import nlc  # noqa: E402
from benchmarks._harness import (  # noqa: E402
    add_subnormals_flag, apply_subnormals, fmt_si, format_table, time_call,
)
from benchmarks._measure import first_line, fwd_bwd_fns  # noqa: E402
from benchmarks._rules import SDPABlock, rule_specs  # noqa: E402
from benchmarks._shapes import FULL, Shape  # noqa: E402
from nlc.files import atomic_write_text  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "peers.json")
PEERS = {"titans-pytorch": "titans_pytorch", "nested-learning": "nested_learning"}
INSTALL = "pip install -e '.[peers]'"
VOCAB, STEP_BATCH = 256, 4


def installed(peer: str) -> bool:
    return importlib.util.find_spec(PEERS[peer]) is not None


# ------------------------------------------------------------------------------ blocks
class PreNormResidual(nn.Module):
    """``x + f(norm(x))`` around a peer's memory that returns ``(y, state)``."""

    def __init__(self, d: int, inner: nn.Module):
        super().__init__()
        self.norm, self.inner = nn.RMSNorm(d), inner

    def forward(self, x: Tensor) -> Tensor:
        return x + self.inner(self.norm(x))[0]


def nlc_block(rule: str, s: Shape, chunk: int) -> nn.Module:
    return next(r for r in rule_specs() if r.name == rule).build(s, chunk, True)


def titans_pytorch_block(s: Shape, chunk: int) -> nn.Module:
    from titans_pytorch import NeuralMemory  # the optional extra: imported only when installed
    return PreNormResidual(s.d, NeuralMemory(dim=s.d, chunk_size=chunk, heads=s.heads, dim_head=s.dh))


def nested_selfmod(s: Shape, chunk: int) -> nn.Module:
    from nested_learning.titan.self_modifying import SelfModifyingTitans, SelfModifyingTitansConfig
    return SelfModifyingTitans(SelfModifyingTitansConfig(
        dim=s.d, chunk_size_other=s.selfmod_other, chunk_size_memory=chunk, momentum=0.5))


def nested_train(model: nn.Module, x: Tensor) -> Callable[[], None]:
    """nested-learning's step for the self-modifying memory: differentiable read with the slow
    weights, then the explicit no-grad update pass on a fresh fast state."""
    gout = torch.randn_like(x)
    params = list(model.parameters())

    def run() -> None:
        for p in params:
            p.grad = None
        model(x).backward(gout)
        with torch.no_grad():
            model.forward_with_updates(x, model.init_fast_state())
    return run


def block_rows(s: Shape, seq: int, chunk: int, compile_rows: bool) -> list[tuple[str, str, str, Callable]]:
    """(group, implementation, mode, thunk builder) for the block groups at length ``seq``."""
    rows: list[tuple[str, str, str, Callable]] = []

    def timed(build: Callable[[], nn.Module], compiled: bool = False) -> Callable[[], Callable]:
        def make() -> Callable:
            torch.manual_seed(0)
            block = build()
            x = torch.randn(s.batch, seq, s.d, requires_grad=True)
            run = torch.compile(block, dynamic=False) if compiled else block
            return fwd_bwd_fns(run, x, torch.randn_like(x), list(block.parameters()))[1]
        return make

    modes = (False, True) if compile_rows else (False,)
    group = f"titans block T={seq}"
    for compiled in modes:
        mode = "compile" if compiled else "eager"
        rows.append((group, "nlc", mode, timed(lambda: nlc_block("titans", s, chunk), compiled)))
        if installed("titans-pytorch"):
            rows.append((group, "titans-pytorch", mode, timed(lambda: titans_pytorch_block(s, chunk), compiled)))
    rows.append((group, "sdpa block (yardstick)", "eager", timed(lambda: SDPABlock(s))))

    group = f"hope block T={seq}"
    rows.append((group, "nlc (fwd+bwd through writes)", "eager", timed(lambda: nlc_block("hope_selfmod", s, chunk))))
    if installed("nested-learning"):
        def nested() -> Callable:
            torch.manual_seed(0)
            model = nested_selfmod(s, chunk)
            return nested_train(model, torch.randn(s.batch, seq, s.d))
        rows.append((group, "nested-learning (read fwd+bwd, no-grad writes)", "eager", nested))

    group = f"hope in-context T={seq}"

    def no_grad(make: Callable[[], Callable[[Tensor], Any]]) -> Callable[[], Callable]:
        def build() -> Callable:
            torch.manual_seed(0)
            call, x = make(), torch.randn(s.batch, seq, s.d)

            def run() -> None:
                with torch.no_grad():
                    call(x)
            return run
        return build
    rows.append((group, "nlc", "eager", no_grad(lambda: nlc_block("hope_selfmod", s, chunk))))
    if installed("nested-learning"):
        def nested_pass() -> Callable[[Tensor], Any]:
            model = nested_selfmod(s, chunk)
            return lambda x: model.forward_with_updates(x, model.init_fast_state())
        rows.append((group, "nested-learning", "eager", no_grad(nested_pass)))
    return rows


# ------------------------------------------------------------------------ whole steps
def nlc_step(spec: str, seq: int) -> tuple[Callable, int]:
    model = nlc.compile(spec, seed=0)
    tokens, targets = _batch(seq)
    teach = targets if model.teach_period is not None else None

    def loss() -> Tensor:
        logits, _ = model(tokens, model.init_state(STEP_BATCH), teach)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return _adamw_step(model, loss), _count(model)


def mac_step(seq: int) -> tuple[Callable, int]:
    from titans_pytorch import MemoryAsContextTransformer
    model = MemoryAsContextTransformer(
        num_tokens=VOCAB, dim=128, depth=2, segment_len=64, num_persist_mem_tokens=16, heads=4,
        dim_head=32, neural_memory_layers=(1, 2), neural_memory_kwargs=dict(heads=4, dim_head=32))
    for p in model.parameters():  # some of its parameters are expanded views, which AdamW cannot update in place
        if 0 in p.stride():
            p.data = p.data.clone()
    tokens, _ = _batch(seq + 1)
    return _adamw_step(model, lambda: model(tokens, return_loss=True)), _count(model)


def nested_hope_step(seq: int) -> tuple[Callable, int]:
    from nested_learning.levels import LevelSpec
    from nested_learning.model import HOPEModel, ModelConfig
    from nested_learning.training import compute_teach_signal
    model = HOPEModel(ModelConfig(
        vocab_size=VOCAB, dim=128, num_layers=2, heads=4, titan_level=LevelSpec("titan", 1),
        cms_levels=[LevelSpec("cms_fast", 16), LevelSpec("cms_mid", 64), LevelSpec("cms_slow", 128)],
        block_variant="hope_selfmod", qk_l2_norm=True, self_mod_chunk_size=16,
        self_mod_chunk_size_memory=64, self_mod_momentum=0.5))
    tokens, _ = _batch(seq)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:  # nested_learning.training's step without online chunking
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        teach = compute_teach_signal(model, logits, tokens)
        loss.backward()
        with torch.no_grad():
            model(tokens, teach_signal=teach)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step, _count(model)


def _batch(seq: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (STEP_BATCH, seq), generator=gen)
    return tokens, torch.roll(tokens, -1, 1)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _adamw_step(model: nn.Module, loss: Callable[[], Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def step_rows(seq: int) -> list[tuple[str, str, str, Callable]]:
    rows = [(f"titans MAC step T={seq}", "nlc titans_mac", "eager", lambda: nlc_step("titans_mac", seq))]
    if installed("titans-pytorch"):
        rows.append((f"titans MAC step T={seq}", "titans-pytorch MAC", "eager", lambda: mac_step(seq)))
    rows.append((f"hope step T={seq}", "nlc hope", "eager", lambda: nlc_step("hope", seq)))
    if installed("nested-learning"):
        rows.append((f"hope step T={seq}", "nested-learning HOPE", "eager", lambda: nested_hope_step(seq)))
    return rows


# ------------------------------------------------------------------------------- run
def measure(group: str, impl: str, mode: str, make: Callable, tokens: int, timing: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"group": group, "impl": impl, "mode": mode}
    try:
        built = make()
        run, params = built if isinstance(built, tuple) else (built, None)
        timed = time_call(run, **timing)
        seconds = timed["median_s"]
        row.update(tok_s=tokens / seconds, seconds=seconds, cpu_wall=timed["cpu_s"] / seconds, params=params)
    except Exception as err:  # noqa: BLE001 - a failing row is a result, reported with its error
        row["error"] = first_line(err)
    return row


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``x_nlc``: each row's rate / the first nlc row of its group with the same mode (else eager)."""
    for row in rows:
        base = [r for r in rows if r["group"] == row["group"] and r["impl"].startswith("nlc")
                and "tok_s" in r]
        same = [r for r in base if r["mode"] == row["mode"]] or base
        if same and "tok_s" in row:
            row["x_nlc"] = row["tok_s"] / same[0]["tok_s"]
    return rows


def run(quick: bool = False, out: Optional[str] = RESULTS, threads: int = 2,
        compile_rows: bool = True, seqs: tuple[int, ...] = (512,), subnormals_flushed: bool = False) -> dict[str, Any]:
    torch.set_num_threads(threads)
    s = Shape(d=64, heads=2, batch=2, deep_hidden=64, selfmod_other=8) if quick else FULL
    seqs, step_seq = ((32,), 32) if quick else (seqs, 512)
    # the peers' HOPE runs take tens of seconds a call: two timed calls after a warm-up
    timing = dict(warmup=0, min_reps=1, budget_s=0.0) if quick else dict(warmup=1, min_reps=2, budget_s=10.0)
    plan = [r for seq in seqs for r in block_rows(s, seq, 16 if quick else 64, compile_rows and not quick)]
    plan_tokens = [s.batch * int(g.rsplit("=", 1)[1]) for g, *_ in plan]
    steps = step_rows(step_seq)
    plan += steps
    plan_tokens += [STEP_BATCH * step_seq] * len(steps)
    load0 = os.getloadavg()[0]
    rows = []
    for (group, impl, mode, make), tokens in zip(plan, plan_tokens):
        rows.append(measure(group, impl, mode, make, tokens, timing))
        print(f"  {group:28s} {impl:48s} {mode:8s} {fmt_si(rows[-1].get('tok_s'))}", flush=True)
    result = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "torch": torch.__version__, "threads": threads, "cpus": os.cpu_count(),
                 "machine": platform.machine(), "quick": quick, "load_start": load0,
                 "load_end": os.getloadavg()[0], "subnormals_flushed": subnormals_flushed,
                 "peers": {p: installed(p) for p in PEERS}, "shape": vars(s) if quick else "FULL"},
        "rows": with_ratios(rows),
    }
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1, default=str))
    return result


def table(result: dict[str, Any]) -> str:
    rows = [{**r, "tok_s": fmt_si(r.get("tok_s")), "x_nlc": f"{r['x_nlc']:.3g}" if "x_nlc" in r else "-",
             "params": fmt_si(r.get("params")), "note": r.get("error", "")} for r in result["rows"]]
    missing = [p for p, ok in result["meta"]["peers"].items() if not ok]
    head = (f"nlc vs public implementations: torch {result['meta']['torch']}, {result['meta']['threads']} "
            f"threads, load {result['meta']['load_start']:.1f} -> {result['meta']['load_end']:.1f}")
    if missing:
        head += f"\nnot installed (rows skipped): {', '.join(missing)}; {INSTALL}"
    return head + "\n" + format_table(rows, [("group", "group"), ("impl", "implementation"), ("mode", "mode"),
                                             ("tok_s", "tok/s"), ("x_nlc", "x nlc"), ("params", "params"),
                                             ("note", "note")])


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short sequences (a smoke test)")
    ap.add_argument("--json", default=RESULTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--seqs", default="512", help="block lengths, comma-separated (default 512)")
    add_subnormals_flag(ap)
    args = ap.parse_args(argv)
    flushed = apply_subnormals(args.keep_subnormals)
    seqs = tuple(int(t) for t in args.seqs.split(","))
    print(table(run(args.quick, args.json, args.threads, not args.no_compile, seqs, flushed)))


if __name__ == "__main__":
    main()
