"""Benchmark of the level primitives as level blocks, against a plain SDPA Transformer block.

Run::

    python benchmarks/primitives.py            # full grid, < 10 min on 2 CPU cores
    python benchmarks/primitives.py --quick    # seq 512, chunk 64 only (smoke run)
    python benchmarks/primitives.py --profile titans --seq 2048 --chunk 64   # top ops

Prints a table and writes ``benchmarks/results/primitives.json``.

What each row times (fp32, ``torch.set_num_threads(2)``, width d = 256 = 4 heads x 64,
batch 4). Every row is a *level block as used in a model*, ``x (B, T, d) -> (B, T, d)``:

* memory rules (linear attention ... MIRAS lq)::

      h = RMSNorm(x);  q, k, v, g = Linear(d, 4d)(h)  (four d -> d projections, fused)
      gates = sigmoid(Linear(d, G * H)(h))            (G per-head scalar gates per token)
      q, k = l2_normalize(q), l2_normalize(k)          (per head)
      o = rule(state0, q, k, v, gates, chunk=C)        (chunked = fast, or reference form)
      y = x + Linear(d, d)(o * silu(g))                (output gate, output projection)

  The initial memory state is zeros (matrix memories) or meta-learned parameters (deep
  memories; their gradients are computed). Gates: lr / gamma in (0, 1) (x 0.1 for deep
  memories), retention in (0.9, 1), momentum in (0, 0.9).
* HOPE self-modifying memory (``selfmod_chunked``): as above with the projections
  ``x_in, q, g = Linear(d, 3d)(h)`` (the k / v / eta / alpha memories generate the keys,
  values and gates from ``x_in``; no gate projection), x_in and q l2-normalised per head,
  five residual MLP memories 64 -> 256 -> 64 per head (default ``init_selfmod_params``,
  eta_max 1), ``chunk_memory = C``, ``chunk_other = gcd(C, 16)``. (With unit-variance
  x_in instead of unit-norm, both forms diverge to NaN within ~50 tokens at this init.)
* CMS chain: ``y = x + cms_chunked(level states, RMSNorm(x))``, 3 sequential GELU MLP
  levels d -> 1024 -> d (biases), periods 16 / 64 / 256, local signal (each level regresses
  its own input), lr 1e-3, ``policy="carry"``. The grid's chunk does not apply.
* softmax attention (full causal / sliding window 128): RMSNorm, fused QKV Linear(d, 3d),
  ``nlc.primitives.attention.softmax_attention`` (one SDPA call; the window is an explicit
  boolean mask), output projection, residual. No RoPE (the yardstick has none either).
* ``sdpa_block`` (the yardstick): pre-norm causal Transformer block, ``x + O(SDPA(QKV(
  RMSNorm(x)), is_causal=True))`` then ``x + W2 gelu(W1 RMSNorm(x))``, W1: 256 -> 1024.

Measurements: ``fwd`` is the training forward (autograd recording, x.requires_grad),
``fwd+bwd`` that forward plus ``backward`` of a fixed upstream gradient (input,
parameter and initial-state gradients). Median of the timed repeats after warm-up calls
(the memory-measurement calls double as warm-up). ``compile`` rows:
``torch.compile(block, dynamic=False)``, inductor backend with default options, timed
after the compiling call; the compile time is reported. Because the fast forms unroll a
Python loop over chunks, compile time grows with T / C.

Time budget: the run must end in < 10 min on 2 cores, and the slow rules (deep memories
at T=2048 take seconds per call) do not all fit. Rows run in priority order (``plan``):
every rule eager at the anchor shape T=512 C=64 and the references always; then eager
T=2048, eager chunk 16, compile rows, each only if its estimated time fits in the
remaining budget (``--budget``, default 540 s; ``--budget inf`` runs the whole grid);
the others are listed as skipped with the estimate.
``reference`` rows run the per-token-loop form of the same block (eager) at a short
sequence (``ref_seq`` tokens) and report time *per token*: a per-token loop does the same
work at every token, so its time per token is flat in T and is extrapolated to longer
sequences (softmax attention's reference does O(t) work at token t, so there the
extrapolation *under*-states its cost and the speed-up is a lower bound).

Memory (see ``_harness``): ``peak MiB`` = high-water mark of bytes allocated during one
fwd+bwd (torch.profiler memory events; excludes the inputs and parameters that exist
before the call); ``saved MiB`` = distinct storages autograd saves for backward (eager,
saved_tensors_hooks).

FLOPs: model FLOPs per token of the forward, counted analytically from the algorithm as
the fast form implements it (matmul FLOPs 2 m n k, plus C^2 W for a triangular solve;
elementwise work, exp, cumprod and softmax are not counted; causal attention counts only
the unmasked half). ``fwd+bwd = 3 x fwd``. The formulas are in the ``flops_*`` functions.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._harness import (  # noqa: E402
    MiB, fmt_si, format_table, mm, peak_alloc_bytes, saved_tensor_bytes, time_call,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "primitives.json")


def _prim(name: str):
    """Import ``nlc.primitives.<name>`` lazily: a module that is broken or missing only
    costs its own rows (reported as errors), not the whole run."""
    return importlib.import_module(f"nlc.primitives.{name}")


# =============================================================================== shapes
@dataclass(frozen=True)
class Shape:
    d: int = 256
    heads: int = 4
    batch: int = 4
    deep_hidden: int = 256        # Titans memory 64 -> 256 -> 64 (and the HOPE memories)
    cms_hidden: int = 1024
    cms_periods: tuple = (16, 64, 256)
    mlp_hidden: int = 1024        # yardstick MLP
    window: int = 128             # sliding-window attention
    omega_window: int = 4
    selfmod_other: int = 16       # HOPE chunk_other (gcd with the chunk)
    seqs: tuple = (512, 2048)
    chunks: tuple = (16, 64)
    ref_seq: int = 32             # reference forms run at this length (<= 512)
    ref_chunk: int = 64

    @property
    def dh(self) -> int:
        return self.d // self.heads


FULL = Shape()
TINY = Shape(d=32, heads=2, batch=1, deep_hidden=32, cms_hidden=64, cms_periods=(2, 4, 8),
             mlp_hidden=64, window=8, selfmod_other=4, seqs=(32, 64), chunks=(4, 8),
             ref_seq=8, ref_chunk=8)


# =============================================================================== FLOPs
# Forward FLOPs per token. H heads of D = d / H; C chunk; G scalar gates per head.
def flops_memory_projections(s: Shape, n_gates: int) -> float:
    """q, k, v, g: 4 x (d -> d); gates: d -> G H; output: d -> d  (RMSNorm, gating ignored):
    2 d (4d) + 2 d (G H) + 2 d d."""
    d = s.d
    return mm(1, 4 * d, d) + mm(1, n_gates * s.heads, d) + mm(1, d, d)


def flops_delta_kernel_chunk(C: int, Dk: int, Dv: int, *, b: bool, wk: bool, Cp: int = 0,
                             band: bool = False) -> float:
    """One chunk of ``delta_kernel.generalized_delta_chunked`` (or the Omega variant).

    W = Dv (+ Dk when the writes read the chunk-start state: wk), C' = write keys (C, or
    C + window - 1 for Omega)::

      UT transform (b):  K K^T  2 C C Dk  +  triangular solve  C^2 W
      affine_terms:      Q Kw^T 2 C C' Dk +  A W  2 C C' W  +  W^T Kr  2 W C' Dk
      Omega mixing:      Dmat @ band  2 (C + 1) C C'
      scan (wk):         S Tr  2 Dv Dk Dk          (a scalar decay otherwise)
      read:              Qs S^T  2 C Dv Dk
    """
    Cp = Cp or C
    W = Dv + (Dk if wk else 0)
    f = mm(C, Cp, Dk) + mm(C, W, Cp) + mm(W, Dk, Cp) + mm(C, Dv, Dk)
    if b:
        f += mm(C, C, Dk) + C * C * W
    if band:
        f += mm(C + 1, Cp, C)
    if wk:
        f += mm(Dv, Dk, Dk)
    return f


def flops_matrix_rule(s: Shape, C: int, *, b: bool, wk: bool, window: int = 1) -> float:
    """All heads, per token: H x flops_delta_kernel_chunk(C, D, D) / C."""
    D = s.dh
    f = flops_delta_kernel_chunk(C, D, D, b=b, wk=wk, Cp=C + window - 1, band=window > 1)
    return s.heads * f / C


def flops_deep(s: Shape, C: int, dims: list[int]) -> float:
    """``deep.deep_memory_chunked`` (momentum and retention on, window 1), per token.

    Layer l maps D_{l-1} -> D_l; Sig = sum_l D_{l-1} D_l, Sin = sum_l D_{l-1},
    Sout = sum_l D_l. Per chunk and head::

      gate coefficients:  c = DR @ (DM lr)  2 C^3,   e = DR @ Mc  2 C^2
      write keys forward: 2 C Sig;   error back-propagation: 2 C (Sig - D_0 D_1)
      reads per layer:    h W^T and h S^T  2 x 2 C D_{l-1} D_l,
                          h A^T 2 C C D_{l-1},  (.) @ Delta 2 C C D_l
      end of chunk:       Delta^T [c a | d a]  4 C D_{l-1} D_l
      => 2 C^3 + 2 C^2 + C (12 Sig - 2 D_0 D_1) + 2 C^2 (Sin + Sout)
    """
    sig = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    sin, sout = sum(dims[:-1]), sum(dims[1:])
    per_chunk = (mm(C, C, C) + mm(C, 1, C) + C * (12 * sig - 2 * dims[0] * dims[1])
                 + 2 * C * C * (sin + sout))
    return s.heads * per_chunk / C


def flops_selfmod(s: Shape, C: int) -> float:
    """``selfmod.selfmod_chunked``, per token: projections x_in, q, g (3 d -> d) + output
    (d -> d), then per head, D = 64, Dh hidden, R = 4 stacked memories (k, v, eta, alpha)::

      pass 1, per chunk_other chunk Co:  M_r(x)  2 Co R Dh D + R 2 Co D Dh
         frozen grads at (v, k):  2 (2Co) R Dh D + R 2 (2Co) D Dh + R 2 Co Dh D
         W2 rows: delta kernel (Dk = D, Dv = R Dh, UT transform);  W1 end  R 2 D Dh Co
      pass 2, per chunk_memory chunk C:  frozen grads (R = 1) as above,
         W2: delta kernel (Dk = D, Dv = Dh, UT);  W1: delta kernel (Dk = Dh, Dv = D, no b)
    """
    D, Dh, R = s.dh, s.deep_hidden, 4
    Co = math.gcd(C, s.selfmod_other)

    def grads(c, r):
        return mm(2 * c, r * Dh, D) + r * mm(2 * c, D, Dh) + r * mm(c, Dh, D)

    p1 = (mm(Co, R * Dh, D) + R * mm(Co, D, Dh) + grads(Co, R)
          + flops_delta_kernel_chunk(Co, D, R * Dh, b=True, wk=True) + R * mm(D, Dh, Co)) / Co
    p2 = (grads(C, 1) + flops_delta_kernel_chunk(C, D, Dh, b=True, wk=True)
          + flops_delta_kernel_chunk(C, Dh, D, b=False, wk=False)) / C
    return mm(1, 3 * s.d, s.d) + mm(1, s.d, s.d) + s.heads * (p1 + p2)


def flops_cms(s: Shape) -> float:
    """Per token and level (d -> h -> d, local signal): forward 2 x 2 d h; summed gradient
    dW_out = Delta^T h 2 d h, back to the hidden layer Delta W_out 2 d h, dW_in 2 d h
    => 10 d h per level."""
    return len(s.cms_periods) * 10.0 * s.d * s.cms_hidden


def attn_keys_per_query(T: int, window: Optional[int]) -> float:
    """Mean number of visible keys per query (causal, optionally windowed)."""
    if window is None:
        return (T + 1) / 2.0
    return sum(min(t, window) for t in range(1, T + 1)) / T


def flops_attention(s: Shape, T: int, window: Optional[int]) -> float:
    """QKV 2 d 3d + out 2 d d + (QK^T and PV) 2 x 2 d x mean visible keys."""
    return mm(1, 3 * s.d, s.d) + mm(1, s.d, s.d) + 4.0 * s.d * attn_keys_per_query(T, window)


def flops_sdpa_block(s: Shape, T: int) -> float:
    """Attention part (flops_attention, full causal) + MLP 2 x 2 d h_mlp."""
    return flops_attention(s, T, None) + 2 * mm(1, s.mlp_hidden, s.d)


# =============================================================================== blocks
def _rms(d: int) -> nn.Module:
    return _prim("layers").RMSNorm(d)


class MemoryBlock(nn.Module):
    """Pre-norm memory level block (module doc); ``rule(state, q, k, v, gates)`` gets
    heads-first tensors and the tuple of G gates (B, H, T) in (0, 1)."""

    def __init__(self, s: Shape, n_gates: int, rule: Callable, *,
                 deep_retention: Optional[str] = None):
        super().__init__()
        self.s, self.n_gates, self.rule = s, n_gates, rule
        self.norm = _rms(s.d)
        self.proj = nn.Linear(s.d, 4 * s.d, bias=False)
        self.gates = nn.Linear(s.d, n_gates * s.heads)
        self.out = nn.Linear(s.d, s.d, bias=False)
        self.deep_retention = deep_retention
        if deep_retention is not None:
            g = torch.Generator().manual_seed(0)
            init = _prim("deep").init_deep_params(s.heads, [s.dh, s.deep_hidden, s.dh],
                                                  generator=g)
            self.deep = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        h = self.norm(x)
        q, k, v, g = self.proj(h).view(B, T, 4, s.heads, s.dh).permute(2, 0, 3, 1, 4).unbind(0)
        l2 = _prim("layers").l2_normalize
        q, k = l2(q), l2(k)
        gates = torch.sigmoid(self.gates(h)).view(B, T, self.n_gates, s.heads)
        gates = gates.permute(2, 0, 3, 1).unbind(0)
        if self.deep_retention is None:
            state = {"S": x.new_zeros(B, s.heads, s.dh, s.dh)}
        else:
            state = _prim("deep").init_deep_state(dict(self.deep.items()), B,
                                                  global_retention=self.deep_retention)
        o, _ = self.rule(state, q, k, v, gates)
        o = o.transpose(1, 2).reshape(B, T, d)
        return x + self.out(o * F.silu(g.transpose(1, 2).reshape(B, T, d)))


class SelfModBlock(nn.Module):
    """HOPE self-modifying memory as a level block (module doc)."""

    def __init__(self, s: Shape, chunk: int, fast: bool):
        super().__init__()
        self.s, self.chunk = s, chunk
        self.other = math.gcd(chunk, s.selfmod_other)
        mod = _prim("selfmod")
        self.fn = mod.selfmod_chunked if fast else mod.selfmod_reference
        self.init_state = mod.init_selfmod_state
        self.norm = _rms(s.d)
        self.proj = nn.Linear(s.d, 3 * s.d, bias=False)
        self.out = nn.Linear(s.d, s.d, bias=False)
        g = torch.Generator().manual_seed(0)
        init = mod.init_selfmod_params(s.heads, s.dh, s.deep_hidden, generator=g)
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        xin, q, g = self.proj(self.norm(x)).view(B, T, 3, s.heads, s.dh).permute(
            2, 0, 3, 1, 4).unbind(0)
        params = dict(self.params.items())
        state = self.init_state(params, B)
        l2 = _prim("layers").l2_normalize
        o, _ = self.fn(state, l2(xin), l2(q), params=params, chunk_memory=self.chunk,
                       chunk_other=self.other)
        o = o.transpose(1, 2).reshape(B, T, d)
        return x + self.out(o * F.silu(g.transpose(1, 2).reshape(B, T, d)))


class AttentionBlock(nn.Module):
    def __init__(self, s: Shape, window: Optional[int], fast: bool):
        super().__init__()
        self.s, self.window = s, window
        att = _prim("attention")
        self.fn = att.softmax_attention if fast else att.softmax_attention_reference
        self.norm = _rms(s.d)
        self.qkv = nn.Linear(s.d, 3 * s.d, bias=False)
        self.out = nn.Linear(s.d, s.d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, s.heads, s.dh).permute(2, 0, 3, 1, 4)
        o, _ = self.fn(q, k, v, window=self.window)
        return x + self.out(o.transpose(1, 2).reshape(B, T, d))


class SDPABlock(nn.Module):
    """The yardstick: pre-norm causal Transformer block of width d (no nlc code inside
    except RMSNorm)."""

    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.norm1, self.norm2 = _rms(s.d), _rms(s.d)
        self.qkv = nn.Linear(s.d, 3 * s.d, bias=False)
        self.out = nn.Linear(s.d, s.d, bias=False)
        self.fc1 = nn.Linear(s.d, s.mlp_hidden)
        self.fc2 = nn.Linear(s.mlp_hidden, s.d)

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, s.heads, s.dh).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(o.transpose(1, 2).reshape(B, T, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class CMSChainBlock(nn.Module):
    def __init__(self, s: Shape, fast: bool):
        super().__init__()
        self.s = s
        cms = _prim("cms")
        self.fn = cms.cms_chunked if fast else cms.cms_reference
        self.init_levels = cms.cms_init_levels
        self.norm = _rms(s.d)
        g = torch.Generator().manual_seed(0)
        self.levels = nn.ModuleList(
            nn.ParameterDict({k: nn.Parameter(v) for k, v in
                              cms.cms_init_params(s.d, s.cms_hidden, generator=g).items()})
            for _ in s.cms_periods)

    def forward(self, x: Tensor) -> Tensor:
        state = self.init_levels([dict(p.items()) for p in self.levels], x.shape[0])
        n = len(self.s.cms_periods)
        y, _ = self.fn(state, self.norm(x), chunks=list(self.s.cms_periods), lrs=[1e-3] * n,
                       variant="sequential", signal="local", policy="carry", kind="gelu")
        return x + y


# =============================================================================== rules
@dataclass
class RuleSpec:
    name: str
    what: str
    build: Callable[[Shape, int, bool], nn.Module]  # (shape, chunk, fast) -> block
    flops: Callable[[Shape, int, int], float]       # (shape, T, chunk) -> fwd FLOPs / token
    chunked: bool = True        # does the grid's chunk apply?
    memory: bool = True         # a memory rule (flatness target)
    fast_rule: bool = True      # has a reference form and counts for the FLOP/s target


def _matrix_rule(fn_name: str, n_gates: int, call: Callable) -> Callable:
    """``call(fn, state, q, k, v, gates, chunk)`` adapts the gates to the rule's signature."""
    def build(s: Shape, chunk: int, fast: bool) -> nn.Module:
        fn = getattr(_prim("matrix"), fn_name + ("_chunked" if fast else "_reference"))

        def rule(state, q, k, v, gates):
            return call(fn, state, q, k, v, gates, chunk)
        return MemoryBlock(s, n_gates, rule)
    return build


