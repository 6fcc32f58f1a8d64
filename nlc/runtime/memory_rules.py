"""Which primitive runs a memory level: the dispatch table of :class:`MemoryMixer`.

Notation::

    B batch   H heads   T tokens in the call   Dh head dim   L memory depth
    q, k, v (B, H, T, Dh); gates lr, momentum, retention (B, H, T)

:func:`plan_memory` maps a :class:`~nlc.ir.nodes.MemoryIR` to a :class:`Plan` (a pure
function of the IR: no torch), :func:`run_plan` calls the chosen chunked primitive.
The table, first matching row wins (``retained`` = a retention knob or ``weight_decay > 0``;
``guards`` = ``grad_clip`` or ``grad_normalize``; ``rk`` = ``retention_kind``):

=======  =========  ===========  ======  ==  ======  ================================  ======
memory   objective  rule         window  rk  guards  primitive                         state
=======  =========  ===========  ======  ==  ======  ================================  ======
matrix   dot        gd           1       l2  no      ``matrix.linear_attention``       S
                                                     (``gated_linear_attention`` if
                                                     retained)
matrix   l2         delta        1       l2  no      ``matrix.delta_rule``             S
                                                     (``gated_delta_rule`` if retained)
matrix   l2 | dot   dgd          1       l2  no      ``matrix.dgd``                    S
matrix   l2         gd           > 1     l2  no      ``matrix.omega_rule``, gamma =    S, omega
                                                     2 lr (see below)
any      l2 | lp |  gd |         any     any any     ``deep.deep_memory``              W/A, S
         huber |    momentum                         (matrix: depth 1, identity)
         dot
=======  =========  ===========  ======  ==  ======  ================================  ======

An ``output: newton_schulz`` (ATLAS' Muon inner optimizer, rules gd / momentum, l2
retention) or ``retention_kind: kl`` (Memora) runs
``deep.deep_memory_per_token_chunked`` instead of the deep memory (same state
layout; kl keeps logits ``A{l}``). A learned or data-dependent Huber ``delta`` reaches the deep
primitives per token, and an MLP memory's ``norm: layernorm`` as its (gamma, beta).

The rows are :func:`nlc.capabilities.memory_primitive` (which the validator reads too);
anything else, a ``period`` off the chunk grid, and ``self_target`` (HOPE's mixer), is refused at
validation, so reaching it here raises the table's bug error
(:func:`~nlc.capabilities.assert_capable`). Sources or knobs produced by another level make
the memory a HOPE one (:class:`~nlc.runtime.selfmod.SelfModifyingMemory`).

Scale conventions are the primitives': ``delta`` and ``dgd`` take the gradient of
``1/2 ||S k - v||^2`` (NL-arXiv Eqs. 65, 88); ``gd`` / ``momentum`` on the ``l2`` objective
take the gradient of ``||M(k) - v||^2`` (Titans Eq. 12, the deep primitive). The Omega route
is fed ``gamma_i = 2 lr_i`` so that a matrix memory with ``gd`` on ``l2`` means the same
thing with or without a window. One difference remains: the Omega primitive weights
token i's gradient by its *own* ``gamma_i`` in every window holding it, the deep primitive
by the *step's* ``lr_t`` (ATLAS); the two agree for constant and learned lr and differ for
data-dependent lr.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from ..capabilities import Refusal, assert_capable, chunk_frozen, memory_primitive, memory_refusals
from ..ir.nodes import MemoryIR
from ..ir.resolve import rule_case
from ..primitives import deep as D
from ..primitives import matrix as M

__all__ = ["Plan", "plan_memory", "run_plan", "GLOBAL_RETENTION"]

GLOBAL_RETENTION = {"l2": "decay", "lq": "lq", "elastic": "elastic", "kl": "kl"}
MATRIX_PRIMITIVES = ("linear_attention", "gated_linear_attention", "delta_rule",
                     "gated_delta_rule", "dgd", "omega_rule")


@dataclass(frozen=True)
class Plan:
    """``primitive``: a name of :data:`MATRIX_PRIMITIVES`, ``"deep_memory"`` or ``"deep_per_token"``;
    ``state``: ``"matrix"`` (key ``S``, plus ``omega_*`` for the Omega rule) or ``"deep"``
    (``W{l}`` / ``A{l}`` and momentum ``S{l}``, plus ``omega_*`` when window > 1);
    ``chunk_frozen``: the primitive takes gradients at the chunk-start state (DGD on l2, the
    Omega rule, the deep memory), so with chunk > 1 its results depend on where chunks start
    (the mixer then carries the chunk phase, :mod:`nlc.runtime.aligned`); the exact rules
    (linear attention, delta rules, DGD on dot) give the same results for every chunk."""

    primitive: str
    state: str
    depth: int
    dims: tuple[int, ...]  # [Dk, hidden..., Dv]
    activation: str
    residual: bool
    window: int
    chunk_frozen: bool


def combination(ir: MemoryIR) -> str:
    r, o = ir.rule, ir.objective
    guards = r.grad_clip is not None or r.grad_normalize
    return (f"memory={ir.memory}, objective={o.kind}, rule={r.kind}, window={o.window}, "
            f"retention_kind={r.retention_kind}" + (", grad guards" if guards else "")
            + (f", newton_schulz {r.ns_steps}" if r.ns_steps else ""))


def plan_memory(ir: MemoryIR) -> Plan:
    """The row of the dispatch table for ``ir`` (see the module docstring)."""
    r, o = ir.rule, ir.objective
    family = memory_primitive(rule_case(ir))
    refusals = [family] if isinstance(family, Refusal) else []
    frozen = isinstance(family, str) and chunk_frozen(family, o.kind)
    refusals += memory_refusals(ir.period, o.self_target, ir.init, coupled=False, chunk=ir.chunk,
                                frozen=frozen, read_after_write=ir.read_after_write,
                                reduce=r.reduce, norm=ir.norm)
    assert_capable(f"level {ir.name!r} ({ir.origin}): {combination(ir)}", refusals)
    retained = r.retention is not None or r.weight_decay > 0
    hd = ir.head_dim
    if ir.memory == "matrix":
        depth, dims, act, res = 1, (hd, hd), "identity", False
    else:
        depth = ir.depth
        dims = (hd,) + (ir.hidden,) * (depth - 1) + (hd,)
        act, res = ir.activation, ir.residual
    primitive, state = {
        "linear_attention": ("gated_linear_attention" if retained else "linear_attention", "matrix"),
        "delta_rule": ("gated_delta_rule" if retained else "delta_rule", "matrix"),
        "dgd": ("dgd", "matrix"),
        "omega_rule": ("omega_rule", "matrix"),
        "deep_memory": ("deep_memory", "deep"),
    }[family]
    if primitive == "deep_memory" and (r.ns_steps or r.retention_kind == "kl"):
        primitive = "deep_per_token"
    return Plan(primitive, state, depth, dims, act, res, o.window, frozen)


def run_plan(plan: Plan, ir: MemoryIR, state: dict[str, Tensor], q: Tensor, k: Tensor,
             v: Tensor, lr: Tensor, momentum: Optional[Tensor], retention: Optional[Tensor], *,
             delta: Union[float, Tensor] = 1.0, norm: Optional[tuple[Tensor, Tensor]] = None,
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Call the chunked primitive of ``plan``: ``(o (B, H, T, Dh), new memory state)``;
    ``delta`` the Huber threshold (a float or per token (B, H, T)), ``norm`` the output
    LayerNorm's (gamma, beta) (deep primitives only).

    Under autocast (``train.dtype: bfloat16``) the memory still runs in its state's dtype
    with autocast off: the inner recurrences accumulate over a whole sequence, and the
    hand-written backward of the deep kernels expects one dtype throughout."""
    if not torch.is_autocast_enabled(q.device.type):
        return _run_plan(plan, ir, state, q, k, v, lr, momentum, retention, delta, norm)
    dtype = next(iter(state.values())).dtype if state else torch.float32
    up = lambda t: t.to(dtype) if torch.is_tensor(t) else t  # noqa: E731
    with torch.autocast(q.device.type, enabled=False):
        return _run_plan(plan, ir, state, up(q), up(k), up(v), up(lr), up(momentum), up(retention),
                         up(delta), None if norm is None else (up(norm[0]), up(norm[1])))


