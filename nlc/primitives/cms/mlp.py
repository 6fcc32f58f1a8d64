"""Continuum Memory System (CMS) block maths: the MLP, its error signals, summed gradients.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   n tokens of a chunk   Din / Dout block in/out dim   Dh hidden width
    theta     a block's parameters (batch-leading)   h_t hidden activations of token t
    eta_t     step size (scalar, per sequence (B,) or per token (B, n))
    delta_t   error signal at the block output, dL/dy_t

Block ``MLP(theta; x)`` (``kind``): ``"gelu" | "silu" | "relu"``:
``W_out act(W_in x + b_in) + b_out`` (biases iff present in the state); ``"swiglu"``:
``W_out (silu(W_gate x) * W_up x)``. ``residual=True`` adds ``x`` (NL-arXiv Eq. 89 style).

Error signal (NL-arXiv Eq. 71 writes ``grad L(theta; x_t)`` without saying which L):

* ``"local"``: associative L2 loss ``l_t = ||MLP(theta; x_t) - target_t||^2``, so
  ``delta_t = 2 (y_t - target_t)`` (:func:`cms_local_delta`).
* ``"task"``: an externally supplied teach signal ``delta_t = dL_task / dy_t``; the per-token
  loss is the surrogate ``<sg(delta_t), MLP(theta; x_t)>`` (:func:`cms_task_surrogate`).

Either way ``grad_theta l_t = J_theta(x_t)^T delta_t`` is rank-1 per token for each weight
matrix (e.g. ``dW_out = delta_t h_t^T``), so the chunk sum of NL-NeurIPS Eq. 31 = NL-arXiv
Eq. 71, ``sum_{t in chunk} eta_t grad_theta l(theta_xi; x_t)``, is one matmul per weight
(:func:`cms_chunk_grad`); :func:`block_backward` also propagates ``delta`` to the input for
the chained levels of NL-arXiv Eqs. 70-73. :func:`block_token` is the unbatched per-token
equation that the reference form differentiates with ``torch.func``.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import act, act_and_grad
from .state import fast_params

__all__ = [
    "KINDS",
    "cms_param_shapes",
    "cms_init_params",
    "cms_mlp",
    "cms_forward",
    "cms_local_delta",
    "cms_task_surrogate",
    "cms_chunk_grad",
    "cms_apply_update",
]

KINDS = ("gelu", "silu", "relu", "swiglu")
LrLike = Union[Tensor, float]


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown CMS block kind {kind!r}; expected one of {KINDS}")


# =========================================================================== parameters
def cms_param_shapes(d_in: int, d_hidden: int, d_out: Optional[int] = None, *,
                     kind: str = "gelu", bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Unbatched parameter shapes of one block (``swiglu`` has no biases)."""
    check_kind(kind)
    d_out = d_in if d_out is None else d_out
    if kind == "swiglu":
        return {"w_gate": (d_hidden, d_in), "w_up": (d_hidden, d_in), "w_out": (d_out, d_hidden)}
    shapes = {"w_in": (d_hidden, d_in), "w_out": (d_out, d_hidden)}
    if bias:
        shapes["b_in"] = (d_hidden,)
        shapes["b_out"] = (d_out,)
    return shapes