def _ret(g: Tensor) -> Tensor:
    return 0.9 + 0.1 * g


_LINEAR = _matrix_rule("linear_attention", 1, lambda fn, st, q, k, v, g, C: fn(
    st, q, k, v, g[0], chunk=C, read_after_write=True))
_GLA = _matrix_rule("gated_linear_attention", 2, lambda fn, st, q, k, v, g, C: fn(
    st, q, k, v, g[0], _ret(g[1]), chunk=C, read_after_write=True))
_DELTA = _matrix_rule("delta_rule", 1, lambda fn, st, q, k, v, g, C: fn(
    st, q, k, v, g[0], chunk=C, read_after_write=True))
_GDELTA = _matrix_rule("gated_delta_rule", 2, lambda fn, st, q, k, v, g, C: fn(
    st, q, k, v, g[0], _ret(g[1]), chunk=C, read_after_write=True))
_DGD = _matrix_rule("dgd", 2, lambda fn, st, q, k, v, g, C: fn(
    st, q, k, v, g[0], _ret(g[1]), objective="l2", chunk=C, read_after_write=False))


def _omega_build(s: Shape, chunk: int, fast: bool) -> nn.Module:
    return _matrix_rule("omega_rule", 2, lambda fn, st, q, k, v, g, C: fn(
        st, q, k, v, g[0], _ret(g[1]), window=s.omega_window, chunk=C,
        read_after_write=False))(s, chunk, fast)


