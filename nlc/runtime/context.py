"""Context: Titans MAC (memory as context), a layer of one attention and one memory level.

Notation::

    B batch   T tokens in the call   D width   H heads   d = D / H   N_p persistent tokens
    S segment length (default: the memory's chunk)   s_i the i-th token of a segment
    M the memory (a :class:`~nlc.runtime.memory.MemoryMixer`)   pos tokens consumed before

Titans §4.1 (MAC), per segment ``X`` (tokens at absolute positions
``[jS, (j+1)S)``; the input is first normalised, ``u = norm(x)``)::

    h_i = M*_{j}(q_i)                 retrieve with the memory as it was at the segment start,
                                      no write (MemoryMixer.retrieve; q from u, Titans Eq. 21)
    y   = W_o Attn([p_1..p_Np] || h || X)                                   (Titans Eqs. 19, 22-23)
    z, M = M(y)                       write the memory with y (Titans Eq. 24), read per its read order
    o   = y * sigmoid(z)              Titans' y (x) M*(y) (Titans Eq. 25) as a sigmoid gate
    out = x + o  (residual)  or  o

Attention: queries ``s_i`` see every persistent token (position-free: never rotated and
scored with the unrotated query, as :class:`nlc.primitives.attention.SoftmaxAttention`
does), and ``h_j``, ``s_j`` for ``j <= i`` in the same segment (full causal attention
within the segment; with ``window w`` only ``i - w < j``). Titans writes the attended
sequence as ``p || h || X``; reading *every* ``h_j`` from ``s_i`` would let token ``i`` see
tokens after it (``h_j`` is computed from ``x_j``), so ``h_j`` is visible from ``s_j`` on:
the call interleaves ``h_0, s_0, h_1, s_1, ...`` and runs
:func:`nlc.primitives.attention.softmax_attention` with the persistent tokens as
``prefix_k / prefix_v`` and a causal mask (window ``2w``); the outputs at the ``h``
positions are dropped. ``h_i`` and ``s_i`` share RoPE position ``pos + i``.

The attention level's projections (``W_q, W_k, W_v, W_o``: ``D -> H d``, no bias, ``W_q, W_k,
W_v`` one :class:`~nlc.runtime.attention.QKVProjection`: one GEMM for the segment's q, k, v
and one for the retrieved tokens' k, v; with
``qk_norm`` an RMS-normalised q / k with learned gains) are those of the
``AttentionMixer`` the generated code passes (only its parameters are used: its forward
cannot interleave), or of a :class:`MACAttention` built here from an
:class:`~nlc.ir.nodes.AttentionIR` (same parameters and conventions); either way the
module's ``level`` is the attention level. The persistent tokens are a
:class:`MACPersistent` whose ``level`` is the persistent level. The layer norm belongs to
no level (a model parameter, like the other layer kinds).

State (flat ``dict[str, Tensor]``):

* ``mem.<key>``: the memory's state (``MemoryMixer.init_state(batch, retrieve=True)``);
* ``frozen.<key>`` for ``key`` in ``memory.read_keys``: the memory at the start of the
  current segment (what ``h`` reads);
* ``seg_k``, ``seg_v`` ``(B, H, L, d)``: the interleaved keys / values of the current
  segment seen so far (``L = 2 (pos mod S)``, or ``2w - 1`` at most with a window).

Streaming: segments sit on an absolute grid (multiples of ``S``), and a call that starts
inside a segment continues it from ``frozen`` / ``seg_*``, so the attention part streams at
any split. The memory is written once per (segment, call) piece; a chunk-frozen memory keeps
its own chunk grid absolute (``mem.tail``, :mod:`nlc.runtime.aligned`) and ``frozen`` is the
memory as it stands at the segment start (:meth:`MemoryMixer.memory_at`, the anchor itself
when ``S`` is a multiple of the chunk), so the whole layer streams exactly at any split.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..ir.nodes import AttentionIR, MemoryIR, PersistentIR
from ..primitives.attention import softmax_attention
from ..primitives.layers import RMSNorm, apply_rope, rms_norm
from .attention import QKVProjection
from .memory import MemoryMixer
from .projections import merge_heads, split_heads

__all__ = ["Context", "MACAttention", "MACPersistent", "mac_attention"]


class MACPersistent(nn.Module):
    """``N_p`` learned tokens ``(N_p, D)`` of a persistent level (Titans Eq. 19)."""

    def __init__(self, ir: PersistentIR, width: int) -> None:
        super().__init__()
        self.level = ir.name
        self.tokens = nn.Parameter(torch.randn(ir.tokens, width) * width ** -0.5)


ATTENTION_ATTRS = ("level", "heads", "head_dim", "window", "rope", "qkv", "o_proj", "q_gain",
                   "k_gain")


class MACAttention(nn.Module):
    """The attention level's projections, built from its :class:`AttentionIR` (the same
    parameters and conventions as :class:`nlc.runtime.attention.AttentionMixer`)."""

    def __init__(self, ir: AttentionIR, width: int) -> None:
        super().__init__()
        if ir.heads * ir.head_dim != width:
            raise ValueError(f"attention level {ir.name!r}: heads {ir.heads} x head_dim "
                             f"{ir.head_dim} != width {width}")
        if ir.rope and ir.head_dim % 2:
            raise ValueError(f"attention level {ir.name!r}: RoPE needs an even head dim")
        self.level = ir.name
        self.heads, self.head_dim = ir.heads, ir.head_dim
        self.window, self.rope = ir.window, ir.rope
        self.qkv = QKVProjection(width, width)
        self.o_proj = nn.Linear(width, width, bias=False)
        if ir.qk_norm:
            self.q_gain = nn.Parameter(torch.ones(ir.head_dim))
            self.k_gain = nn.Parameter(torch.ones(ir.head_dim))
        else:
            self.q_gain = self.k_gain = None
        self.persistent = None


def mac_attention(att: nn.Module, xs: Tensor, h: Tensor, kv: dict[str, Tensor], pos: int,
                  persistent: Optional[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Segment piece ``xs`` (B, n, D) and its retrievals ``h`` (B, n, D) at absolute
    positions ``pos ..``; ``kv`` the interleaved cache of the segment so far. ``att`` is a
    :class:`MACAttention` or an ``AttentionMixer`` (its projections are used as they are)."""
    heads = att.heads

    def gained(k: Tensor) -> Tensor:
        return k if att.k_gain is None else rms_norm(k, att.k_gain)

    q, ks, vs = (split_heads(t, heads) for t in att.qkv(xs))
    kh, vh = (split_heads(t, heads) for t in att.qkv.kv(h))
    if att.q_gain is not None:
        q = rms_norm(q, att.q_gain)
    ks, kh = gained(ks), gained(kh)
    q_raw = q
    if att.rope:
        q, ks, kh = apply_rope(q, pos), apply_rope(ks, pos), apply_rope(kh, pos)

    def weave(a: Tensor, b: Tensor) -> Tensor:  # a_0, b_0, a_1, b_1, ...
        return torch.stack((a, b), dim=3).flatten(2, 3)

    pk = pv = pq = None
    if persistent is not None:
        tok = persistent.to(xs.dtype).unsqueeze(0)  # (1, N_p, D): broadcasts over B
        pk, pv = (split_heads(t, heads) for t in att.qkv.kv(tok))
        pk = gained(pk)
        pq = weave(q_raw, q_raw) if att.rope else None
    window = None if att.window is None else 2 * att.window
    out, kv = softmax_attention(weave(q, q), weave(kh, ks), weave(vh, vs), state=kv,
                                window=window, prefix_k=pk, prefix_v=pv, prefix_q=pq)
    return att.o_proj(merge_heads(out[:, :, 1::2])), kv


