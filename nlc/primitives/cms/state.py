"""Continuum Memory System (CMS) state layout: fast parameters, pending chunk sums, levels.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch          L number of levels        C chunk size of a level
    theta_xi         a level's parameters at the start of its current chunk (fast state)
    acc.<name>       pending sum_t eta_t grad_theta l_t of the current, incomplete chunk

NL-arXiv Eq. 71 (= NL-NeurIPS Eq. 31) applies the summed per-token gradients of a
chunk once, at its boundary::

    theta_{i+1} = theta_i - sum_{t=i-C+1}^{i} eta_t grad_theta l(theta_{xi}; x_t)   if i = 0 mod C

so between boundaries a block carries ``theta_xi`` (``w_in``, ``b_in``, ...) and the
partial sum ``acc.<name>`` of each parameter. A state is a ``dict[str, Tensor]``, every
tensor batch-leading (one memory per sequence). Multi-level states (NL-arXiv Eqs. 72-74)
prefix every key with ``level{i}.``; the level engines work on the split form, a list of
``(params, accs)`` per level (:func:`unpack_levels` / :func:`pack_levels`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "cms_init_state",
    "cms_init_levels",
    "cms_split_levels",
    "cms_merge_levels",
    "cms_reinit_from",
]

_ACC = "acc."


def fast_params(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The parameters theta of a block state (its ``acc.*`` keys dropped)."""
    return {k: v for k, v in state.items() if not k.startswith(_ACC)}


def zeros_like_all(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A cleared pending sum: every entry replaced by zeros of its shape."""
    return {k: torch.zeros_like(v) for k, v in tensors.items()}


def cms_init_state(params: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    """Per-sequence state from unbatched meta-learned ``params``: each parameter expanded to
    ``(B, ...)`` (differentiable w.r.t. ``params``) plus zero accumulators ``acc.<name>``."""
    state: dict[str, Tensor] = {}
    for name, p in params.items():
        state[name] = p.unsqueeze(0).expand(batch, *p.shape)
    for name, p in params.items():
        state[_ACC + name] = p.new_zeros((batch, *p.shape))
    return state


def cms_merge_levels(levels: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per-level states -> one flat state with keys ``level{i}.<key>``."""
    return {f"level{i}.{k}": v for i, lv in enumerate(levels) for k, v in lv.items()}


def cms_split_levels(state: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
    """Inverse of :func:`cms_merge_levels` (levels ``0..L-1``, contiguous)."""
    levels: list[dict[str, Tensor]] = []
    i = 0
    while True:
        pre = f"level{i}."
        lv = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
        if not lv:
            break
        levels.append(lv)
        i += 1
    if not levels:
        raise KeyError("state has no 'level0.*' keys (use the cms_block_* functions for a "
                       "single unprefixed block)")
    return levels


def cms_init_levels(level_params: Sequence[Mapping[str, Tensor]], batch: int) -> dict[str, Tensor]:
    """Multi-level state from per-level meta-learned params (see :func:`cms_init_state`)."""
    return cms_merge_levels([cms_init_state(p, batch) for p in level_params])


def cms_reinit_from(state: Mapping[str, Tensor], source: Mapping[str, Tensor]
                    ) -> dict[str, Tensor]:
    """Nested-CMS reset (NL-arXiv Eq. 72): ``state``'s parameters := ``source``'s, pending
    sums ``acc.*`` := 0. Call when ``source`` (the next slower level) completes a chunk."""
    out = {}
    for k, v in state.items():
        out[k] = torch.zeros_like(v) if k.startswith(_ACC) else source[k]
    return out


def unpack_levels(levels: Sequence[Mapping[str, Tensor]]) -> tuple[list[dict], list[dict]]:
    """Level states -> (per-level parameters, per-level pending sums; missing sums = 0)."""
    params = [fast_params(lv) for lv in levels]
    accs = [{k: lv[_ACC + k] if _ACC + k in lv else torch.zeros_like(lv[k]) for k in p}
            for lv, p in zip(levels, params)]
    return params, accs


def pack_levels(params: Sequence[dict], accs: Sequence[dict]) -> list[dict[str, Tensor]]:
    """Inverse of :func:`unpack_levels`."""
    out = []
    for p, a in zip(params, accs):
        st = dict(p)
        st.update({_ACC + k: v for k, v in a.items()})
        out.append(st)
    return out