def _deep(objective: str, global_retention: str = "decay", **extra) -> Callable:
    def build(s: Shape, chunk: int, fast: bool) -> nn.Module:
        deep = _prim("deep")
        fn = deep.deep_memory_chunked if fast else deep.deep_memory_reference

        def rule(state, q, k, v, gates):
            lr, mom, ret = gates
            return fn(state, q, k, v, 0.1 * lr, 0.9 * mom, _ret(ret), chunk=chunk,
                      activation="gelu", objective=objective, read_after_write=False,
                      global_retention=global_retention, **extra)
        return MemoryBlock(s, 3, rule, deep_retention=global_retention)
    return build


def _deep_flops(s: Shape, T: int, C: int) -> float:
    return flops_memory_projections(s, 3) + flops_deep(s, C, [s.dh, s.deep_hidden, s.dh])


def rule_specs() -> list[RuleSpec]:
    P = flops_memory_projections
    return [
        RuleSpec("linear_attn", "linear attention S += lr v k^T (read after write)", _LINEAR,
                 lambda s, T, C: P(s, 1) + flops_matrix_rule(s, C, b=False, wk=False)),
        RuleSpec("gla", "gated linear attention S = a S + lr v k^T", _GLA,
                 lambda s, T, C: P(s, 2) + flops_matrix_rule(s, C, b=False, wk=False)),
        RuleSpec("delta", "delta rule (DeltaNet, UT transform)", _DELTA,
                 lambda s, T, C: P(s, 1) + flops_matrix_rule(s, C, b=True, wk=True)),
        RuleSpec("gated_delta", "gated delta rule", _GDELTA,
                 lambda s, T, C: P(s, 2) + flops_matrix_rule(s, C, b=True, wk=True)),
        RuleSpec("dgd", "DGD, matrix, l2, gradient at chunk-start S (read before write)", _DGD,
                 lambda s, T, C: P(s, 2) + flops_matrix_rule(s, C, b=True, wk=True)),
        RuleSpec("omega_w4", "Omega rule, matrix, window 4, retention", _omega_build,
                 lambda s, T, C: P(s, 2) + flops_matrix_rule(s, C, b=False, wk=True,
                                                             window=s.omega_window)),
        RuleSpec("titans", "Titans LMM: MLP 64->256->64 GELU, l2, momentum + decay",
                 _deep("l2"), _deep_flops),
        RuleSpec("deep_lp", "deep memory (Titans shape), lp objective p=3",
                 _deep("lp", p=3.0), _deep_flops),
        RuleSpec("deep_huber", "deep memory (Titans shape), Huber objective delta=1",
                 _deep("huber", delta=1.0), _deep_flops),
        RuleSpec("miras_lq", "Moneta: deep memory, lp p=3 + lq retention q=4",
                 _deep("lp", "lq", p=3.0, lq=4.0), _deep_flops),
        RuleSpec("hope_selfmod", "HOPE self-modifying memory: 5 residual MLPs 64->256->64, "
                 "chunk_other gcd(C,16)", lambda s, C, fast: SelfModBlock(s, C, fast),
                 lambda s, T, C: flops_selfmod(s, C)),
        RuleSpec("cms_chain", "CMS chain: 3 GELU MLP levels 256->1024->256, periods "
                 "16/64/256, local signal", lambda s, C, fast: CMSChainBlock(s, fast),
                 lambda s, T, C: flops_cms(s), chunked=False, memory=False),
        RuleSpec("softmax_full", "softmax attention, full causal (nlc softmax_attention)",
                 lambda s, C, fast: AttentionBlock(s, None, fast),
                 lambda s, T, C: flops_attention(s, T, None), chunked=False, memory=False),
        RuleSpec("softmax_swa", "softmax attention, sliding window 128 (explicit mask)",
                 lambda s, C, fast: AttentionBlock(s, s.window, fast),
                 lambda s, T, C: flops_attention(s, T, s.window), chunked=False,
                 memory=False),
        RuleSpec("sdpa_block", "yardstick: pre-norm causal SDPA Transformer block + MLP 4d",
                 lambda s, C, fast: SDPABlock(s), lambda s, T, C: flops_sdpa_block(s, T),
                 chunked=False, memory=False, fast_rule=False),
    ]