class Context(nn.Module):
    """Titans MAC layer (see the module docstring).

    ``Context(attention, memory, persistent=None, segment=None, norm="rms",
    residual=True, width=None)``: ``attention`` an ``AttentionMixer`` (what generated code
    passes: its projections are used, its forward is not) or an :class:`AttentionIR` (a
    :class:`MACAttention` is built); ``memory`` a :class:`MemoryMixer` (or its
    :class:`MemoryIR`, then built here with ``width``); ``persistent`` a
    :class:`PersistentIR` or None (an attention mixer's own persistent tokens are used when
    it has some); ``segment`` defaults to the memory's chunk. ``init_state(batch)``;
    ``forward(x, state, pos) -> (out, state)``.
    """

    teach = False

    def __init__(self, attention: Union[nn.Module, AttentionIR],
                 memory: Union[MemoryMixer, MemoryIR],
                 persistent: Optional[PersistentIR] = None, segment: Optional[int] = None,
                 norm: str = "rms", residual: bool = True, width: Optional[int] = None) -> None:
        super().__init__()
        if isinstance(memory, MemoryIR):
            if width is None:
                raise ValueError(f"memory level {memory.name!r}: pass width to build it")
            memory = MemoryMixer(memory, width)
        for need in ("retrieve", "read_keys", "init_state", "width"):
            if not hasattr(memory, need):
                raise TypeError(f"MAC needs a MemoryMixer (with {need}); got "
                                f"{type(memory).__name__} for level "
                                f"{getattr(memory, 'level', '?')!r}")
        width = memory.width if width is None else width
        if memory.width != width:
            raise ValueError(f"memory level {memory.level!r} has width {memory.width}, "
                             f"the layer {width}")
        if isinstance(attention, AttentionIR):
            if attention.persistent is not None and persistent is not None \
                    and attention.persistent != persistent.name:
                raise ValueError(f"attention level {attention.name!r} names persistent level "
                                 f"{attention.persistent!r}, got {persistent.name!r}")
            attention = MACAttention(attention, width)
        missing = [a for a in ATTENTION_ATTRS if not hasattr(attention, a)]
        if missing:
            raise TypeError(f"MAC attention {type(attention).__name__} lacks {missing}")
        own = getattr(attention, "persistent", None)
        if own is not None and persistent is not None:
            raise ValueError(f"attention level {attention.level!r} already prepends persistent "
                             f"tokens; got persistent level {persistent.name!r} as well")
        self.width, self.residual, self.norm_kind = width, residual, norm
        self.segment = int(segment if segment is not None else memory.ir.chunk)
        if self.segment < 1:
            raise ValueError(f"MAC segment must be >= 1, got {self.segment}")
        self.memory = memory
        self.attention = attention
        self.persistent = MACPersistent(persistent, width) if persistent is not None else own
        if norm == "rms":
            self.norm = RMSNorm(width)
        elif norm == "layer":
            self.norm = nn.LayerNorm(width)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {norm!r}; expected rms, layer or none")

    def _empty_kv(self, batch: int, like: Tensor) -> dict[str, Tensor]:
        z = like.new_zeros(batch, self.attention.heads, 0, self.attention.head_dim)
        return {"k": z, "v": z}

    def init_state(self, batch: int) -> dict[str, Tensor]:
        mem = self.memory.init_state(batch, retrieve=True)
        state = {f"mem.{k}": v for k, v in mem.items()}
        state.update({f"frozen.{k}": mem[k] for k in self.memory.read_keys})
        kv = self._empty_kv(batch, self.memory.out.weight)
        state["seg_k"], state["seg_v"] = kv["k"], kv["v"]
        return state

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int = 0
                ) -> tuple[Tensor, dict[str, Tensor]]:
        B, T, _ = x.shape
        S = self.segment
        u = self.norm(x)
        mem = {k[4:]: v for k, v in state.items() if k.startswith("mem.")}
        frozen = {k: state[f"frozen.{k}"] for k in self.memory.read_keys}
        kv = {"k": state["seg_k"], "v": state["seg_v"]}
        ptok = None if self.persistent is None else self.persistent.tokens
        outs, t, p = [], 0, pos
        while t < T:
            off = p % S
            n = min(S - off, T - t)
            if off == 0:  # a new segment: freeze the memory it reads, empty the attention
                now = self.memory.memory_at(mem, p)
                frozen = {k: now[k] for k in self.memory.read_keys}
                kv = self._empty_kv(B, u)
            xs = u[:, t:t + n]
            read_state = dict(frozen)
            if "retrieve_conv_q" in mem:
                read_state["retrieve_conv_q"] = mem["retrieve_conv_q"]
            h, read_state = self.memory.retrieve(xs, read_state)
            y, kv = mac_attention(self.attention, xs, h, kv, p, ptok)
            mem = dict(mem)
            if "retrieve_conv_q" in read_state:
                mem["retrieve_conv_q"] = read_state["retrieve_conv_q"]
            z, mem = self.memory(y, mem, p)
            outs.append(y * torch.sigmoid(z))
            t, p = t + n, p + n
        if p % S == 0:  # the call ended on a segment boundary: nothing to carry over
            kv = self._empty_kv(B, u)
        o = torch.cat(outs, dim=1) if outs else torch.zeros_like(x)
        new_state = {f"mem.{k}": v for k, v in mem.items()}
        new_state.update({f"frozen.{k}": v for k, v in frozen.items()})
        new_state["seg_k"], new_state["seg_v"] = kv["k"], kv["v"]
        return (x + o if self.residual else o), new_state

    def extra_repr(self) -> str:
        return f"segment={self.segment}, norm={self.norm_kind!r}, residual={self.residual}"
