"""The benchmarked level blocks: shapes, the block modules, and one spec per rule.

Every block maps ``x (B, T, d) -> (B, T, d)`` as a level is used in a model (the layouts
are described in the ``benchmarks/primitives.py`` docstring): pre-norm, projections, the
rule (its chunked = fast form, or its per-token reference form), output projection,
residual. :func:`rule_specs` lists the rules in table order, each with its block builder
and its forward FLOPs per token (:mod:`benchmarks._flops`).

Notation: d width, H heads of D = d / H, T tokens, C chunk, G per-head scalar gates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._flops import (
    flops_attention, flops_cms, flops_deep, flops_matrix_rule, flops_memory_projections,
    flops_sdpa_block, flops_selfmod,
)
from benchmarks._shapes import Shape
from nlc.primitives import attention, cms, deep, matrix, selfmod
from nlc.primitives.layers import RMSNorm, l2_normalize


# =============================================================================== blocks
class MemoryBlock(nn.Module):
    """Pre-norm memory level block (module doc); ``rule(state, q, k, v, gates)`` gets
    heads-first tensors and the tuple of G gates (B, H, T) in (0, 1)."""

    def __init__(self, s: Shape, n_gates: int, rule: Callable, *,
                 deep_retention: Optional[str] = None):
        super().__init__()
        self.s, self.n_gates, self.rule = s, n_gates, rule
        self.norm = RMSNorm(s.d)
        self.proj = nn.Linear(s.d, 4 * s.d, bias=False)
        self.gates = nn.Linear(s.d, n_gates * s.heads)
        self.out = nn.Linear(s.d, s.d, bias=False)
        self.deep_retention = deep_retention
        if deep_retention is not None:
            g = torch.Generator().manual_seed(0)
            init = deep.init_deep_params(s.heads, [s.dh, s.deep_hidden, s.dh],
                                                  generator=g)
            self.deep = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        h = self.norm(x)
        q, k, v, g = self.proj(h).view(B, T, 4, s.heads, s.dh).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = l2_normalize(q), l2_normalize(k)
        gates = torch.sigmoid(self.gates(h)).view(B, T, self.n_gates, s.heads)
        gates = gates.permute(2, 0, 3, 1).unbind(0)
        if self.deep_retention is None:
            state = {"S": x.new_zeros(B, s.heads, s.dh, s.dh)}
        else:
            state = deep.init_deep_state(dict(self.deep.items()), B,
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
        self.fn = selfmod.selfmod_chunked if fast else selfmod.selfmod_reference
        self.norm = RMSNorm(s.d)
        self.proj = nn.Linear(s.d, 3 * s.d, bias=False)
        self.out = nn.Linear(s.d, s.d, bias=False)
        g = torch.Generator().manual_seed(0)
        init = selfmod.init_selfmod_params(s.heads, s.dh, s.deep_hidden, generator=g)
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in init.items()})

    def forward(self, x: Tensor) -> Tensor:
        s = self.s
        B, T, d = x.shape
        xin, q, g = self.proj(self.norm(x)).view(B, T, 3, s.heads, s.dh).permute(
            2, 0, 3, 1, 4).unbind(0)
        params = dict(self.params.items())
        state = selfmod.init_selfmod_state(params, B)
        o, _ = self.fn(state, l2_normalize(xin), {"q": l2_normalize(q)}, params=params,
                       chunk_memory=self.chunk, chunk_other=self.other)
        o = o.transpose(1, 2).reshape(B, T, d)
        return x + self.out(o * F.silu(g.transpose(1, 2).reshape(B, T, d)))


class AttentionBlock(nn.Module):
    def __init__(self, s: Shape, window: Optional[int], fast: bool):
        super().__init__()
        self.s, self.window = s, window
        self.fn = attention.softmax_attention if fast else attention.softmax_attention_reference
        self.norm = RMSNorm(s.d)
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
        self.norm1, self.norm2 = RMSNorm(s.d), RMSNorm(s.d)
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
        self.fn = cms.cms_chunked if fast else cms.cms_reference
        self.norm = RMSNorm(s.d)
        g = torch.Generator().manual_seed(0)
        self.levels = nn.ModuleList(
            nn.ParameterDict({k: nn.Parameter(v) for k, v in
                              cms.cms_init_params(s.d, s.cms_hidden, generator=g).items()})
            for _ in s.cms_periods)

    def forward(self, x: Tensor) -> Tensor:
        state = cms.cms_init_levels([dict(p.items()) for p in self.levels], x.shape[0])
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
        fn = getattr(matrix, fn_name + ("_chunked" if fast else "_reference"))

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
# cheapest first (as measured on 2 cores): the order of the rows that always run
USUAL_COST = ["sdpa_block", "titans", "softmax_full", "softmax_swa", "linear_attn", "gla",
              "omega_w4", "delta", "gated_delta", "dgd", "deep_huber", "deep_lp", "miras_lq",
              "cms_chain", "hope_selfmod"]