def cms_init_params(d_in: int, d_hidden: int, d_out: Optional[int] = None, *,
                    kind: str = "gelu", bias: bool = True, dtype=None, device=None,
                    generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
    """nn.Linear-style initial (meta) parameters, unbatched: ``U(-1/sqrt(fan_in), +)``."""
    out = {}
    for name, shape in cms_param_shapes(d_in, d_hidden, d_out, kind=kind, bias=bias).items():
        fan_in = d_hidden if name in ("w_out", "b_out") else d_in
        bound = 1.0 / math.sqrt(fan_in)
        t = torch.rand(shape, dtype=dtype, device=device, generator=generator)
        out[name] = (2 * t - 1) * bound
    return out


# =========================================================================== block forms
def block_forward(p: Mapping[str, Tensor], u: Tensor, kind: str, residual: bool
                  ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Batched block forward ``u (B, n, Din) -> y (B, n, Dout)`` plus what backward needs."""
    if kind == "swiglu":
        a = torch.matmul(u, p["w_gate"].mT)
        c = torch.matmul(u, p["w_up"].mT)
        h = F.silu(a) * c
        cache = (a, c, h)
    else:
        a = torch.matmul(u, p["w_in"].mT)
        if "b_in" in p:
            a = a + p["b_in"].unsqueeze(1)
        h = act(kind, a)
        cache = (a, h)
    y = torch.matmul(h, p["w_out"].mT)
    if "b_out" in p:
        y = y + p["b_out"].unsqueeze(1)
    if residual:
        y = y + u
    return y, cache


def block_backward(p: Mapping[str, Tensor], u: Tensor, cache: tuple[Tensor, ...],
                   delta: Tensor, eta: Tensor, kind: str, residual: bool, need_dx: bool
                   ) -> tuple[dict[str, Tensor], Optional[Tensor]]:
    """``sum_t eta_t grad_theta <delta_t, MLP(theta; u_t)>`` (rank-1 per token -> matmuls),
    and ``d<delta, y>/du`` (unweighted) if ``need_dx`` (else None)."""
    e = eta.unsqueeze(-1)  # (B, n, 1)
    h = cache[-1]
    de = delta * e
    g = {"w_out": torch.matmul(de.mT, h)}
    if "b_out" in p:
        g["b_out"] = de.sum(dim=1)
    gh = torch.matmul(delta, p["w_out"])  # (B, n, Dh)
    dx = None
    if kind == "swiglu":
        a, c, _ = cache
        ga = gh * c * act_and_grad("silu", a)[1]
        gc = gh * F.silu(a)
        g["w_gate"] = torch.matmul((ga * e).mT, u)
        g["w_up"] = torch.matmul((gc * e).mT, u)
        if need_dx:
            dx = torch.matmul(ga, p["w_gate"]) + torch.matmul(gc, p["w_up"])
    else:
        a = cache[0]
        ga = gh * act_and_grad(kind, a)[1]
        gae = ga * e
        g["w_in"] = torch.matmul(gae.mT, u)
        if "b_in" in p:
            g["b_in"] = gae.sum(dim=1)
        if need_dx:
            dx = torch.matmul(ga, p["w_in"])
    if need_dx and residual:
        dx = dx + delta
    return {k: g[k] for k in p}, dx


def block_token(p: Mapping[str, Tensor], u: Tensor, kind: str, residual: bool) -> Tensor:
    """Unbatched ``MLP(theta; u)`` for one token ``u (Din,)``, written as the equation."""
    if kind == "swiglu":
        h = F.silu(p["w_gate"] @ u) * (p["w_up"] @ u)
    else:
        pre = p["w_in"] @ u
        if "b_in" in p:
            pre = pre + p["b_in"]
        h = act(kind, pre)
    y = p["w_out"] @ h
    if "b_out" in p:
        y = y + p["b_out"]
    return y + u if residual else y


def step_sizes(lr: LrLike, B: int, a: int, b: int, like: Tensor) -> Tensor:
    """Per-token step sizes ``(B, b-a)`` of tokens ``a..b-1`` from a scalar, ``(B,)`` or
    ``(B, T)`` lr."""
    if not isinstance(lr, Tensor):
        lr = torch.as_tensor(lr, dtype=like.dtype, device=like.device)
    lr = lr.to(like.dtype)
    if lr.dim() == 0:
        return lr.expand(B, b - a)
    if lr.dim() == 1:
        return lr.unsqueeze(-1).expand(B, b - a)
    return lr[:, a:b]


# =========================================================================== public maths
def cms_mlp(params: Mapping[str, Tensor], x: Tensor, *, kind: str = "gelu",
            residual: bool = False) -> Tensor:
    """Read one block with its current (batched) parameters: ``x (B, T, Din) -> (B, T, Dout)``.

    ``params`` may be a full block state (``acc.*`` keys are ignored)."""
    check_kind(kind)
    return block_forward(fast_params(params), x, kind, residual)[0]


def cms_forward(params: Mapping[str, Tensor], x: Tensor, *, kind: str = "gelu",
                residual: bool = False) -> tuple[Tensor, tuple[Tensor, ...]]:
    """:func:`cms_mlp` and its hidden activations ``(pre-activation[, up], h)`` (B, T, Dh):
    the ``cache`` that :func:`cms_chunk_grad` at the same weights and inputs reuses."""
    check_kind(kind)
    return block_forward(fast_params(params), x, kind, residual)


def cms_local_delta(y: Tensor, target: Tensor) -> Tensor:
    """``d ||y - target||^2 / dy = 2 (y - target)`` (the ``local`` error signal)."""
    return 2.0 * (y - target)


def cms_task_surrogate(y: Tensor, delta: Tensor) -> Tensor:
    """``sum <y, sg(delta)>``: a loss whose gradient w.r.t. ``y`` is ``delta`` (teach signal)."""
    return (y * delta.detach()).sum()


def cms_chunk_grad(params: Mapping[str, Tensor], x: Tensor, delta: Tensor,
                   lr: Optional[LrLike] = None, *, kind: str = "gelu", residual: bool = False,
                   return_input_grad: bool = False, cache: Optional[tuple[Tensor, ...]] = None):
    """Summed per-token gradients of one chunk, analytically (NL-arXiv Eq. 71's sum).

    ``sum_t eta_t grad_theta <delta_t, MLP(theta; x_t)>`` for ``x (B, n, Din)``, ``delta
    (B, n, Dout)``; ``lr`` = eta (scalar, ``(B,)`` or ``(B, n)``; None = 1). For the local
    signal pass ``delta = cms_local_delta(MLP(theta; x), target)``. Each weight's per-token
    gradient is rank-1 (e.g. ``dW_out = delta_t h_t^T``), so the sum is one matmul. The
    update is ``theta - cms_chunk_grad(...)`` (:func:`cms_apply_update`). With
    ``return_input_grad`` also returns ``d<delta, y>/dx (B, n, Din)``. ``cache``: the hidden
    activations of :func:`cms_forward` at these ``params`` and ``x`` (None: recomputed).
    """
    check_kind(kind)
    p = fast_params(params)
    if cache is None:
        _, cache = block_forward(p, x, kind, residual)
    eta = step_sizes(1.0 if lr is None else lr, x.shape[0], 0, x.shape[1], x)
    g, dx = block_backward(p, x, cache, delta, eta, kind, residual, return_input_grad)
    return (g, dx) if return_input_grad else g


def cms_apply_update(state: Mapping[str, Tensor], grads: Mapping[str, Tensor]
                     ) -> dict[str, Tensor]:
    """``theta <- theta - grads`` for every parameter in ``grads`` (other keys kept)."""
    return {k: (v - grads[k] if k in grads else v) for k, v in state.items()}
