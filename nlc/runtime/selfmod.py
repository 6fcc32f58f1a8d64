"""SelfModifyingMemory: HOPE's self-modifying Titans as one mixer (NL-arXiv Eqs. 83-94).

Notation: B batch, T tokens in the call, D width, H heads, Dh = D / H, Dm memory hidden.

In the spec HOPE is five memory levels that read each other before their writes: the
main memory takes its keys from ``k``, values from ``v``, learning rate from ``eta`` and
retention from ``alpha``, and so does every component (each with its own self-generated
target). NL-arXiv Table 6's ablations change the roles: queries from a component (adaptive
q), a role from the input instead of a component (keys / values through a static projection,
lr / retention as knobs of the main memory: "w/o inner projection"), no retention ("w/o
weight decay"), rule gd instead of dgd, with or without a momentum; with no component left,
a memory that generates its own targets (``self_target``) from static sources. This mixer
maps the levels onto the roles of :mod:`nlc.primitives.selfmod` and asserts the capability
table's HOPE pattern (:func:`nlc.capabilities.hope_refusals`); validation refuses every other
coupling of memories with a message at the offending field, so an assertion here is a bug.

Per call::

    xc = Source_x(x)                          the components' input: x itself (project: false),
                                              per head, through one causal depthwise conv
                                              shared by the components (``conv: w``) and
                                              l2-normalised, as the spec says
    q, k, v = Sources(x)                      the static roles: projection, short conv, l2 norm
    eta, alpha, beta = Knob(x)                the static gates: the main memory's lr, retention
                                              and momentum knobs (a constant momentum 0 is none)
    roles = selfmod_roles(memories, xc, {q, k, v, eta, alpha}, beta)     pass 1
    o = selfmod_memory(memories, roles, beta)                              pass 2
    y  = W_o merge_heads(o)                   [* sigmoid(W_g x) with output_gate]

One conv for all components: they read the same input (validation makes their ``queries``
equal), so a conv per component would be four convolutions of the same x feeding memories
that the primitive stacks on one shared input; NL-arXiv §8.3's "local convolutions with
window 4" are Titans' convolutions after each static projection, and HOPE's components take
the place of those projections, so the conv sits on what they read.

State: the primitive's ``W1_<role>``, ``W2_<role>`` (B, H, ...) and, with a momentum,
``S1_<role>``, ``S2_<role>``; the short-convolution histories (B, w-1, D): ``conv_x`` of the
components' input, ``conv_q`` / ``conv_k`` / ``conv_v`` of the static roles. The two passes
of the primitive keep two chunk grids (:mod:`nlc.runtime.aligned`), so streaming equals the
whole sequence at any split:

* pass 1 (sources, knobs, components: every token's roles) on the ``chunk_other`` grid, when
  it is chunk-frozen (components, ``chunk_other > 1``): ``tail_x`` (B, r1, D), the inputs since
  the last ``chunk_other`` boundary; the components' weights and the conv histories hold the
  state at that boundary;
* pass 2 (the main memory) on the ``chunk_memory`` grid, when ``chunk_memory > 1``: ``tail``
  (B, r2, F), the packed roles (:meth:`SelfModifyingMemory._pack`: q, k, v, and the gates
  eta [, alpha] [, beta]) of the tokens since the last ``chunk_memory`` boundary; the main
  memory's weights hold the state there.

A call recomputes its r1 tail tokens in pass 1 and its r2 tail tokens in pass 2 only: the
roles of earlier tokens are kept, not recomputed (a token's roles depend on the components'
state at its chunk_other chunk start, never on the main memory). Under a teach loop of 16
tokens with HOPE's chunks 16 / 64, pass 1 runs each token once and the main memory alone
recomputes its chunk.

Parameters belong to the levels: each role's meta-learned initial weights sit in a
submodule whose ``level`` is that role's level (eta's and alpha's read-outs with them, as the
:class:`~nlc.runtime.knobs.Knob` of the main memory's lr / retention read from that level);
the static sources and knobs, the components' conv and the output projection belong to the
main memory.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..capabilities import assert_capable, component_roles, hope_refusals
from ..ir.nodes import KnobIR, MemoryIR
from ..ir.resolve import memory_facts
from ..primitives.selfmod import (COMPONENTS, MEMORY, init_selfmod_params, init_selfmod_state, selfmod_memory,
                                  selfmod_roles)
from .aligned import TAIL, aligned_forward, init_tail
from .knobs import Knob
from .projections import Source, Sources, merge_heads

__all__ = ["SelfModifyingMemory"]

VECTORS = ("q", "k", "v")  # the vector roles, in packing order
INPUT_TAIL = "tail_x"  # the components' inputs since the last chunk_other boundary (the grid of pass 1)
KNOBS = {"eta": "lr", "alpha": "retention"}  # gate role -> the main memory's knob it is
SOURCES = {"q": "queries", "k": "keys", "v": "values"}  # vector role -> the main memory's source


class _LevelParams(nn.Module):
    """The parameters of one level, as a module that reports the level it belongs to: its
    initial memory weights and, for eta and alpha, the knob read from its output."""

    def __init__(self, level: str, tensors: dict[str, Tensor], knob: Knob | None = None) -> None:
        super().__init__()
        self.level = level
        self.values = nn.ParameterDict({k: nn.Parameter(v) for k, v in tensors.items()})
        self.knob = knob


class SelfModifyingMemory(nn.Module):
    """``SelfModifyingMemory(ir, components, width)``: ``ir`` is the main memory, the
    ``components`` the levels it reads its roles from (none: all static)."""

    teach = False

    def __init__(self, ir: MemoryIR, components: dict[str, MemoryIR], width: int) -> None:
        super().__init__()
        self.level, self.heads, self.width = ir.name, ir.heads, width
        self.lifetime = ir.lifetime  # sequence | document | stream (nlc.runtime.lifetime)
        roles = _roles(ir, components)  # component role -> its level
        comps = tuple(r for r in COMPONENTS if r in roles)
        first = components[roles[comps[0]]] if comps else None
        self.chunk_memory = ir.chunk
        self.chunk_other = first.chunk if first is not None else ir.chunk
        self.phase = self.chunk_memory  # 1: the exact per-token rule, no phase to carry
        self.activation, self.precondition = ir.activation, ir.rule.kind == "dgd"
        self.normalize_k, self.normalize_q = ir.keys.l2_norm, ir.queries.l2_norm
        r = ir.rule
        init = init_selfmod_params(ir.heads, ir.head_dim, ir.hidden, components=comps)
        self.roles = nn.ModuleDict()
        for role in (*comps, MEMORY):
            tensors = {n: init[f"{n}_{role}"] for n in ("W1", "W2")}
            knob = None
            if role in KNOBS:  # the lr / retention knob read from this component's output
                knob = Knob(getattr(r, KNOBS[role]), ir.head_dim, ir.heads, role=KNOBS[role],
                            owner=roles[role])
                with torch.no_grad():  # the seeded read-out draw of init_selfmod_params
                    knob.weight.copy_(init[f"w_{role}"])
            self.roles[role] = _LevelParams(roles.get(role, ir.name), tensors, knob)
        static = {role: getattr(ir, field) for role, field in SOURCES.items() if role not in roles}
        self.sources = Sources(static, width, ir.heads, owner=ir.name) if static else None
        self.knobs = nn.ModuleDict({role: Knob(getattr(r, knob), width, ir.heads, role=knob, owner=ir.name)
                                    for role, knob in KNOBS.items()
                                    if role not in roles and getattr(r, knob) is not None})
        self.momentum = None if _no_momentum(r.momentum) else Knob(r.momentum, width, ir.heads,
                                                                   role="momentum", owner=ir.name)
        self.component_input = None if first is None else Source(first.queries, width, ir.heads,
                                                                  owner=first.name, role="queries")
        self.out = nn.Linear(width, width, bias=False)
        self.gate = nn.Linear(width, width, bias=False) if ir.output_gate else None
        # the per-token gates pass 2 reads (eta always; alpha with a retention; beta with a momentum)
        self._gates = tuple(g for g in ("eta", "alpha") if g in comps or g in self.knobs) + (
            ("beta",) if self.momentum is not None else ())

    def _params(self) -> dict[str, Tensor]:
        """The primitive's parameters: every role's initial weights and the read-outs."""
        out = {f"{name}_{role}": p for role, mod in self.roles.items() for name, p in mod.values.items()}
        for role in KNOBS:
            if role in self.roles:
                knob = self.roles[role].knob
                out[f"w_{role}"], out[f"b_{role}"] = knob.weight, knob.bias
        return out

    @property
    def eta_max(self) -> float:
        """The ceiling of a generated eta (the lr knob's max); unused when eta is static."""
        return self.roles["eta"].knob.upper if "eta" in self.roles else 1.0

    def init_state(self, batch: int) -> dict[str, Tensor]:
        state = init_selfmod_state(self._params(), batch, momentum=self.momentum is not None)
        kw = dict(dtype=self.out.weight.dtype, device=self.out.weight.device)
        if self.sources is not None:
            state.update({f"conv_{r}": c for r, c in self.sources.init_conv_states(batch, **kw).items()})
        conv = None if self.component_input is None else self.component_input.init_conv_state(batch, **kw)
        if conv is not None:
            state["conv_x"] = conv
        if self.chunk_memory > 1:
            state[TAIL] = init_tail(batch, self._role_width(), **kw)
        if self._components_chunked:
            state[INPUT_TAIL] = init_tail(batch, self.width, **kw)
        return state

    @property
    def _components_chunked(self) -> bool:
        """Whether pass 1 is chunk-frozen (components with chunk_other > 1): its own grid."""
        return self.component_input is not None and self.chunk_other > 1

    def _role_width(self) -> int:
        """F: the width of one token's packed roles (:meth:`_pack`)."""
        return 3 * self.width + len(self._gates) * self.heads

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Pass 1 (the roles) on the chunk_other grid, then pass 2 (the main memory) on the
        chunk_memory grid, each streaming exactly through its own anchor and tail (module doc)."""
        main_keys = {k for k in state if k.endswith(f"_{MEMORY}")} | {TAIL}
        front = {k: v for k, v in state.items() if k not in main_keys}
        main = {k: v for k, v in state.items() if k in main_keys}
        if self._components_chunked:
            roles, front = aligned_forward(self._roles, x, front, pos, self.chunk_other, owner=self.level,
                                           key=INPUT_TAIL)
        else:
            roles, front = self._roles(x, front, pos)
        if self.chunk_memory > 1:
            o, main = aligned_forward(self._memory, roles, main, pos, self.chunk_memory, owner=self.level)
        else:
            o, main = self._memory(roles, main, pos)
        y = self.out(o)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        return y, {**front, **main}

    def _roles(self, x: Tensor, state: dict[str, Tensor], pos: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Pass 1 over ``x`` from a chunk_other boundary: every token's roles, packed (B, T, F),
        and the new component memories and convolution histories."""
        given: dict[str, Tensor] = {}
        convs: dict[str, Tensor] = {}
        if self.sources is not None:
            given, new = self.sources.project(x, {r: state.get(f"conv_{r}") for r in self.sources.irs})
            convs.update({f"conv_{r}": c for r, c in new.items()})
        for role, knob in self.knobs.items():
            given[role] = knob(x, pos)[0]
        xc = None
        if self.component_input is not None:
            xc, conv = self.component_input(x, state.get("conv_x"))
            if conv is not None:
                convs["conv_x"] = conv
        B, T = x.shape[:2]
        beta = None if self.momentum is None else self.momentum(x, pos)[0].expand(B, self.heads, T)
        memories = {k: v for k, v in state.items() if not k.startswith("conv_")}
        roles, memories = selfmod_roles(
            memories, xc, given, params=self._params(), beta=beta, precondition=self.precondition,
            chunk_other=self.chunk_other, eta_max=self.eta_max, normalize_k=self.normalize_k,
            normalize_q=self.normalize_q, activation=self.activation)
        if beta is not None:
            roles["beta"] = beta
        return self._pack(roles), {**memories, **convs}

    def _memory(self, packed: Tensor, state: dict[str, Tensor], pos: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Pass 2 over packed roles from a chunk_memory boundary: the reads merged over the
        heads (B, T, D) and the main memory's new weights."""
        roles = self._unpack(packed)
        beta = roles.pop("beta", None)
        o, memory = selfmod_memory(state, roles, beta=beta, precondition=self.precondition,
                                   chunk_memory=self.chunk_memory, activation=self.activation)
        return merge_heads(o), memory

    def _pack(self, roles: dict[str, Tensor]) -> Tensor:
        """q, k, v (B, H, T, Dh) and the gates (B, H, T) as one (B, T, F) tensor: the form
        the tail of the chunk_memory grid keeps between calls."""
        return torch.cat([merge_heads(roles[r]) for r in VECTORS] + [roles[g].transpose(1, 2) for g in self._gates], -1)

    def _unpack(self, packed: Tensor) -> dict[str, Tensor]:
        D, H = self.width, self.heads
        parts = packed.split([D] * len(VECTORS) + [H] * len(self._gates), -1)
        roles = {r: t.unflatten(-1, (H, -1)).transpose(1, 2) for r, t in zip(VECTORS, parts)}
        roles.update({g: t.transpose(1, 2) for g, t in zip(self._gates, parts[len(VECTORS):])})
        return roles


def _no_momentum(knob: KnobIR | None) -> bool:
    """No momentum, or a constant 0 (which keeps no buffers: exactly the rule without one)."""
    return knob is None or (knob.kind == "constant" and knob.init == 0.0)


def _roles(ir: MemoryIR, components: dict[str, MemoryIR]) -> dict[str, str]:
    """Map the component levels onto HOPE's roles; anything but that pattern is refused at
    validation (:func:`nlc.capabilities.hope_refusals`), so a refusal here is a bug."""
    levels = {name: memory_facts(level) for name, level in {ir.name: ir, **components}.items()}
    refusals = [r for name, r in hope_refusals(levels[ir.name], levels)]
    assert_capable(f"level {ir.name!r} ({ir.origin}), a self-modifying (HOPE) memory", refusals)
    return component_roles(levels[ir.name])