def _run_plan(plan: Plan, ir: MemoryIR, state: dict[str, Tensor], q: Tensor, k: Tensor,
              v: Tensor, lr: Tensor, momentum: Optional[Tensor], retention: Optional[Tensor],
              delta: Union[float, Tensor], norm: Optional[tuple[Tensor, Tensor]],
              ) -> tuple[Tensor, dict[str, Tensor]]:
    kw = dict(chunk=ir.chunk, read_after_write=ir.read_after_write)
    name = plan.primitive
    if name == "linear_attention":
        return M.linear_attention_chunked(state, q, k, v, lr, **kw)
    if name == "gated_linear_attention":
        return M.gated_linear_attention_chunked(state, q, k, v, lr, retention, **kw)
    if name == "delta_rule":
        return M.delta_rule_chunked(state, q, k, v, lr, **kw)
    if name == "gated_delta_rule":
        return M.gated_delta_rule_chunked(state, q, k, v, lr, retention, **kw)
    if name == "dgd":
        return M.dgd_chunked(state, q, k, v, lr, retention, objective=ir.objective.kind, **kw)
    if name == "omega_rule":
        return M.omega_rule_chunked(state, q, k, v, 2.0 * lr, retention, window=plan.window,
                                    **kw)
    r, o = ir.rule, ir.objective
    common = dict(window=plan.window, activation=plan.activation, residual=plan.residual,
                  objective=o.kind, p=o.p, delta=delta, grad_clip=r.grad_clip,
                  grad_normalize=r.grad_normalize, global_retention=GLOBAL_RETENTION[r.retention_kind],
                  norm=norm, **kw)
    if name == "deep_per_token":
        return D.deep_memory_per_token_chunked(state, q, k, v, lr, momentum, retention, None,
                                               ns_steps=r.ns_steps, mass=r.mass, **common)
    return D.deep_memory_chunked(state, q, k, v, lr, momentum, retention, None, lq=r.q,
                                 elastic_lambda=r.shrink, **common)
