"""MemoryMixer: a memory level whose keys, values, queries and knobs come from its input.

Notation::

    B batch   T tokens in the call   D width   H heads   Dh = D / H   L memory depth
    pos  tokens the state consumed before this call

Per call (``forward(x (B, T, D), state, pos)``)::

    q, k, v = Sources(x)                                      (B, H, T, Dh)   projections.py
                                      (one fused GEMM, one depthwise conv per window)
    q, k = phi(q), phi(k)             with ``features`` (ATLAS' polynomial map, one map for
                                      both; feature_maps.py); :meth:`retrieve` maps its q too
    lr, momentum, retention, delta = Knob(x) ...              (B, H, T)       knobs.py
    retention <- retention * (1 - weight_decay)               (a constant factor, if any)
    lr <- lr / chunk                                          (reduce: mean, TTT's mini-batch GD)
    o, memory = primitive(memory, q, k, v, gates)             memory_rules.py (dispatch)
    y = W_o merge_heads(o)            [* sigmoid(W_g x) with output_gate: Titans §4.4]

A level with ``period: P`` > 1 ticks after every P-th token of its stream (the update
schedule, :mod:`nlc.schedule`; docs/design.md, "Level semantics"): token t reads the memory
of the last tick at or before ``P floor(t / P)``, and at each tick the rule writes the P
tokens since the previous one in one primitive call (:meth:`MemoryMixer.period_step`), so
the memory at the ticks is the one the rule reaches with period 1 and only the reads lag.
A chunk-frozen rule with chunk P takes one gradient step per tick at the last tick's state
(mini-batch GD over the period); validation makes the chunk divide P. Cost: one primitive
call per tick (a Python loop over T / P ticks, unrolled by ``torch.compile``).

State layout (all batch-leading; :meth:`MemoryMixer.init_state`):

* the memory, keys of the primitive: ``S`` (B, H, Dh, Dh) for the matrix primitives;
  ``W1..WL`` (``A1..AL`` for lq retention) and momentum buffers ``S1..SL`` for the deep
  primitive (``W_l`` (B, H, D_l, D_{l-1})); ``omega_k`` (B, H, c-1, Dh), ``omega_v``,
  ``omega_gamma`` (B, H, c-1) with an Omega window c > 1;
* ``conv_q`` / ``conv_k`` / ``conv_v`` (B, w-1, D): short-convolution histories;
* ``carry_lr`` / ``carry_momentum`` / ``carry_retention`` (B, H): per-chunk knobs;
* ``retrieve_conv_q`` (B, w-1, D), only with ``init_state(batch, retrieve=True)``: the
  query-convolution history of :meth:`MemoryMixer.retrieve`'s own input stream (MAC reads
  with the segment input and writes with the attention output: two streams);
* ``tail`` (B, r, D), only when the rule is chunk-frozen with chunk C > 1 or the period
  P > 1 (``phase = lcm(C, P)``): the inputs since the last boundary, r = pos mod phase.
  Every other key then holds the *anchor*, the state at that boundary, and each call
  recomputes from it (:mod:`nlc.runtime.aligned`), so streaming equals the whole sequence at any split;
  :meth:`MemoryMixer.memory_at` gives the memory as it stands after the tail.

Initial memory (``ir.init``): ``learned`` -> ``nn.Parameter`` (H, ...) expanded over the
batch in ``init_state`` (gradients reach it through the unrolled updates); a matrix memory
starts at zero, an MLP memory at ``init_deep_params`` (N(0, 1/fan_in)); ``zero`` -> zeros.
``from`` / ``copy`` (cross-level initial states) are refused at validation
(:mod:`nlc.capabilities`); reaching them here is a bug.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..capabilities import TABLE
from ..ir.nodes import MemoryIR
from ..primitives.deep import init_deep_params, init_deep_state, lq_norm_scale, mlp_forward, simplex
from ..primitives.feature_maps import PolynomialFeatures
from .aligned import TAIL, aligned_forward, init_tail, materialise
from .knobs import Knob
from .memory_rules import GLOBAL_RETENTION, Plan, plan_memory, run_plan
from .projections import Sources, merge_heads

__all__ = ["MemoryMixer"]

SOURCES = (("q", "queries"), ("k", "keys"), ("v", "values"))
KNOBS = ("lr", "momentum", "retention", "delta")  # delta: a learned / data-dependent Huber threshold


class MemoryMixer(nn.Module):
    """A memory level with static sources (see the module docstring).

    ``MemoryMixer(ir, width)``; ``init_state(batch, *, retrieve=False)``;
    ``forward(x, state, pos) -> (y, state)``; ``retrieve(x, state) -> (h, state)``.
    """

    teach = False

    def __init__(self, ir: MemoryIR, width: int) -> None:
        super().__init__()
        self.level = ir.name
        self.ir, self.width, self.heads, self.head_dim = ir, width, ir.heads, ir.head_dim
        self.lifetime = ir.lifetime  # sequence | document | stream (nlc.runtime.lifetime)
        if ir.heads * ir.head_dim != width:
            raise ValueError(f"level {ir.name!r}: heads {ir.heads} x head_dim {ir.head_dim} "
                             f"!= width {width}")
        self.plan: Plan = plan_memory(ir)
        self.period = ir.period  # the level ticks after every period-th token (nlc.schedule)
        # the grid a call must continue on (1: the rule streams exactly at any split); validation
        # makes a chunk-frozen rule's chunk divide the period
        self.phase = math.lcm(ir.chunk if self.plan.chunk_frozen and ir.chunk > 1 else 1, self.period)
        self._advance = self.step if self.period == 1 else self.period_step
        # a boundary map (lq / elastic) read after write: see nlc.runtime.aligned
        self.pad_end = ir.read_after_write and ir.rule.retention_kind in ("lq", "elastic")
        if ir.init not in ("learned", "zero"):  # copy: refused by plan_memory; from: rule 9
            raise RuntimeError(f"level {ir.name!r}: init {ir.init!r} reached MemoryMixer, but "
                               f"validation refuses it ({TABLE}, design rule 9): a bug")
        self.sources = Sources({short: getattr(ir, field) for short, field in SOURCES},
                               width, ir.heads, owner=ir.name)
        # the feature map of q and k (its coefficients belong to this level, like the sources)
        self.features = (PolynomialFeatures(ir.heads, ir.features.degree)
                         if ir.features is not None else None)
        r = ir.rule
        self.lr = Knob(r.lr, width, ir.heads, role="lr", chunk=ir.chunk, owner=ir.name)
        self.momentum = (Knob(r.momentum, width, ir.heads, role="momentum", chunk=ir.chunk,
                              owner=ir.name) if r.momentum is not None else None)
        self.retention = (Knob(r.retention, width, ir.heads, role="retention", chunk=ir.chunk,
                               owner=ir.name) if r.retention is not None else None)
        d = ir.objective.delta
        self.delta = (Knob(d, width, ir.heads, role="delta", chunk=ir.chunk, owner=ir.name)
                      if d.kind != "constant" else None)
        for name in KNOBS:
            if getattr(self, name) is not None and getattr(self, name).from_level:
                source = (d if name == "delta" else getattr(r, name)).source
                raise RuntimeError(f"level {ir.name!r}: its {name} knob comes from level "
                                   f"{source!r}: a knob produced by another level makes "
                                   f"the memory a HOPE one ({TABLE}), never a MemoryMixer: a bug")
        self.decay = 1.0 - float(r.weight_decay)  # extra constant retention factor
        # reduce: mean (TTT) steps by the chunk's mean gradient: every token's lr over the chunk
        self.lr_scale = 1.0 / ir.chunk if r.reduce == "mean" else 1.0
        # TTT's LayerNorm of the memory output: a gain and a bias per head (slow parameters)
        self.norm = nn.ParameterDict()
        if ir.norm == "layernorm":
            dv = self.plan.dims[-1]
            self.norm["gamma"] = nn.Parameter(torch.ones(ir.heads, dv))
            self.norm["beta"] = nn.Parameter(torch.zeros(ir.heads, dv))
        self.out = nn.Linear(width, width, bias=False)
        self.gate = nn.Linear(width, width, bias=False) if ir.output_gate else None
        # the meta-learned initial memory, without the batch dim
        self.state0 = nn.ParameterDict()
        initial = self._initial_memory()
        self._shapes = {key: tuple(t.shape) for key, t in initial.items()}
        if ir.init == "learned":
            for key, t in initial.items():
                self.state0[key] = nn.Parameter(t)
        self.memory_keys = tuple(self._memory_state(1, torch.float32, None))
        # the keys retrieve() reads: S, or the weights W{l} / accumulators A{l}
        self.read_keys = tuple(k for k in self.memory_keys if k == "S" or k[0] in "WA")

    # ---------------------------------------------------------------------------- state
    def _initial_memory(self) -> dict[str, Tensor]:
        """M_0 without the batch dim: ``S`` (matrix primitives) or ``W1..WL`` (deep)."""
        p, H, hd = self.plan, self.heads, self.head_dim
        if p.state == "matrix":
            return {"S": torch.zeros(H, hd, hd)}
        if self.ir.memory == "matrix":
            return {"W1": torch.zeros(H, hd, hd)}
        return init_deep_params(H, list(p.dims))

    def _memory_state(self, batch: int, dtype, device) -> dict[str, Tensor]:
        if len(self.state0):
            params = {k: v for k, v in self.state0.items()}
        else:
            params = {k: torch.zeros(shape, dtype=dtype, device=device)
                      for k, shape in self._shapes.items()}
        p = self.plan
        if p.state == "deep":
            kind = GLOBAL_RETENTION[self.ir.rule.retention_kind]
            return init_deep_state(params, batch, window=p.window, global_retention=kind)
        S = params["S"]
        st = {"S": S.unsqueeze(0).expand(batch, *S.shape)}
        if p.primitive == "omega_rule":
            w, hd = p.window - 1, self.head_dim
            st["omega_k"] = S.new_zeros(batch, self.heads, w, hd)
            st["omega_v"] = S.new_zeros(batch, self.heads, w, hd)
            st["omega_gamma"] = S.new_zeros(batch, self.heads, w)
        return st

    def init_state(self, batch: int, *, retrieve: bool = False) -> dict[str, Tensor]:
        """Fresh per-sequence state (layout in the module docstring)."""
        w = self.out.weight
        kw = dict(dtype=w.dtype, device=w.device)
        state = self._memory_state(batch, w.dtype, w.device)
        convs = self.sources.init_conv_states(batch, **kw)
        state.update({f"conv_{short}": conv for short, conv in convs.items()})
        for name in KNOBS:
            knob = getattr(self, name)
            carry = None if knob is None else knob.init_carry(batch, **kw)
            if carry is not None:
                state[f"carry_{name}"] = carry
        if retrieve and "q" in convs:
            state["retrieve_conv_q"] = torch.zeros_like(convs["q"])
        if self.phase > 1:
            state[TAIL] = init_tail(batch, self.width, **kw)
        return state

    # -------------------------------------------------------------------------- forward
    def gates(self, x: Tensor, state: dict[str, Tensor], pos: int
              ) -> tuple[dict[str, Tensor | None], dict[str, Tensor]]:
        """The gates handed to the primitive (weight decay folded into ``retention``)
        and the knobs' new carries."""
        gates: dict[str, Tensor | None] = {}
        carries: dict[str, Tensor] = {}
        for name in KNOBS:
            knob = getattr(self, name)
            if knob is None:
                gates[name] = None
                continue
            g, carry = knob(x, pos, state.get(f"carry_{name}"))
            gates[name] = g
            if carry is not None:
                carries[f"carry_{name}"] = carry
        if self.decay != 1.0:
            ret = gates["retention"]
            B, T = x.shape[:2]
            gates["retention"] = (x.new_full((B, self.heads, T), self.decay) if ret is None
                                  else ret * self.decay)
        if self.lr_scale != 1.0:
            gates["lr"] = gates["lr"] * self.lr_scale
        return gates, carries

    def rule_extras(self, gates: dict[str, Tensor | None]) -> dict[str, object]:
        """The primitive's keyword arguments beyond the gates: the Huber threshold (a per-token
        tensor from its knob, else the spec's constant) and the output LayerNorm."""
        delta = gates["delta"] if gates["delta"] is not None else self.ir.objective.delta.init
        norm = (self.norm["gamma"], self.norm["beta"]) if len(self.norm) else None
        return {"delta": delta, "norm": norm}

    def project(self, x: Tensor, state: dict[str, Tensor]
                ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """q, k, v (B, H, T, Dh), q and k through the feature map, and the new convolution states."""
        out, convs = self.sources.project(
            x, {short: state.get(f"conv_{short}") for short, _ in SOURCES})
        if self.features is not None:
            out = {**out, "q": self.features(out["q"]), "k": self.features(out["k"])}
        return out, {f"conv_{short}": conv for short, conv in convs.items()}

    def output(self, o: Tensor, x: Tensor) -> Tensor:
        """``W_o merge_heads(o)``, gated by ``sigmoid(W_g x)`` with ``output_gate``."""
        y = self.out(merge_heads(o))
        return y if self.gate is None else y * torch.sigmoid(self.gate(x))

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int = 0
                ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.phase == 1:
            return self.step(x, state, pos)
        return aligned_forward(self._advance, x, state, pos, self.phase, pad_end=self.pad_end,
                               owner=self.level)

    def memory_at(self, state: dict[str, Tensor], pos: int) -> dict[str, Tensor]:
        """The memory keys (``memory_keys``) as they stand after ``pos`` tokens: the
        anchor advanced over the tail when the mixer carries a chunk phase."""
        if self.phase > 1:
            state = materialise(self._advance, state, pos, self.phase, owner=self.level)
        return {key: state[key] for key in self.memory_keys}

    def step(self, x: Tensor, state: dict[str, Tensor], pos: int
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """One primitive call over ``x``, its chunk grid starting at ``x``'s first token
        (the whole forward of an exact rule; from a chunk boundary for a chunk-frozen one)."""
        qkv, convs = self.project(x, state)
        gates, carries = self.gates(x, state, pos)
        memory = {key: state[key] for key in self.memory_keys}
        o, memory = run_plan(self.plan, self.ir, memory, qkv["q"], qkv["k"], qkv["v"],
                             gates["lr"], gates["momentum"], gates["retention"], **self.rule_extras(gates))
        new_state = dict(state)
        new_state.update(memory)
        new_state.update(convs)
        new_state.update(carries)
        return self.output(o, x), new_state

    def period_step(self, x: Tensor, state: dict[str, Tensor], pos: int
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The rule on its ticks (``period`` C > 1, module docstring), ``x`` starting on a tick:
        each run of C tokens reads the memory of the last tick, then the rule writes the C
        tokens in one primitive call (the state the rule reaches at period 1); a trailing
        partial run only reads (:func:`~nlc.runtime.aligned.aligned_forward` keeps it in the tail)."""
        qkv, convs = self.project(x, state)
        gates, carries = self.gates(x, state, pos)
        memory = {key: state[key] for key in self.memory_keys}
        C, T = self.period, x.shape[1]
        outs = []
        for a in range(0, T, C):
            part = lambda t: None if t is None else t[:, :, a:a + C]  # noqa: E731
            outs.append(self.read_memory(memory, part(qkv["q"])))
            if a + C <= T:
                extras = self.rule_extras({**gates, "delta": part(gates["delta"])})
                _, memory = run_plan(self.plan, self.ir, memory, part(qkv["q"]), part(qkv["k"]),
                                     part(qkv["v"]), part(gates["lr"]), part(gates["momentum"]),
                                     part(gates["retention"]), **extras)
        new_state = dict(state)
        new_state.update(memory)
        new_state.update(convs)
        new_state.update(carries)
        return self.output(torch.cat(outs, 2), x), new_state

    def read_memory(self, memory: dict[str, Tensor], q: Tensor) -> Tensor:
        """``M(q)`` (B, H, T, Dh) with the memory in ``memory``, no write: the read of
        :func:`nlc.primitives.deep.mlp_forward` (a matrix memory is a depth-1 identity
        MLP; lq retention reads ``A / ||A||_q^{q-2}``)."""
        p, r = self.plan, self.ir.rule
        if p.state == "matrix":
            weights = [memory["S"]]
        elif r.retention_kind == "kl":
            weights = [simplex(memory[f"A{l}"], r.mass) for l in range(1, p.depth + 1)]
        elif "A1" in memory:
            weights = [memory[f"A{l}"] / lq_norm_scale(memory[f"A{l}"], r.q)
                       for l in range(1, p.depth + 1)]
        else:
            weights = [memory[f"W{l}"] for l in range(1, p.depth + 1)]
        norm = tuple(t[:, None, :] for t in (self.norm["gamma"], self.norm["beta"])) if len(self.norm) else None
        return mlp_forward(weights, q, p.activation, p.residual, norm)

    def retrieve(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Read the memory in ``state`` with queries from ``x``, without writing.

        ``h = output(M(q), x)`` with ``M`` the current memory (for every token, the state
        as it is in ``state``: Titans MAC's ``h_t = M*_{t-1}(q_t)``), read by
        :meth:`read_memory`. The query convolution runs on its own history
        ``retrieve_conv_q`` (see ``init_state(retrieve=True)``), and the feature map applies as
        in :meth:`project`; the returned state differs
        from ``state`` only there.
        """
        q, conv = self.sources.read("q", x, state.get("retrieve_conv_q"))
        o = self.read_memory(state, q if self.features is None else self.features(q))
        new_state = dict(state)
        if conv is not None:
            new_state["retrieve_conv_q"] = conv
        return self.output(o, x), new_state

    def extra_repr(self) -> str:
        p = self.plan
        return (f"level={self.level!r}, primitive={p.primitive}, heads={self.heads}, "
                f"head_dim={self.head_dim}, chunk={self.ir.chunk}, period={self.period}, init={self.ir.init}")
