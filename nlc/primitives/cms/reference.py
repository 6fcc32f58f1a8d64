"""Continuum Memory System (CMS), reference form: one token at a time, as the equation reads.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   t the token   L number of levels   theta_l, acc_l  level l's parameters and
    pending sum   eta_t step size   delta_t error signal at the block output, dL/dy_t

For each token read ``y_t = MLP(theta_xi; x_t)`` with the chunk-start parameters, add
``eta_t grad_theta l(theta_xi; x_t)`` (``torch.func.grad`` of the per-token loss,
:func:`~nlc.primitives.cms.mlp.block_token`) to every level's pending sum; the schedule of
:mod:`~nlc.primitives.cms.levels` applies a level's sum when ``pos + t + 1 = 0 (mod C)``
(NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71). Same signatures and results as
:mod:`~nlc.primitives.cms.chunk`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import Tensor
from torch.func import grad as func_grad
from torch.func import vmap

from .levels import Form, run_block, run_stacked
from .mlp import LrLike, block_token, step_sizes

__all__ = ["cms_block_reference", "cms_reference"]


def _token_step(params: list[dict], accs: list[dict], x: Tensor, a: int, b: int, *,
                lrs, variant, weights, signal, target, delta, kind, residual) -> Tensor:
    """Token ``t = a`` (``b = a + 1``) read as the equation: outputs with the frozen
    chunk-start parameters, then ``eta_t grad_theta l(theta_xi; x_t)`` (``torch.func.grad``)
    added to every level's pending sum."""
    t, B = a, x.shape[0]
    chained = variant != "independent"
    w = None if weights is None else weights.to(x.dtype)

    def mlp(p, u):
        return block_token(p, u, kind, residual)

    def chain(ps, u):  # the block's output y_t as a function of every level's parameters
        if chained:
            for p in ps:
                u = mlp(p, u)
            return u
        return sum(w[l] * mlp(ps[l], u) for l in range(len(ps)))

    def local_loss(p, u, tgt):  # l_t = ||MLP(theta; u_t) - target_t||^2
        r = mlp(p, u) - tgt
        return (r * r).sum()

    def task_loss(ps, u, d):  # surrogate <sg(delta_t), y_t(theta)>
        return (chain(ps, u) * d).sum()

    x_t = x[:, t]
    if signal == "local":
        grads, u = [], x_t
        for p in params:  # level l's input: the previous level's output if chained, else x_t
            tgt = u if target is None else target[:, t]
            grads.append(vmap(func_grad(local_loss))(p, u, tgt))
            if chained:
                u = vmap(mlp)(p, u)
    else:
        grads = vmap(func_grad(task_loss))(params, x_t, delta[:, t].to(x.dtype))
    for l, g_l in enumerate(grads):
        e = step_sizes(lrs[l], B, t, t + 1, x)[:, 0]
        accs[l] = {k: accs[l][k] + e.view(B, *([1] * (g.dim() - 1))) * g for k, g in g_l.items()}
    return vmap(chain)(params, x_t).unsqueeze(1)


REFERENCE = Form(_token_step, per_token=True)


def cms_block_reference(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                        signal: str = "local", target: Optional[Tensor] = None,
                        delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                        kind: str = "gelu", residual: bool = False
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of ``chunk.cms_block_chunked`` (same signature and results): for each
    token read ``y_t = MLP(theta; x_t)``, add ``eta_t grad l_t(theta)`` (``torch.func.grad``)
    to the pending sum, and apply the sum when ``pos + t + 1 = 0 (mod C)``."""
    return run_block(REFERENCE, state, x, chunk=chunk, lr=lr, signal=signal, target=target,
                     delta=delta, pos=pos, policy=policy, kind=kind, residual=residual)


def cms_reference(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                  lrs: Sequence[LrLike], variant: str = "sequential",
                  weights: Optional[Tensor] = None, signal: str = "local",
                  target: Optional[Tensor] = None, delta: Optional[Tensor] = None,
                  pos: int = 0, policy: str = "carry", kind: str = "gelu",
                  residual: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of ``chunk.cms_chunked`` (same signature and results). The task-signal
    gradients of all levels are ``torch.func.grad`` of ``<delta_t, y_t(theta_1..theta_L)>``."""
    return run_stacked(REFERENCE, state, x, chunks=chunks, lrs=lrs, variant=variant,
                       weights=weights, signal=signal, target=target, delta=delta, pos=pos,
                        policy=policy, kind=kind, residual=residual)
