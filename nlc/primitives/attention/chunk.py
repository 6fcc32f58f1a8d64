"""Softmax attention, parallel form: one ``F.scaled_dot_product_attention`` call with an
explicit boolean mask (the family's fast form; ``chunk.py`` like every family's).

Notation (the family legend is in :mod:`nlc.primitives.attention`)::

    B batch   H heads   T query tokens in the call   Dk key dim   Dv value dim
    P prefix tokens (always visible)   L cached keys from earlier calls
    w sliding window (token t sees t-w+1 .. t; None = full causal)

NL-arXiv Eqs. 62-63 (Titans Eq. 19 / MAC for the prefix) for all queries of the call at
once: the mask (:func:`attention_mask`) says which of the ``P + L + T`` keys each query sees.
Same signature and results as :mod:`~nlc.primitives.attention.reference`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache import check_args, kept_kv, with_cache

__all__ = ["attention_mask", "softmax_attention"]


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
    check_args(window, prefix_k, prefix_v)
    B, H, T, Dk = q.shape
    scale = 1.0 / math.sqrt(Dk) if scale is None else scale
    k_all, v_all, L = with_cache(state, k, v)
    new_state = kept_kv(k_all, v_all, window)

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