RULES = [sp.name for sp in rule_specs()]


# =============================================================================== running
@dataclass
class Config:
    rule: str
    impl: str        # fast | reference
    mode: str        # eager | compile
    seq: int
    chunk: Optional[int]


def _fwd_bwd_fns(block: Callable, x: Tensor, gout: Tensor, params: list[Tensor]):
    def fwd():
        return block(x)

    def fwd_bwd():
        for p in params:
            p.grad = None
        x.grad = None
        block(x).backward(gout)
    return fwd, fwd_bwd


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


class Yardstick:
    """Eager SDPA-block fwd+bwd at each T, timed once just before and once just after every
    row's timed calls. On a shared machine the speed available to the run drifts by
    factors over minutes; ``normalize`` rescales each row by (the run's median yardstick
    time at T) / (its own paired yardstick time), which cancels slow drift and makes the
    ratios between rows measured minutes apart comparable. On a quiet machine the factor
    is ~1."""

    def __init__(self, s: Shape):
        self.s = s
        self.fns: dict[int, Callable[[], None]] = {}

    def sample(self, T: int) -> float:
        if T not in self.fns:
            torch.manual_seed(1)
            b = SDPABlock(self.s)
            x = torch.randn(self.s.batch, T, self.s.d, requires_grad=True)
            _, fb = _fwd_bwd_fns(b, x, torch.randn_like(x), list(b.parameters()))
            fb()  # warm-up
            self.fns[T] = fb
        t0 = time.perf_counter()
        self.fns[T]()
        return time.perf_counter() - t0


