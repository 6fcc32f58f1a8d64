"""Measure one benchmark row: one level block, one implementation, mode, length and chunk.

A row times ``fwd`` (the training forward: autograd recording, ``x.requires_grad``) and
``fwd+bwd`` (that forward plus ``backward`` of a fixed upstream gradient: input, parameter
and initial-state gradients) with :func:`benchmarks._harness.time_call` (median of the
timed repeats). The first calls measure memory and double as warm-up: ``saved_mib``
(tensors saved for backward, eager), ``peak_mib`` and ``aten_ops_fwdbwd`` (one fwd+bwd
under torch.profiler). ``compile`` rows wrap the block in ``torch.compile(dynamic=False)``
and report the compiling call's time; a block that fails to compile is timed eager and
says so. Reference rows warm up on 4 tokens (one-time functorch / dispatcher costs).

Notation: B batch, T tokens, d width; rates are tokens of the whole batch per second.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from benchmarks._harness import MiB, OutOfTime, profile_call, saved_tensor_bytes, time_call
from benchmarks._rules import RuleSpec
from benchmarks._shapes import Shape


@dataclass(frozen=True)
class Config:
    """One row of the grid."""

    rule: str
    impl: str        # fast | reference
    mode: str        # eager | compile
    seq: int
    chunk: Optional[int]


def fwd_bwd_fns(block: Callable, x: Tensor, gout: Tensor, params: list[Tensor]):
    """(fwd, fwd_bwd) closures over one block call; fwd_bwd clears the gradients first."""
    def fwd():
        return block(x)

    def fwd_bwd():
        for p in params:
            p.grad = None
        x.grad = None
        block(x).backward(gout)
    return fwd, fwd_bwd


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


def measure(spec: RuleSpec, cfg: Config, s: Shape, opts: dict) -> dict[str, Any]:
    """Time one configuration. ``opts``: ``backend`` (torch.compile), ``timing`` /
    ``ref_timing`` (time_call keywords of fast / reference rows), ``memory`` (bool)."""
    torch.manual_seed(0)
    chunk = cfg.chunk if cfg.chunk is not None else s.ref_chunk
    block = spec.build(s, chunk, cfg.impl == "fast")
    params = list(block.parameters())
    row: dict[str, Any] = {"rule": spec.name, "impl": cfg.impl, "mode": cfg.mode,
                           "seq": cfg.seq, "chunk": cfg.chunk, "note": ""}
    x = torch.randn(s.batch, cfg.seq, s.d, requires_grad=True)
    gout = torch.randn(s.batch, cfg.seq, s.d)
    runner: Callable = block
    if cfg.mode == "compile":
        torch._dynamo.reset()
        runner = torch.compile(block, backend=opts["backend"], dynamic=False)
    fwd, fwd_bwd = fwd_bwd_fns(runner, x, gout, params)
    if cfg.mode == "compile":
        t0 = time.perf_counter()
        try:
            fwd_bwd()  # compiles the forward and the backward graphs
        except Exception as e:  # noqa: BLE001 -- report, then time eager instead
            if OutOfTime.hit:  # the budget ran out inside the compiler (which wraps it)
                raise OutOfTime() from e
            row["note"] = f"compile failed ({first_line(e)}); timed eager"
            row["mode"] = "compile->eager"
            torch._dynamo.reset()
            fwd, fwd_bwd = fwd_bwd_fns(block, x, gout, params)
        row["compile_s"] = time.perf_counter() - t0

    finite: list[bool] = []
    fwd_plain = fwd

    def fwd_check():
        y = fwd_plain()
        finite.append(bool(torch.isfinite(y).all()))
        return y

    if cfg.impl == "fast":
        if cfg.mode == "eager" and opts["memory"]:
            row["saved_mib"] = saved_tensor_bytes(fwd_check) / MiB
        else:
            fwd_check()
        if opts["memory"]:
            prof = profile_call(fwd_bwd)
            row["peak_mib"] = None if prof["peak_bytes"] is None else prof["peak_bytes"] / MiB
            row["aten_ops_fwdbwd"] = prof["aten_ops"]
        elif cfg.mode == "eager":
            fwd_bwd()
    else:
        xs = x[:, :4].detach().requires_grad_()
        runner(xs).backward(gout[:, :4])
        fwd = fwd_check
    tk = opts["timing"] if cfg.impl == "fast" else opts["ref_timing"]
    tf = time_call(fwd, warmup=0, **tk)
    tb = time_call(fwd_bwd, warmup=0, **tk)
    n_tok = s.batch * cfg.seq
    row.update(finite=all(finite), fwd_s=tf["median_s"], fwdbwd_s=tb["median_s"],
               reps=[tf["reps"], tb["reps"]], fwd_times_s=tf["times_s"],
               fwdbwd_times_s=tb["times_s"],
               fwdbwd_cpu_util=tb["cpu_s"] / tb["median_s"],  # ~threads when uncontended
               fwd_tok_s=n_tok / tf["median_s"], fwdbwd_tok_s=n_tok / tb["median_s"],
               fwd_us_per_tok=1e6 * tf["median_s"] / n_tok,
               fwdbwd_us_per_tok=1e6 * tb["median_s"] / n_tok)
    if cfg.impl == "fast":
        fl = spec.flops(s, cfg.seq, chunk)
        row.update(flops_per_token_fwd=fl, fwd_flops_s=fl * row["fwd_tok_s"],
                   fwdbwd_flops_s=3 * fl * row["fwdbwd_tok_s"])
    if not row["finite"]:
        row["note"] = (row["note"] + "; " if row["note"] else "") + "non-finite output"
    return row
