"""Runtime mixer of an ``attention`` level: multi-head softmax attention (NL-arXiv Eqs. 62-63).

Notation::

    B batch   T tokens in the call   D model width   H heads   d head dim
    L cached keys (tokens of earlier calls)   N_p persistent tokens   w window

``AttentionMixer(ir, width, persistent)`` projects ``x (B, T, D)`` to per-head ``q, k, v``
(``W_q, W_k, W_v, W_o``: ``D -> H d``, no bias; ``W_q, W_k, W_v`` fused into one GEMM, a
:class:`QKVProjection`), rotates ``q, k`` by absolute position
``pos + t`` (RoPE, rotate-half pairing, base 10000), and calls
:func:`nlc.primitives.attention.softmax_attention` (causal, sliding window ``w`` when
``ir.window`` is set, KV cache, persistent prefix).

State: ``{"k": (B, H, L, d), "v": (B, H, L, d)}`` -- the (already rotated) keys and values
of earlier calls; with a window only the last ``w - 1`` tokens are kept, so ``L <= w - 1``.
``init_state`` gives ``L = 0``. Streaming is exact at any split.

Persistent tokens (Titans Eq. 19): ``N_p`` learned vectors of width ``D`` prepended as
always-visible keys/values (projected by ``W_k, W_v``; they produce no outputs). They are
position-free: never rotated, and scored with the *unrotated* query (the convention of
:class:`nlc.primitives.attention.SoftmaxAttention`), so a token's score against them does not
depend on where it sits in the stream. They are parameters of the *persistent* level: they
live in the submodule ``mixer.persistent`` (a :class:`PersistentTokens`) whose ``level`` is
the persistent level's name, so per-level parameter counts attribute them correctly.

``qk_norm``: ``q`` and ``k`` are l2-normalised per head and rescaled to norm ``sqrt(d)``
(i.e. RMSNorm, :func:`nlc.primitives.layers.rms_norm`) with a learnable per-feature gain
each (the ``2 d`` parameters ``nlc graph`` counts), before RoPE. Scale ``1/sqrt(d)``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir.nodes import AttentionIR, PersistentIR
from ..primitives.attention import init_kv_state, softmax_attention
from ..primitives.layers import apply_rope, init_linear_, rms_norm

__all__ = ["AttentionMixer", "PersistentTokens", "QKVProjection"]


class QKVProjection(nn.Module):
    """``W_q, W_k, W_v`` (each ``D -> inner``, no bias) stacked into one ``weight
    (3 inner, D)`` (rows ``[W_q; W_k; W_v]``), initialised slice by slice as three
    ``nn.Linear`` in that order would be. ``forward(x) -> (q, k, v)`` (one GEMM);
    ``kv(x) -> (k, v)`` (one GEMM on the key and value rows: persistent tokens, MAC's
    retrieved tokens)."""

    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.inner = inner
        self.weight = nn.Parameter(torch.empty(3 * inner, width))
        with torch.no_grad():
            for rows in self.weight.split(inner):
                init_linear_(rows)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return F.linear(x, self.weight).split(self.inner, dim=-1)

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.linear(x, self.weight[self.inner:]).split(self.inner, dim=-1)


class PersistentTokens(nn.Module):
    """The ``N_p`` learned tokens of a ``persistent`` level (Titans Eq. 19), ``(N_p, D)``.

    Owned by the attention mixer that prepends them; ``level`` is the persistent level's
    name, so its parameters are counted under that level."""

    def __init__(self, ir: PersistentIR, width: int) -> None:
        super().__init__()
        self.level = ir.name
        self.tokens = nn.Parameter(torch.randn(ir.tokens, width) * width ** -0.5)

    def forward(self) -> Tensor:
        return self.tokens


class AttentionMixer(nn.Module):
    """Softmax attention over ``(B, T, D)`` with RoPE, window, persistent prefix, KV cache.

    See the module docstring for the maths and the state layout.
    """

    teach = False

    def __init__(self, ir: AttentionIR, width: int, persistent: Optional[PersistentIR] = None
                 ) -> None:
        super().__init__()
        if ir.persistent is not None and (persistent is None or persistent.name != ir.persistent):
            got = None if persistent is None else persistent.name
            raise ValueError(f"attention level {ir.name!r} prepends persistent level "
                             f"{ir.persistent!r}; pass its PersistentIR (got {got!r})")
        if ir.persistent is None and persistent is not None:
            raise ValueError(f"attention level {ir.name!r} has no persistent level, but "
                             f"{persistent.name!r} was given")
        if ir.window is not None and ir.window < 1:
            raise ValueError(f"attention level {ir.name!r}: window must be >= 1")
        if ir.rope and ir.head_dim % 2:
            raise ValueError(f"attention level {ir.name!r}: RoPE needs an even head dim, "
                             f"got {ir.head_dim}")
        self.level = ir.name
        self.width, self.heads, self.head_dim = width, ir.heads, ir.head_dim
        self.window, self.rope = ir.window, ir.rope
        inner = ir.heads * ir.head_dim
        self.qkv = QKVProjection(width, inner)
        self.o_proj = nn.Linear(inner, width, bias=False)
        if ir.qk_norm:
            self.q_gain = nn.Parameter(torch.ones(ir.head_dim))
            self.k_gain = nn.Parameter(torch.ones(ir.head_dim))
        else:
            self.q_gain = self.k_gain = None
        self.persistent = PersistentTokens(persistent, width) if persistent is not None else None

    def init_state(self, batch: int) -> dict[str, Tensor]:
        w = self.o_proj.weight
        return init_kv_state(batch, self.heads, self.head_dim, dtype=w.dtype, device=w.device)

    def _split(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int
                ) -> tuple[Tensor, dict[str, Tensor]]:
        B, T, _ = x.shape
        if T == 0:
            return x, {"k": state["k"], "v": state["v"]}
        q, k, v = (self._split(t) for t in self.qkv(x))
        if self.q_gain is not None:
            q, k = rms_norm(q, self.q_gain), rms_norm(k, self.k_gain)
        q_raw = q
        if self.rope:
            q = apply_rope(q, pos)
            k = apply_rope(k, pos)
        pk = pv = pq = None
        if self.persistent is not None:
            tok = self.persistent.tokens.to(x.dtype).unsqueeze(0)  # (1, N_p, D): broadcasts
            pk, pv = (self._split(t) for t in self.qkv.kv(tok))
            if self.k_gain is not None:
                pk = rms_norm(pk, self.k_gain)
            pq = q_raw if self.rope else None
        out, kv = softmax_attention(q, k, v, state={"k": state["k"], "v": state["v"]},
                                    window=self.window, prefix_k=pk, prefix_v=pv, prefix_q=pq)
        y = self.o_proj(out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))
        return y, {"k": kv["k"], "v": kv["v"]}

    def extra_repr(self) -> str:
        return (f"level={self.level!r}, heads={self.heads}, head_dim={self.head_dim}, "
                f"window={self.window}, rope={self.rope}")