def normalize(rows: list[dict], s: Shape) -> None:
    """Add load-normalised times (``*_norm_*``) to every row with paired yardstick samples
    (see :class:`Yardstick`); ``load_factor`` = typical / paired yardstick time."""
    samples: dict[int, list[float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("sdpa_paired_s"):
            samples.setdefault(r["seq"], []).extend(r["sdpa_paired_s"])
    typical = {T: statistics.median(v) for T, v in samples.items()}
    for r in rows:
        if r.get("status") != "ok" or not r.get("sdpa_paired_s"):
            continue
        f = typical[r["seq"]] / statistics.fmean(r["sdpa_paired_s"])
        n_tok = s.batch * r["seq"]
        r["load_factor"] = f
        for k in ("fwd", "fwdbwd"):
            r[f"{k}_norm_s"] = r[f"{k}_s"] * f
            r[f"{k}_norm_tok_s"] = n_tok / r[f"{k}_norm_s"]
            r[f"{k}_norm_us_per_tok"] = 1e6 * r[f"{k}_norm_s"] / n_tok
        if "flops_per_token_fwd" in r:
            r["fwdbwd_norm_flops_s"] = 3 * r["flops_per_token_fwd"] * r["fwdbwd_norm_tok_s"]


def measure(spec: RuleSpec, cfg: Config, s: Shape, opts: dict) -> dict[str, Any]:
    """Time one configuration; the first calls measure memory and serve as warm-up."""
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
    fwd, fwd_bwd = _fwd_bwd_fns(runner, x, gout, params)
    if cfg.mode == "compile":
        t0 = time.perf_counter()
        try:
            fwd_bwd()  # compiles the forward and the backward graphs
        except Exception as e:  # noqa: BLE001 -- report, then time eager instead
            row["note"] = f"compile failed ({_first_line(e)}); timed eager"
            row["mode"] = "compile->eager"
            torch._dynamo.reset()
            fwd, fwd_bwd = _fwd_bwd_fns(block, x, gout, params)
        row["compile_s"] = time.perf_counter() - t0

    # warm-up calls that also measure: forward (saved tensors, finiteness), fwd+bwd (peak).
    # Reference rows take seconds per call: they warm up on 4 tokens only.
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
            peak = peak_alloc_bytes(fwd_bwd)
            row["peak_mib"] = None if peak is None else peak / MiB
        elif cfg.mode == "eager":
            fwd_bwd()
    else:  # warm up on a few tokens (one-time functorch / dispatcher costs), then time
        xs = x[:, :4].detach().requires_grad_()
        runner(xs).backward(gout[:, :4])
        fwd = fwd_check
    tk = opts["timing"] if cfg.impl == "fast" else opts["ref_timing"]
    yard = opts.get("yardstick")
    paired = [yard.sample(cfg.seq)] if yard else []
    tf = time_call(fwd, warmup=0, **tk)
    tb = time_call(fwd_bwd, warmup=0, **tk)
    if yard:
        paired.append(yard.sample(cfg.seq))
        row["sdpa_paired_s"] = paired
    n_tok = s.batch * cfg.seq
    row["finite"] = all(finite)
    row["fwd_s"], row["fwdbwd_s"] = tf["median_s"], tb["median_s"]
    row["reps"] = [tf["reps"], tb["reps"]]
    row["fwdbwd_cpu_util"] = tb["cpu_s"] / tb["median_s"]  # ~threads when uncontended
    row["fwd_tok_s"] = n_tok / tf["median_s"]
    row["fwdbwd_tok_s"] = n_tok / tb["median_s"]
    row["fwd_us_per_tok"] = 1e6 * tf["median_s"] / n_tok
    row["fwdbwd_us_per_tok"] = 1e6 * tb["median_s"] / n_tok
    if cfg.impl == "fast":
        fl = spec.flops(s, cfg.seq, chunk)
        row["flops_per_token_fwd"] = fl
        row["fwd_flops_s"] = fl * row["fwd_tok_s"]
        row["fwdbwd_flops_s"] = 3 * fl * row["fwdbwd_tok_s"]
    if not row["finite"]:
        row["note"] = (row["note"] + "; " if row["note"] else "") + "non-finite output"
    return row


def plan(specs: list[RuleSpec], s: Shape, quick: bool, compile: bool,
         compile_rules: Optional[list[str]] = None) -> list[tuple[bool, list[Config]]]:
    """Groups of configurations in priority order, each ``(required, configs)``; required
    groups run whatever the budget:

    1. every rule eager at the anchor shape T = 512, C = 64 (required);
    2. the reference rows (required);
    3. eager at the longer sequence, C = 64 (the targets need it);
    4. compile at the anchor shape;
    5. eager at the smaller chunk;
    6. compile at the longer sequence, C = 64;
    7. compile at the smaller chunk.

    The yardstick and Titans lead every group; ``run`` orders the rest of a group by
    estimated cost, cheapest first, so that a tight budget measures as many rows as it can.
    """
    seqs = s.seqs[:1] if quick else s.seqs
    chunks = s.chunks[-1:] if quick else s.chunks
    T0, C_hi = seqs[0], chunks[-1]

    def at(mode, T, C=None, chunked_only=False, impl="fast"):
        return [Config(sp.name, impl, mode, T, (C or C_hi) if sp.chunked else None)
                for sp in specs if (sp.chunked or not chunked_only) and (
                    mode == "eager" or compile_rules is None or sp.name in compile_rules
                    or sp.name == "sdpa_block")]

    refs = [Config(sp.name, "reference", "eager", s.ref_seq,
                   s.ref_chunk if sp.chunked else None) for sp in specs if sp.fast_rule]
    groups = [(True, at("eager", T0)), (True, refs)]
    groups += [(False, at("eager", T)) for T in seqs[1:]]
    if compile:
        groups.append((False, at("compile", T0)))
    groups += [(False, at("eager", T, C, True)) for C in chunks[:-1] for T in seqs]
    if compile:
        groups += [(False, at("compile", T)) for T in seqs[1:]]
        groups += [(False, at("compile", T, C, True)) for C in chunks[:-1] for T in seqs]
    return groups


def _find(rows, **kw) -> Optional[dict]:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def evaluate_targets(rows: list[dict], specs: list[RuleSpec], s: Shape, modes: list[str],
                     quick: bool = False) -> list[dict]:
    """The project's targets, each PASS / FAIL (or n/a when the run lacks the data).

    Evaluated at the largest chunk of the grid (64: the Titans anchor shape), fwd+bwd;
    a rule is compared with the yardstick in the same mode (eager with eager, compile with
    compile). Quick runs have one sequence length: the long-sequence targets use it and the
    flatness target is n/a.
    """
    out: list[dict] = []
    T_lo, T_hi = s.seqs[0], (s.seqs[0] if quick else s.seqs[-1])
    C = s.chunks[-1]
    ok = [r for r in rows if r.get("status") == "ok"]

    def add(name, mode, value, op, thr, note=""):
        res = None if value is None else (value >= thr if op == ">=" else value <= thr)
        out.append({"target": name, "mode": mode, "value": value, "op": op, "threshold": thr,
                    "pass": res, "note": note})

    def get(name, mode, T, chunked=True):
        return _find(ok, rule=name, impl="fast", mode=mode, seq=T,
                     chunk=C if chunked else None)

    def v(r, key):  # load-normalised value when the row has one (see Yardstick)
        k, _, unit = key.partition("_")
        return r.get(f"{k}_norm_{unit}", r[key])

    fast = [sp for sp in specs if sp.fast_rule]
    for mode in modes:
        for T, thr in ((T_lo, 0.8), (T_hi, 1.1)):
            if quick and thr == 1.1:
                continue
            ti, sd = get("titans", mode, T), get("sdpa_block", mode, T, False)
            x = v(ti, "fwdbwd_tok_s") / v(sd, "fwdbwd_tok_s") if (ti and sd) else None
            add(f"titans / sdpa_block tok/s, T={T} C={C}", mode, x, ">=", thr)
    for spec in fast:
        for mode in modes:
            r, sd = get(spec.name, mode, T_hi, spec.chunked), get("sdpa_block", mode, T_hi,
                                                                   False)
            x = v(r, "fwdbwd_flops_s") / v(sd, "fwdbwd_flops_s") if (r and sd) else None
            add(f"{spec.name}: FLOP/s / sdpa_block FLOP/s, T={T_hi}", mode, x, ">=", 0.7)
    for spec in fast:
        ref = _find(ok, rule=spec.name, impl="reference")
        for mode in modes:
            r = get(spec.name, mode, T_hi, spec.chunked)
            x = v(ref, "fwdbwd_us_per_tok") / v(r, "fwdbwd_us_per_tok") if (r and ref) \
                else None
            note = "lower bound (reference cost per token grows with T)" \
                if spec.name.startswith("softmax") else ""
            add(f"{spec.name}: fast / reference speed-up, T={T_hi} (ref T={s.ref_seq})",
                mode, x, ">=", 20.0, note)
    if not quick:
        for spec in fast:
            if not spec.memory:
                continue
            for mode in modes:
                lo, hi = get(spec.name, mode, T_lo), get(spec.name, mode, T_hi)
                x = v(hi, "fwdbwd_us_per_tok") / v(lo, "fwdbwd_us_per_tok") if (lo and hi) \
                    else None
                add(f"{spec.name}: time/token T={T_hi} / T={T_lo} (flat)", mode, x, "<=",
                    1.2)
    return out


# =============================================================================== output
def _f(x, nd=3):
    if x is None:
        return "-"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def render(res: dict) -> str:
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
        "(profiler); saved = tensors saved for backward (eager).",
        "tok/s, us/tok, FLOP/s and 'x sdpa' are load-normalised (Yardstick: the eager SDPA "
        "block is timed around every row; load = run-median / paired yardstick time, "
        "normalised = raw x load); 'raw' is the unnormalised fwd+bwd tok/s.",
        "",
    ]
    cols = [("rule", "rule"), ("impl", "impl"), ("mode", "mode"), ("seq", "T"),
            ("chunk", "C"), ("fwd", "fwd tok/s"), ("fb", "fwd+bwd tok/s"),
            ("usf", "us/tok"), ("raw", "raw"), ("load", "load"), ("cpu", "cpu/wall"),
            ("fl", "FLOP/tok"), ("afl", "FLOP/s"), ("vs", "x sdpa"), ("peak", "peak MiB"),
            ("saved", "saved MiB"), ("comp", "compile s"), ("note", "note")]

    def v(r, key):
        k, _, unit = key.partition("_")
        return r.get(f"{k}_norm_{unit}", r.get(key))

    table = []
    for r in rows:
        if r.get("status") != "ok":
            table.append({"rule": r["rule"], "impl": r.get("impl", "-"),
                          "mode": r.get("mode", "-"), "seq": r.get("seq", "-"),
                          "chunk": r.get("chunk") or "-",
                          "note": f"{r.get('status', '').upper()}: {r.get('note', '')}"})
            continue
        sd = _find(rows, rule="sdpa_block", impl="fast", mode=r["mode"], seq=r["seq"],
                   status="ok")
        vs = v(r, "fwdbwd_tok_s") / v(sd, "fwdbwd_tok_s") if (sd and r["impl"] == "fast") \
            else None
        table.append({
            "rule": r["rule"], "impl": r["impl"], "mode": r["mode"],
            "seq": r["seq"] if r["impl"] == "fast" else f"{r['seq']}*",
            "chunk": r["chunk"] if r["chunk"] is not None else "-",
            "fwd": fmt_si(v(r, "fwd_tok_s")), "fb": fmt_si(v(r, "fwdbwd_tok_s")),
            "usf": _f(v(r, "fwdbwd_us_per_tok")), "raw": fmt_si(r["fwdbwd_tok_s"]),
            "load": _f(r.get("load_factor"), 2), "cpu": _f(r.get("fwdbwd_cpu_util"), 2),
            "fl": fmt_si(r.get("flops_per_token_fwd")), "afl": fmt_si(v(r, "fwdbwd_flops_s")),
            "vs": _f(vs), "peak": _f(r.get("peak_mib")), "saved": _f(r.get("saved_mib")),
            "comp": _f(r.get("compile_s"), 3), "note": r.get("note", ""),
        })
    lines.append(format_table(table, cols))
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


# =============================================================================== entry
def _process_warmup() -> None:
    """One-time costs (profiler start-up, first autograd / allocator use) before any row is
    timed, so they do not land on the first row or its time estimates."""
    w = torch.randn(64, 64, requires_grad=True)
    peak_alloc_bytes(lambda: (torch.randn(8, 64) @ w).sum().backward())
    saved_tensor_bytes(lambda: torch.randn(8, 64) @ w)


def run(quick: bool = False, tiny: bool = False, out: Optional[str] = RESULTS,
        compile: bool = True, backend: Optional[str] = None, only: Optional[list[str]] = None,
        memory: bool = True, verbose: bool = True, threads: Optional[int] = None,
        budget_s: Optional[float] = None, compile_rules: Optional[list[str]] = None,
        pair: bool = True) -> dict:
    """Run the benchmark; returns the result dict and writes it as JSON to ``out``.

    ``budget_s``: wall-clock budget of the run (default 540 s, quick 240 s, tiny 16 s;
    ``float("inf")`` runs the whole grid). Rows run in :func:`plan`'s priority order; the
    required ones (every rule eager at the anchor shape, the references) always run, every
    other row only if its estimated time (from the rows already measured) fits in what is
    left, else it is listed as skipped. ``compile_rules``: rules that get compile rows
    (default all; the yardstick always has them). ``pair``: time the eager yardstick around
    every row and report load-normalised numbers (:class:`Yardstick`); the targets use them.
    ``tiny``: toy shapes for tests; also defaults ``backend`` to ``"eager"`` (dynamo capture
    only, no inductor code generation) and ``threads`` to 1 (toy ops are far below OpenMP's
    break-even, and two threads on a busy machine spin for milliseconds per op).
    """
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(threads or (1 if tiny else 2))
    _process_warmup()
    s = TINY if tiny else FULL
    backend = backend or ("eager" if tiny else "inductor")
    budget = budget_s if budget_s is not None else (16.0 if tiny else 240.0 if quick
                                                      else 540.0)
    modes = ["eager"] + (["compile"] if compile else [])
    specs = rule_specs()
    if only:
        specs = [sp for sp in specs if sp.name in only or sp.name == "sdpa_block"]
    if tiny:
        timing = dict(min_reps=1, max_reps=2, budget_s=0.0)
        ref_timing = dict(min_reps=1, max_reps=1, budget_s=0.0)
    else:  # median of the repeats that fit in ~0.6 s (at least one, at most 7)
        timing = dict(min_reps=1, max_reps=7, budget_s=0.6)
        ref_timing = dict(min_reps=1, max_reps=3, budget_s=0.3)
    opts = {"backend": backend, "timing": timing, "ref_timing": ref_timing, "memory": memory,
            "yardstick": Yardstick(s) if pair else None}
    by_name = {sp.name: sp for sp in specs}
    rows: list[dict] = []
    T0, C_hi = s.seqs[0], s.chunks[-1]
    compile_guess = 1.0 if tiny else 20.0  # + 5 x the rule's eager anchor time

    def log(row, cfg):
        if verbose:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {cfg.rule:13s} {cfg.impl:9s} "
                  f"{row.get('mode', cfg.mode):8s} T={cfg.seq:<5d} C={str(cfg.chunk):4s} "
                  f"{row['status']:7s} fwd+bwd {fmt_si(row.get('fwdbwd_tok_s'))} tok/s "
                  f"cpu/wall {_f(row.get('fwdbwd_cpu_util'), 2)} "
                  f"({row.get('wall_s', 0):.1f}s) {row.get('note', '')}", file=sys.stderr,
                  flush=True)

    def anchor_wall(rule: str) -> float:
        r = _find(rows, rule=rule, impl="fast", mode="eager", seq=T0)
        return r["wall_s"] if r else 0.0

    def growth(T: int) -> float:
        """Largest observed (time per token at T) / (time per token at T0), >= 1: eager
        rows at T are estimated from the anchor rows with it."""
        g = 1.0
        for r in rows:
            if r["seq"] == T and r.get("mode") == "eager" and r["impl"] == "fast" \
                    and r["status"] == "ok" and T != T0:
                a = anchor_wall(r["rule"])
                if a > 0:
                    g = max(g, r["wall_s"] / a * T0 / T)
        return g

    def estimate(cfg: Config) -> float:
        """Seconds this row will take, from the rows already measured."""
        if cfg.mode == "eager":
            return anchor_wall(cfg.rule) * cfg.seq / T0 * growth(cfg.seq) * (
                1.5 if (cfg.chunk or C_hi) < C_hi else 1.0)
        units = cfg.seq / (cfg.chunk or cfg.seq)  # unrolled chunks (attention: one graph)
        prev = [r for r in rows if r["rule"] == cfg.rule and r.get("mode") == "compile"
                and r["status"] == "ok"]
        if prev:
            p = prev[-1]
            return p["wall_s"] * max(1.0, units / (p["seq"] / (p["chunk"] or p["seq"])))
        return compile_guess + 5.0 * anchor_wall(cfg.rule) * cfg.seq / T0

    def ordered(cfgs: list[Config], by_cost: bool) -> list[Config]:
        lead = [c for r in ("sdpa_block", "titans") for c in cfgs if c.rule == r]
        rest = [c for c in cfgs if c not in lead]
        return lead + (sorted(rest, key=estimate) if by_cost else rest)

    def one(cfg: Config, required: bool) -> None:
        spec = by_name[cfg.rule]
        left = budget - (time.perf_counter() - t_start)
        est = estimate(cfg)
        if not required and est > left:
            row = {"rule": cfg.rule, "impl": cfg.impl, "mode": cfg.mode, "seq": cfg.seq,
                   "chunk": cfg.chunk, "status": "skipped", "what": spec.what,
                   "note": f"time budget: ~{est:.0f} s estimated, {max(left, 0):.0f} s left"}
            rows.append(row)
            log(row, cfg)
            return
        t0 = time.perf_counter()
        try:
            row = measure(spec, cfg, s, opts)
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001 -- one broken rule must not sink the run
            missing = isinstance(e, ModuleNotFoundError) and cfg.rule == "hope_selfmod" \
                and (e.name or "").startswith("nlc.primitives.selfmod")
            if verbose and not missing:
                traceback.print_exc()
            row = {"rule": cfg.rule, "impl": cfg.impl, "mode": cfg.mode, "seq": cfg.seq,
                   "chunk": cfg.chunk, "status": "missing" if missing else "error",
                   "note": _first_line(e)}
        row["what"] = spec.what
        row["wall_s"] = time.perf_counter() - t0
        row["estimate_s"] = est
        rows.append(row)
        log(row, cfg)

    for required, grp in plan(specs, s, quick, compile, compile_rules):
        for cfg in ordered(grp, not required):  # ordered once, at group start
            one(cfg, required)

    normalize(rows, s)
    rows.sort(key=lambda r: (RULES.index(r["rule"]), r["impl"] != "fast",
                             r.get("mode") != "eager", r["seq"], -(r.get("chunk") or 0)))
    res = {
        "meta": {
            "d": s.d, "heads": s.heads, "batch": s.batch,
            "seqs": list(s.seqs[:1] if quick else s.seqs),
            "chunks": list(s.chunks[-1:] if quick else s.chunks), "ref_seq": s.ref_seq,
            "ref_chunk": s.ref_chunk, "quick": quick, "tiny": tiny, "modes": modes,
            "compile_backend": backend, "budget_s": budget, "dtype": "float32",
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "timing": timing, "ref_timing": ref_timing, "rules": [sp.name for sp in specs],
            "compile_rules": compile_rules,
            "memory_method": "peak_mib: torch.profiler memory events, running max of the bytes "
                             "allocated during one fwd+bwd; saved_mib: saved_tensors_hooks, "
                             "distinct storages (eager)",
            "flops_method": "analytic matmul FLOPs (2mnk) of the fast algorithm per token, "
                            "forward; fwd+bwd = 3x",
            "reference_note": "reference forms measured at ref_seq and extrapolated per token "
                              "(a per-token loop's time per token is flat in T)",
        },
        "rows": rows,
    }
    res["targets"] = evaluate_targets(rows, specs, s, modes, quick)
    res["meta"]["total_s"] = time.perf_counter() - t_start
    res["meta"]["loadavg_1m_start_end"] = [load_start, os.getloadavg()[0]]
    text = render(res)
    res["table"] = text
    if verbose:
        print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res


