"""Continuum Memory System (CMS), chunked form: matmuls per segment, a Python loop over the
union of all levels' chunk boundaries only.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   n tokens of a segment (inside one chunk of every level)   L number of levels
    Din / Dout block in/out dim   theta_l, acc_l  level l's parameters and pending sum
    eta_t     step size   delta_t  error signal at a block output, dL/dy_t

Within each stretch between consecutive boundaries of any level, every level reads with its
current parameters (:func:`~nlc.primitives.cms.levels.read_levels`) and adds its summed
gradient ``sum_t eta_t J_theta(x_t)^T delta_t`` with one matmul per weight
(:func:`~nlc.primitives.cms.mlp.block_backward`); at a level's boundary the schedule of
:mod:`~nlc.primitives.cms.levels` applies its pending sum (NL-arXiv Eq. 71). Same signatures
and results as :mod:`~nlc.primitives.cms.reference`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import Tensor

from .levels import Form, read_levels, run_block, run_stacked
from .mlp import LrLike, block_backward, cms_local_delta, step_sizes

__all__ = ["cms_block_chunked", "cms_chunked"]


def _chunk_step(params: list[dict], accs: list[dict], x: Tensor, a: int, b: int, *,
                lrs, variant, weights, signal, target, delta, kind, residual) -> Tensor:
    """Tokens ``a..b-1`` (inside one chunk of every level): outputs, and each level's summed
    gradient added to its pending sum with matmuls (:func:`block_backward`)."""
    n = len(params)
    chained = variant != "independent"
    out, ins, ys, caches = read_levels(params, x[:, a:b], variant=variant, weights=weights,
                                       kind=kind, residual=residual)
    if signal == "local":
        tgt = None if target is None else target[:, a:b]
        deltas = [cms_local_delta(ys[l], ins[l] if tgt is None else tgt) for l in range(n)]
    elif chained:  # the outer level's signal; inner ones are back-propagated below
        deltas = [delta[:, a:b].to(x.dtype)] * n
    else:
        deltas = [delta[:, a:b].to(x.dtype) * weights[l].to(x.dtype) for l in range(n)]
    backprop = signal == "task" and chained
    for l in reversed(range(n)):
        eta = step_sizes(lrs[l], x.shape[0], a, b, x)
        g, dx = block_backward(params[l], ins[l], caches[l], deltas[l], eta, kind, residual,
                               need_dx=backprop and l > 0)
        accs[l] = {k: accs[l][k] + g[k] for k in g}
        if dx is not None:
            deltas[l - 1] = dx
    return out


CHUNKED = Form(_chunk_step, per_token=False)


def cms_block_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                      signal: str = "local", target: Optional[Tensor] = None,
                      delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                      kind: str = "gelu", residual: bool = False
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """One CMS block over ``x (B, T, Din)``, chunked form (NL-arXiv Eqs. 70-71).

    Outputs of the tokens of a chunk use the chunk-start parameters; at the end of each
    chunk ``theta <- theta - sum_chunk eta_t grad l_t(theta_chunkstart)`` (one matmul per
    weight, :func:`~nlc.primitives.cms.mlp.cms_chunk_grad`).
    ``signal``/``target``/``delta``/``pos``/``policy``: see the family doc
    (:mod:`nlc.primitives.cms`). Returns ``(y (B, T, Dout), new_state)``.
    """
    return run_block(CHUNKED, state, x, chunk=chunk, lr=lr, signal=signal, target=target,
                     delta=delta, pos=pos, policy=policy, kind=kind, residual=residual)


def cms_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                lrs: Sequence[LrLike], variant: str = "sequential",
                weights: Optional[Tensor] = None, signal: str = "local",
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None, pos: int = 0,
                policy: str = "carry", kind: str = "gelu", residual: bool = False
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-level CMS (``level{i}.*`` state), chunked form; see the family doc for
    ``variant`` (sequential NL-arXiv Eqs. 70-71, independent NL-arXiv Eq. 74, nested NL-arXiv
    Eq. 72).

    Within each stretch between consecutive boundaries of any level, every level reads with
    its current parameters and adds its summed gradient (matmuls); at a level's boundary its
    pending sum is applied. Returns ``(y (B, T, Dout), new_state)``.
    """
    return run_stacked(CHUNKED, state, x, chunks=chunks, lrs=lrs, variant=variant,
                       weights=weights, signal=signal, target=target, delta=delta, pos=pos,
                        policy=policy, kind=kind, residual=residual)
