"""Multi-head softmax attention as a module: projections, RoPE, window, persistent tokens.

Notation (the family legend is in :mod:`nlc.primitives.attention`)::

    B batch   T tokens   dim model width   H heads   head_dim per-head width
    N_p persistent tokens (Titans Eq. 19)   P prefix tokens of a call   pos tokens already streamed
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..layers import apply_rope, l2_normalize
from .cache import init_kv_state
from .chunk import softmax_attention

__all__ = ["SoftmaxAttention"]


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention over ``(B, T, dim)`` with RoPE, window, persistent tokens.

    * q, k, v, out projections (``bias`` optional); ``heads`` heads of ``head_dim``.
    * ``window``: sliding-window attention (token t sees t-w+1..t); None = full causal.
    * ``num_persistent``: ``N_p`` learned tokens (model dim) prepended as always-visible
      keys/values (Titans Eq. 19). They are projected by ``W_k, W_v`` like any token but are
      keys/values only (they produce no outputs).
    * ``rope``: rotate q, k by absolute position (``state["pos"]`` = tokens already streamed).
      Prefix tokens (persistent and ``prefix`` passed to ``forward``) are not rotated and are
      scored with the unrotated query (position-free).
    * ``qk_norm``: l2-normalise q and k per head before RoPE (Titans §4.4 / NL-arXiv §8.3);
      with it the default ``scale`` stays ``1/sqrt(head_dim)`` unless ``scale`` is given.

    ``forward(x, state=None, *, prefix=None) -> (y, new_state)`` where ``prefix (B, P, dim)``
    are extra always-visible tokens for this call (e.g. MAC's retrieved memory tokens) and
    ``state = {"k", "v", "pos"}`` (see :func:`softmax_attention`; ``pos (B,)`` int64).
    """

    def __init__(self, dim: int, heads: int, head_dim: Optional[int] = None, *,
                 window: Optional[int] = None, num_persistent: int = 0, rope: bool = True,
                 rope_base: float = 10000.0, qk_norm: bool = False, bias: bool = False,
                 scale: Optional[float] = None) -> None:
        super().__init__()
        head_dim = head_dim if head_dim is not None else dim // heads
        if window is not None and window < 1:
            raise ValueError("window must be >= 1 or None")
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.window, self.rope, self.rope_base = window, rope, rope_base
        self.qk_norm, self.scale = qk_norm, scale
        inner = heads * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=bias)
        self.k_proj = nn.Linear(dim, inner, bias=bias)
        self.v_proj = nn.Linear(dim, inner, bias=bias)
        self.o_proj = nn.Linear(inner, dim, bias=bias)
        self.persistent = (nn.Parameter(torch.randn(num_persistent, dim) * dim ** -0.5)
                           if num_persistent > 0 else None)

    def init_state(self, batch: int, *, dtype=None, device=None) -> dict[str, Tensor]:
        w = self.q_proj.weight
        st = init_kv_state(batch, self.heads, self.head_dim, dtype=dtype or w.dtype,
                           device=device or w.device)
        st["pos"] = torch.zeros(batch, dtype=torch.long, device=device or w.device)
        return st

    def _split(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None, *,
                prefix: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
        B, T, _ = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if self.qk_norm:
            q, k = l2_normalize(q), l2_normalize(k)
        if state is None:
            pos = torch.zeros(B, dtype=torch.long, device=x.device)
            kv = None
        else:
            pos = state["pos"]
            kv = {"k": state["k"], "v": state["v"]}
        q_raw = q
        if self.rope:
            q = apply_rope(q, pos, base=self.rope_base)
            k = apply_rope(k, pos, base=self.rope_base)
        toks = []
        if self.persistent is not None:
            toks.append(self.persistent.to(x.dtype).unsqueeze(0).expand(B, -1, -1))
        if prefix is not None:
            toks.append(prefix)
        pk = pv = pq = None
        if toks:
            ptok = torch.cat(toks, dim=1) if len(toks) > 1 else toks[0]
            pk, pv = self._split(self.k_proj(ptok)), self._split(self.v_proj(ptok))
            if self.qk_norm:
                pk = l2_normalize(pk)
            pq = q_raw if self.rope else None
        out, new_kv = softmax_attention(q, k, v, state=kv, window=self.window, prefix_k=pk,
                                        prefix_v=pv, prefix_q=pq, scale=self.scale)
        y = self.o_proj(out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))
        new_state = dict(new_kv)
        new_state["pos"] = pos + T
        return y, new_state
