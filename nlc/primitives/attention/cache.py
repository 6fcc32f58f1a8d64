"""The KV cache of softmax attention (the state both forms read, extend and trim).

Notation (the family legend is in :mod:`nlc.primitives.attention`)::

    B batch   H heads   T query tokens in the call   Dk key dim   Dv value dim
    L cached keys from earlier calls   w sliding window (None = full causal)
    state  ``{"k": (B, H, L, Dk), "v": (B, H, L, Dv)}`` or None (empty)

With a window the cache keeps only the last ``w - 1`` keys (bounded memory); without one it
keeps every key (it grows with the stream).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["init_kv_state", "check_args", "with_cache", "kept_kv"]


def init_kv_state(batch: int, heads: int, dk: int, dv: Optional[int] = None, *, dtype=None,
                  device=None) -> dict[str, Tensor]:
    """An empty KV cache ``{"k": (B, H, 0, Dk), "v": (B, H, 0, Dv)}``."""
    dv = dk if dv is None else dv
    return {"k": torch.zeros(batch, heads, 0, dk, dtype=dtype, device=device),
            "v": torch.zeros(batch, heads, 0, dv, dtype=dtype, device=device)}


def check_args(window: Optional[int], prefix_k: Optional[Tensor], prefix_v: Optional[Tensor]
               ) -> None:
    """A window is >= 1 (or None); prefix keys and values come together."""
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    if (prefix_k is None) != (prefix_v is None):
        raise ValueError("prefix_k and prefix_v must be given together")


def with_cache(state: Optional[dict[str, Tensor]], k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, int]:
    """The cached keys and values followed by the call's, ``(B, H, L + T, D)`` in the dtypes
    of ``k``, ``v``, and ``L`` (0: no cache)."""
    if state is None:
        return k, v, 0
    return (torch.cat((state["k"].to(k.dtype), k), dim=2), torch.cat((state["v"].to(v.dtype), v), dim=2),
            state["k"].shape[2])


def kept_kv(k_all: Tensor, v_all: Tensor, window: Optional[int]) -> dict[str, Tensor]:
    """The new cache: every key without a window, else the last ``window - 1``."""
    if window is None:
        return {"k": k_all, "v": v_all}
    n = k_all.shape[2]
    keep = min(n, window - 1)
    return {"k": k_all[:, :, n - keep:], "v": v_all[:, :, n - keep:]}