def profile_one(name: str, seq: int, chunk: int, mode: str, impl: str, tiny: bool = False,
                top: int = 25) -> None:
    """Print torch.profiler's top ops (self CPU time) of one fwd+bwd of one row."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1 if tiny else 2)
    s = TINY if tiny else FULL
    spec = next(sp for sp in rule_specs() if sp.name == name)
    block = spec.build(s, chunk, impl == "fast")
    runner = torch.compile(block, dynamic=False) if mode == "compile" else block
    x = torch.randn(s.batch, seq, s.d, requires_grad=True)
    gout = torch.randn(s.batch, seq, s.d)
    _, fwd_bwd = _fwd_bwd_fns(runner, x, gout, list(block.parameters()))
    fwd_bwd()
    t0 = time.perf_counter()
    fwd_bwd()
    print(f"{name} {impl} {mode} T={seq} C={chunk}: fwd+bwd {time.perf_counter() - t0:.3f} s")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fwd_bwd()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seq 512 and chunk 64 only")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (tests)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--no-memory", action="store_true", help="skip memory measurement")
    ap.add_argument("--no-pair", action="store_true",
                    help="do not time the yardstick around every row (no load normalisation)")
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
    a = ap.parse_args(argv)
    if a.profile:
        profile_one(a.profile, a.seq, a.chunk, a.mode, a.impl, a.tiny)
        return
    res = run(quick=a.quick, tiny=a.tiny, out=a.out or None, compile=not a.no_compile,
              backend=a.backend, only=a.only, memory=not a.no_memory, budget_s=a.budget,
              compile_rules=a.compile_only, pair=not a.no_pair)
    sys.exit(1 if any(r.get("status") == "error" for r in res["rows"]) else 0)


if __name__ == "__main__":
    main()
