"""Softmax attention: the non-parametric level (NL-arXiv §5, Eqs. 62-63).

Notation::

    B batch   H heads   T query tokens in the call   Dk key dim   Dv value dim
    P prefix tokens (always visible)   L cached keys from earlier calls
    w sliding window (token t sees t-w+1 .. t; None = full causal)
    N_p persistent tokens (Titans Eq. 19)

NL-arXiv Eq. 62: softmax attention is the Nadaraya-Watson solution of a local L2 regression,
``M*(q) = sum_i s(k_i, q) v_i / sum_j s(k_j, q)`` with ``s(k, q) = exp(q.k * scale)``; Eq. 63
restricts the sum to a window (sliding-window attention, Titans' SWA). Keys visible to the
query at absolute position ``t``:

* every *prefix* key (``prefix_k / prefix_v``, e.g. Titans persistent tokens ``p_1..p_Np``
  (Eq. 19) and MAC's retrieved memory tokens ``h_t``), scored with ``prefix_q`` (default the
  query itself);
* sequence keys at positions ``j`` with ``j <= t`` (causal) and, with a window ``w``,
  ``j >= t - w + 1``. Keys of earlier calls come from the KV cache in ``state``.

Streaming: ``state = {"k": (B, H, L, Dk), "v": (B, H, L, Dv)}`` holds the keys/values of
earlier calls (``None`` = empty). With a window the cache keeps only the last ``w-1`` tokens,
so memory is bounded; without one it grows. Calling on segments in turn with the carried
state equals one call on the whole sequence, at any split. Titans MAC attention ("full
causal attention within the segment plus the prefix") is ``state=None`` with a prefix.

RoPE is the caller's business in the functional forms (cache keys are stored as given, i.e.
already rotated). :class:`SoftmaxAttention` rotates q and k by absolute position and keeps
prefix tokens position-free: a prefix key is scored against the *unrotated* query
(``prefix_q``), so its score does not depend on where the query sits in the stream.

Two forms with the same signature and results: :func:`softmax_attention_reference` (a loop
over query tokens) and :func:`softmax_attention` (one
``F.scaled_dot_product_attention`` call with an explicit boolean mask).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import apply_rope, l2_normalize

__all__ = [
    "attention_mask",
    "softmax_attention",
    "softmax_attention_reference",
    "init_kv_state",
    "SoftmaxAttention",
]


def init_kv_state(batch: int, heads: int, dk: int, dv: Optional[int] = None, *, dtype=None,
                  device=None) -> dict[str, Tensor]:
    """An empty KV cache ``{"k": (B, H, 0, Dk), "v": (B, H, 0, Dv)}``."""
    dv = dk if dv is None else dv
    return {"k": torch.zeros(batch, heads, 0, dk, dtype=dtype, device=device),
            "v": torch.zeros(batch, heads, 0, dv, dtype=dtype, device=device)}


def attention_mask(T: int, L: int = 0, P: int = 0, window: Optional[int] = None, *,
                   device=None) -> Tensor:
    """Boolean visibility ``(T, P + L + T)``; True = may attend.

    Columns: ``P`` prefix keys (always visible), ``L`` cached keys, then the ``T`` keys of the
    call. Query ``i`` sits at cache-relative position ``L + i``; sequence key ``j`` (over the
    ``L + T`` columns) is visible iff ``j <= L + i`` and, with a window, ``j > L + i - w``.
    """
    qpos = torch.arange(T, device=device).unsqueeze(1) + L
    kpos = torch.arange(L + T, device=device).unsqueeze(0)
    seq = kpos <= qpos
    if window is not None:
        seq = seq & (kpos > qpos - window)
    if P:
        seq = torch.cat((torch.ones(T, P, dtype=torch.bool, device=device), seq), dim=1)
    return seq


def _check(window: Optional[int], prefix_k: Optional[Tensor], prefix_v: Optional[Tensor]) -> None:
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    if (prefix_k is None) != (prefix_v is None):
        raise ValueError("prefix_k and prefix_v must be given together")


def _cache(state: Optional[dict[str, Tensor]], k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if state is None:
        return k[:, :, :0], v[:, :, :0]
    return state["k"].to(k.dtype), state["v"].to(v.dtype)


def _new_state(k_all: Tensor, v_all: Tensor, window: Optional[int]) -> dict[str, Tensor]:
    if window is None:
        return {"k": k_all, "v": v_all}
    n = k_all.shape[2]
    keep = min(n, window - 1)
    return {"k": k_all[:, :, n - keep:], "v": v_all[:, :, n - keep:]}


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *,
                      state: Optional[dict[str, Tensor]] = None,
                      window: Optional[int] = None,
                      prefix_k: Optional[Tensor] = None, prefix_v: Optional[Tensor] = None,
                      prefix_q: Optional[Tensor] = None,
                      scale: Optional[float] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Causal (optionally sliding-window) softmax attention with prefix and KV cache.

    NL-arXiv Eqs. 62-63 (Titans Eq. 19 / MAC for the prefix). ``q (B, H, T, Dk)``,
    ``k (B, H, T, Dk)``, ``v (B, H, T, Dv)``; ``prefix_k (B, H, P, Dk)``, ``prefix_v
    (B, H, P, Dv)`` (batch dim may be 1 to broadcast); ``prefix_q (B, H, T, Dk)`` scores the
    prefix keys (default ``q``). ``scale`` defaults to ``1/sqrt(Dk)``.
    Returns ``(out (B, H, T, Dv), new_state)``; see the module doc for the state.

    Fast form: a single ``scaled_dot_product_attention`` call with the mask of
    :func:`attention_mask`. A separate ``prefix_q`` is realised by concatenating features:
    ``[q, prefix_q] . [k, 0] = q.k`` and ``[q, prefix_q] . [0, pk] = prefix_q.pk``.
    """
    _check(window, prefix_k, prefix_v)
    B, H, T, Dk = q.shape
    scale = 1.0 / math.sqrt(Dk) if scale is None else scale
    ck, cv = _cache(state, k, v)
    L = ck.shape[2]
    k_all = torch.cat((ck, k), dim=2)
    v_all = torch.cat((cv, v), dim=2)
    new_state = _new_state(k_all, v_all, window)

    qq, kk, vv = q, k_all, v_all
    P = 0
    if prefix_k is not None:
        P = prefix_k.shape[2]
        pk = prefix_k.to(k.dtype).expand(B, H, P, Dk)
        pv = prefix_v.to(v.dtype).expand(B, H, P, v.shape[-1])
        if prefix_q is not None:
            qq = torch.cat((q, prefix_q.to(q.dtype)), dim=-1)
            pk = torch.cat((torch.zeros_like(pk), pk), dim=-1)
            kk = torch.cat((k_all, torch.zeros_like(k_all)), dim=-1)
        kk = torch.cat((pk, kk), dim=2)
        vv = torch.cat((pv, v_all), dim=2)
    if P == 0 and L == 0 and window is None:
        out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale)
    else:
        mask = attention_mask(T, L, P, window, device=q.device)
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=scale)
    return out, new_state


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor, *,
                                state: Optional[dict[str, Tensor]] = None,
                                window: Optional[int] = None,
                                prefix_k: Optional[Tensor] = None,
                                prefix_v: Optional[Tensor] = None,
                                prefix_q: Optional[Tensor] = None,
                                scale: Optional[float] = None
                                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`softmax_attention` (same signature and results).

    For each query ``t`` (absolute cache-relative position ``L + t``) gather the visible keys
    ``{prefix} + {j : max(0, L+t-w+1) <= j <= L+t}`` and return
    ``sum_i softmax_i(s_i) v_i`` with ``s_i = scale * q_t . k_i`` (``prefix_q_t`` for the
    prefix keys) -- NL-arXiv Eq. 62 (Eq. 63 with the window).
    """
    _check(window, prefix_k, prefix_v)
    B, H, T, Dk = q.shape
    scale = 1.0 / math.sqrt(Dk) if scale is None else scale
    ck, cv = _cache(state, k, v)
    L = ck.shape[2]
    k_all = torch.cat((ck, k), dim=2)
    v_all = torch.cat((cv, v), dim=2)
    outs = []
    for t in range(T):
        hi = L + t + 1
        lo = 0 if window is None else max(0, hi - window)
        q_t = q[:, :, t]  # (B, H, Dk)
        scores = torch.einsum("bhd,bhjd->bhj", q_t, k_all[:, :, lo:hi]) * scale
        values = v_all[:, :, lo:hi]
        if prefix_k is not None:
            pq_t = q_t if prefix_q is None else prefix_q[:, :, t].to(q.dtype)
            pk = prefix_k.to(k.dtype).expand(B, H, -1, Dk)
            pv = prefix_v.to(v.dtype).expand(B, H, -1, v.shape[-1])
            pscores = torch.einsum("bhd,bhjd->bhj", pq_t, pk) * scale
            scores = torch.cat((pscores, scores), dim=-1)
            values = torch.cat((pv, values), dim=2)
        weights = torch.softmax(scores, dim=-1)
        outs.append(torch.einsum("bhj,bhjd->bhd", weights, values))
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(B, H, 0, v.shape[-1])
    return out, _new_state(k_all, v_all, window)


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
    * ``qk_norm``: l2-normalise q and k per head before RoPE (Titans §4.4 / HOPE §8.3);
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
