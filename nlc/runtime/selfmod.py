"""SelfModifyingMemory: HOPE's self-modifying Titans as one mixer (NL-arXiv Eqs. 83-94).

Notation: B batch, T tokens in the call, D width, H heads, Dh = D / H, Dm memory hidden.

In the spec HOPE is five memory levels that read each other before their writes: the
main memory takes its keys from ``k``, values from ``v``, learning rate from ``eta`` and
retention from ``alpha``, and so does every component (each with its own self-generated
target). This mixer recognises that pattern, maps the levels onto the roles of
:mod:`nlc.primitives.selfmod` and asserts the capability table's HOPE pattern
(:func:`nlc.capabilities.hope_refusals`); validation refuses every other coupling of
memories with a message at the offending field, so an assertion here is a bug.

Per call::

    xh = Source_x(x)                          the components' input: x itself (project: false),
                                              per head, l2-normalised if the spec says so
    q  = Source_q(x)                          static projection, short conv, l2 norm
    o, memories = selfmod_chunked(memories, xh, q, ...)
    y  = W_o merge_heads(o)                   [* sigmoid(W_g x) with output_gate]

State: the primitive's ``W1_<role>``, ``W2_<role>`` (B, H, ...), ``conv_q`` (B, w-1, D) with a
query convolution, and, when ``chunk_memory > 1`` (the rule is chunk-frozen), ``tail``
(B, r, D): the inputs since the last ``chunk_memory`` boundary (a multiple of
``chunk_other``, so a boundary of both grids). The other keys then hold the state at that
boundary and every call recomputes from it (:mod:`nlc.runtime.aligned`): streaming equals
the whole sequence at any split.

Parameters belong to the levels: each role's meta-learned initial weights sit in a
submodule whose ``level`` is that role's level (eta's and alpha's read-outs with them);
the query source and output projection belong to the main memory.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..capabilities import assert_capable, hope_refusals
from ..ir.nodes import MemoryIR
from ..ir.resolve import memory_facts
from ..primitives.selfmod import ROLES, init_selfmod_params, init_selfmod_state, selfmod_chunked
from .aligned import TAIL, aligned_forward, init_tail
from .projections import Source, merge_heads

__all__ = ["SelfModifyingMemory"]


class _LevelParams(nn.Module):
    """The parameters of one level, as a module that reports the level it belongs to."""

    def __init__(self, level: str, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.level = level
        self.values = nn.ParameterDict({k: nn.Parameter(v) for k, v in tensors.items()})


class SelfModifyingMemory(nn.Module):
    """``SelfModifyingMemory(ir, components, width)``: ``ir`` is the main memory, the
    ``components`` the levels it reads its keys, values and gates from."""

    teach = False

    def __init__(self, ir: MemoryIR, components: dict[str, MemoryIR], width: int) -> None:
        super().__init__()
        self.level, self.heads, self.width = ir.name, ir.heads, width
        self.lifetime = ir.lifetime  # sequence | stream (nlc.runtime.lifetime)
        roles = _roles(ir, components)
        self.chunk_memory, self.chunk_other = ir.chunk, components[roles["k"]].chunk
        self.phase = self.chunk_memory  # 1: the exact per-token rule, no phase to carry
        self.eta_max, self.activation = ir.rule.lr.max, ir.activation
        self.normalize_k = ir.keys.l2_norm
        init = init_selfmod_params(
            ir.heads, ir.head_dim, ir.hidden,
            eta_bias=_logit(ir.rule.lr.init / ir.rule.lr.max), alpha_bias=_logit(ir.rule.retention.init),
        )
        self.roles = nn.ModuleDict()
        for role in ROLES:
            tensors = {n: init[f"{n}_{role}"] for n in ("W1", "W2")}
            if role in ("eta", "alpha"):
                tensors.update({f"w_{role}": init[f"w_{role}"], f"b_{role}": init[f"b_{role}"]})
            self.roles[role] = _LevelParams(roles[role], tensors)
        self.query = Source(ir.queries, width, ir.heads, owner=ir.name, role="queries")
        first = components[roles["k"]]
        self.component_input = Source(first.queries, width, ir.heads, owner=first.name, role="queries")
        self.out = nn.Linear(width, width, bias=False)
        self.gate = nn.Linear(width, width, bias=False) if ir.output_gate else None

    def _params(self) -> dict[str, Tensor]:
        return {f"{name}_{role}": p for role, mod in self.roles.items() for name, p in mod.values.items()
                if name in ("W1", "W2")} | {
            name: p for role in ("eta", "alpha") for name, p in self.roles[role].values.items()
            if name.startswith(("w_", "b_"))}

    def init_state(self, batch: int) -> dict[str, Tensor]:
        state = init_selfmod_state(self._params(), batch)
        kw = dict(dtype=self.out.weight.dtype, device=self.out.weight.device)
        conv = self.query.init_conv_state(batch, **kw)
        if conv is not None:
            state["conv_q"] = conv
        if self.phase > 1:
            state[TAIL] = init_tail(batch, self.width, **kw)
        return state

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int) -> tuple[Tensor, dict[str, Tensor]]:
        if self.phase == 1:
            return self.step(x, state, pos)
        return aligned_forward(self.step, x, state, pos, self.phase, owner=self.level)

    def step(self, x: Tensor, state: dict[str, Tensor], pos: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One primitive call over ``x``, both chunk grids starting at its first token."""
        q, conv = self.query(x, state.get("conv_q"))
        memories = {k: v for k, v in state.items() if k != "conv_q"}
        xh, _ = self.component_input(x)
        o, memories = selfmod_chunked(
            memories, xh, q, params=self._params(),
            chunk_memory=self.chunk_memory, chunk_other=self.chunk_other, eta_max=self.eta_max,
            normalize_k=self.normalize_k, activation=self.activation,
        )
        y = self.out(merge_heads(o))
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        if conv is not None:
            memories["conv_q"] = conv
        return y, memories


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _roles(ir: MemoryIR, components: dict[str, MemoryIR]) -> dict[str, str]:
    """Map the levels onto HOPE's roles; anything but that pattern is refused at validation
    (:func:`nlc.capabilities.hope_refusals`), so a refusal here is a bug."""
    levels = {name: memory_facts(level) for name, level in {ir.name: ir, **components}.items()}
    refusals = [r for name, r in hope_refusals(levels[ir.name], levels)]
    assert_capable(f"level {ir.name!r} ({ir.origin}), a self-modifying (HOPE) memory", refusals)
    return {"k": ir.keys.source, "v": ir.values.source, "eta": ir.rule.lr.source,
            "alpha": ir.rule.retention.source, "memory": ir.name}
