"""Softmax attention, reference form: a loop over query tokens (NL-arXiv Eq. 62; with a
window, NL-arXiv Eq. 63).

Notation (the family legend is in :mod:`nlc.primitives.attention`)::

    B batch   H heads   T query tokens in the call   Dk key dim   Dv value dim
    L cached keys from earlier calls   w sliding window (None = full causal)
    s_i = scale * q_t . k_i   the score of key i for query t (prefix keys: prefix_q_t . k_i)

Each query gathers the keys it sees and returns ``sum_i softmax_i(s_i) v_i``. Same signature
and results as :mod:`~nlc.primitives.attention.chunk`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .cache import check_args, kept_kv, with_cache

__all__ = ["softmax_attention_reference"]


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor, *,
                                state: Optional[dict[str, Tensor]] = None,
                                window: Optional[int] = None,
                                prefix_k: Optional[Tensor] = None,
                                prefix_v: Optional[Tensor] = None,
                                prefix_q: Optional[Tensor] = None,
                                scale: Optional[float] = None
                                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of ``chunk.softmax_attention`` (same signature and results).

    For each query ``t`` (absolute cache-relative position ``L + t``) gather the visible keys
    ``{prefix} + {j : max(0, L+t-w+1) <= j <= L+t}`` and return
    ``sum_i softmax_i(s_i) v_i`` with ``s_i = scale * q_t . k_i`` (``prefix_q_t`` for the
    prefix keys) -- NL-arXiv Eq. 62 (NL-arXiv Eq. 63 with the window).
    """
    check_args(window, prefix_k, prefix_v)
    B, H, T, Dk = q.shape
    scale = 1.0 / math.sqrt(Dk) if scale is None else scale
    k_all, v_all, L = with_cache(state, k, v)
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
    return out, kept_kv(k_all, v_all, window)
