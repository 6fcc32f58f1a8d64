"""Per-chunk kernels of the chunked deep memory, with hand-written backward passes; the
write-key kernel and the stacked state layout (the read kernel is :mod:`.read_end`).

Notation (the family legend is in :mod:`nlc.primitives.deep`)::

    G = B*H (flattened batch*heads)   C chunk (query rows)   J write keys of the chunk
    (J = C + window - 1)   L depth   W_l (G, D_l, D_{l-1})   a_{l-1} (G, J, D_{l-1}) layer
    input of the write keys at M_xi (a_0 = keys)   delta_l (G, J, D_l) back-propagated error
    S_l  the momentum of W_l;  WS_l  both, stacked (layouts ``col`` / ``row`` / ``plain``)

Two ``torch.autograd.Function`` s split a chunk step (called through :func:`key_path` and
:func:`~nlc.primitives.deep.read_end.read_end`, which skip autograd without grad); the glue
between them (gate coefficients, gradient guards, MIRAS global retention) stays ordinary
autograd in :mod:`~nlc.primitives.deep.chunk`:

* :class:`KeyPath`  (K, V, W_xi) -> (a_1..a_{L-1}, delta_1..delta_L): the forward pass of the
  write keys through M_xi and the analytic backward pass of the inner objective,
  ``delta_L = l'(y; v)``, ``delta_l = (delta_{l+1} W_{l+1}) * act'(z_l)``.
* :class:`~nlc.primitives.deep.read_end.ReadEnd`  reads the queries through the per-token
  weights ``W_t = R_t W_xi + e_t S_xi - sum_j c'_{t,j} delta_j a_j^T`` (layer by layer,
  ``u_l = R (h W^T) + e (h S^T) + ((h a^T) * ncr) @ delta``, ``ncr = -c'``) and forms the
  end-of-chunk state ``W' = R W + e S + delta^T (nc a)``, ``S' = M S + delta^T (nd a)``.

Inside a call each layer's weights and momentum travel *stacked* along the short side of
W: ``[W | S]`` (G, o, 2i) when i <= o (``col``), ``[W; S]`` (G, 2o, i) otherwise (``row``),
so a single matmul reads both (``[R h | e h] @ [W | S]^T``, or ``h @ [W; S]^T`` followed by
the per-token combination) and a single matmul writes both
(``delta^T [nc a | nd a]`` / ``[nc delta | nd delta]^T a``).

The hand-written backward (not autograd over every elementwise op of the dual form) costs
about two matmuls per forward matmul and few elementwise passes. First-order gradients only
(``once_differentiable``); p and a constant delta get no gradient (a learned delta and the
output LayerNorm take :func:`key_path`'s autograd route). Derivatives:
:mod:`~nlc.primitives.deep.derivatives` (act and act': ``activations.act_and_grad``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..activations import act_and_grad
from .common import autocast_off, layer_norm_out, layer_norm_vjp
from .derivatives import act_dd, obj_d, obj_dd

__all__ = ["KeyPath", "key_path", "w_part", "s_part", "stacked_grad"]


def w_part(WS: Tensor, layout: str) -> Tensor:
    """The weight part of a stacked state: ``col`` [W | S] (G, o, 2i), ``row`` [W; S]
    (G, 2o, i), ``plain`` W itself."""
    if layout == "col":
        return WS[..., :WS.shape[-1] // 2]
    if layout == "row":
        return WS[:, :WS.shape[-2] // 2]
    return WS


def s_part(WS: Tensor, layout: str) -> Tensor:
    """The momentum part of a stacked state (see :func:`w_part`)."""
    if layout == "col":
        return WS[..., WS.shape[-1] // 2:]
    return WS[:, WS.shape[-2] // 2:]


def stacked_grad(gW: Tensor, layout: str) -> Tensor:
    """A weight-part gradient as a gradient of the stacked state (momentum part zero)."""
    if layout == "plain":
        return gW
    return torch.cat([gW, torch.zeros_like(gW)], -1 if layout == "col" else -2)


def _key_path(cfg, K, V, p, delta, WSs, norm=None):
    """KeyPath's forward values: (a_0..a_{L-1}, z's, activation derivatives, b's, y, deltas).
    ``norm`` (gamma, beta): the output LayerNorm N, its Jacobian applied to l'(y) in ordinary
    ops (that path is differentiated by autograd, see :func:`key_path`)."""
    L, activation, objective, residual, layouts = cfg
    Ws = [w_part(x, lay) for x, lay in zip(WSs, layouts)]
    a, zs, ds, bs = [K], [], [], []
    z = K
    for l in range(L):
        z = torch.bmm(a[l], Ws[l].mT)
        if l < L - 1:
            h, d = act_and_grad(activation, z)
            a.append(h)
            zs.append(z)
            ds.append(d)
    y = layer_norm_out(z, norm)
    y = y + K if residual else y
    top = obj_d(objective, y, V, p, delta)
    deltas: list[Tensor] = [top if norm is None else layer_norm_vjp(z, top, norm[0])] * L
    for l in range(L - 2, -1, -1):
        b = torch.bmm(deltas[l + 1], Ws[l + 1])
        bs.insert(0, b)
        deltas[l] = b if ds[l] is None else b * ds[l]
    return a, zs, ds, bs, y, deltas


def key_path(cfg, K, V, p, delta, *WSs, norm=None) -> tuple[Tensor, ...]:
    """``KeyPath.apply``; without grad, its forward alone (no autograd bookkeeping: faster,
    and torch.compile of torch 2.11 mis-binds an autograd.Function's arguments under no_grad).
    With an output LayerNorm or a Huber delta that is learned (it needs a gradient, which the
    hand-written backward does not give), the forward in ordinary ops, differentiated by
    autograd."""
    if torch.is_grad_enabled() and norm is None and not delta.requires_grad:
        return KeyPath.apply(cfg, K, V, p, delta, *WSs)
    a, _, _, _, _, deltas = _key_path(cfg, K, V, p, delta, WSs, norm)
    return tuple(a[1:]) + tuple(deltas)


class KeyPath(torch.autograd.Function):
    """(K, V, W_1..W_L) -> (a_1..a_{L-1}, delta_1..delta_L) at the chunk-start weights.
    apply((L, activation, objective, residual, layouts), K, V, p, delta, *Ws): ``Ws[l]`` is
    layer l's stacked state (``col`` / ``row``: its weight part is used) or its weights
    (``plain``)."""

    @staticmethod
    def forward(ctx, cfg, K, V, p, delta, *WSs):  # noqa: D102
        a, zs, ds, bs, y, deltas = _key_path(cfg, K, V, p, delta, WSs)
        ctx.cfg = cfg
        ctx.nd = sum(d is not None for d in ds)
        ctx.save_for_backward(K, V, p, delta, y, *WSs, *a[1:], *deltas, *zs,
                              *[d for d in ds if d is not None], *bs)
        return tuple(a[1:]) + tuple(deltas)

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx, *grads):  # noqa: D102
        L, activation, objective, residual, layouts = ctx.cfg
        sv = list(ctx.saved_tensors)
        K, V, p, delta, y = sv[:5]
        Ws = [w_part(x, lay) for x, lay in zip(sv[5:5 + L], layouts)]
        i = 5 + L
        a = [K] + sv[i:i + L - 1]
        i += L - 1
        deltas = sv[i:i + L]
        i += L
        zs = sv[i:i + L - 1]
        i += L - 1
        nd = ctx.nd
        ds = list(sv[i:i + nd]) if nd else [None] * (L - 1)
        i += nd
        bs = sv[i:i + L - 1]
        ga = [g.contiguous() for g in grads[:L - 1]]
        gdel = [g.contiguous() for g in grads[L - 1:]]  # autograd's: never modified in place
        gW: list[Optional[Tensor]] = [None] * L
        gz_extra: list[Optional[Tensor]] = [None] * (L - 1)
        # delta recursion: delta_l = b_l * act'(z_l), b_l = delta_{l+1} W_{l+1}
        for l in range(L - 1):
            g = gdel[l]
            gb = g if ds[l] is None else g * ds[l]
            dd = act_dd(activation, zs[l])
            if dd is not None:
                gz_extra[l] = dd.mul_(bs[l]).mul_(g)
            gdel[l + 1] = torch.bmm(gb, Ws[l + 1].mT).add_(gdel[l + 1])
            gW[l + 1] = torch.bmm(deltas[l + 1].mT, gb)
        # delta_L = l'(y; v)
        dy, dv = obj_dd(objective, y, V, p, delta)
        gV = gdel[L - 1] * dv
        gK = None
        gz = None if dy is None else gdel[L - 1] * dy
        if gz is not None and residual:
            gK = gz
        # forward pass of the write keys: z_l = a_{l-1} W_l^T, a_l = act(z_l)
        for l in range(L - 1, -1, -1):
            gprev = None
            if gz is not None:
                if gW[l] is None:
                    gW[l] = torch.bmm(gz.mT, a[l])
                else:
                    gW[l].baddbmm_(gz.mT, a[l])
                gprev = torch.bmm(gz, Ws[l])
            if l > 0:
                g_a = ga[l - 1] if gprev is None else gprev.add_(ga[l - 1])
                if ds[l - 1] is not None:
                    g_a = g_a * ds[l - 1] if gprev is None else g_a.mul_(ds[l - 1])
                if gz_extra[l - 1] is not None:
                    g_a = gz_extra[l - 1].add_(g_a)
                gz = g_a
            elif gprev is not None:
                gK = gprev if gK is None else gK.add_(gprev)
        gWS = [None if g is None else stacked_grad(g, lay) for g, lay in zip(gW, layouts)]
        return (None, gK, gV, None, None, *gWS)
