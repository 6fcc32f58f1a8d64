"""The read kernel of the chunked deep memory: the chunk's queries read through the
per-token weights, and the end-of-chunk state, with a hand-written backward pass.

Notation (the family legend is in :mod:`nlc.primitives.deep`; the kernels' in
:mod:`~nlc.primitives.deep.kernels`)::

    G = B*H   C chunk (query rows)   J write keys of the chunk   L depth
    h    the layer input of a query (h = q at layer 1)   u_l its pre-activation at layer l
    a_{l-1}, delta_l   the write keys' layer inputs and errors at M_xi (from ``key_path``)
    R, e, ncr   per-row read coefficients (retention product, momentum sum, -c')
    R_end, e_end, M_end, nc, nd   the end-of-chunk coefficients
    WS_l  layer l's weights and momentum, stacked (``col`` [W | S] or ``row`` [W; S])

:class:`ReadEnd` reads the queries through ``W_t = R_t W_xi + e_t S_xi - sum_j c'_{t,j}
delta_j a_j^T`` layer by layer::

    u_l = R (h W^T) + e (h S^T) + ((h a^T) * ncr) @ delta,      h <- act(u_l)

and forms ``W' = R_end W + e_end S + delta^T (nc a)``, ``S' = M_end S + delta^T (nd a)``.
First-order gradients only (``once_differentiable``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..activations import act_and_grad
from .common import autocast_off
from .kernels import s_part, stacked_grad, w_part

__all__ = ["ReadEnd", "read_end"]


def _fdot(x: Tensor, y: Tensor) -> Tensor:
    """Per-batch Frobenius inner product of (G, m, n) tensors (any strides) -> (G, 1, 1)."""
    return (x * y).sum(dim=(-2, -1), keepdim=True)


def _read_end(cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd, layers):
    """ReadEnd's forward values: (u_L, WS'_1..WS'_L as a list, h's, A's, ub's, du's)."""
    L, activation, layouts, shared = cfg
    lay = [list(layers[6 * l:6 * l + 6]) for l in range(L)]
    if shared:
        for x in lay:
            x[3:] = [Rr, er, ncr]
    cd = torch.stack([nc, nd], -1).unsqueeze(-1)  # (G, J, 2, 1) end coefficients
    h = Q
    hs, As, ubs, dus = [], [], [], []
    u = Q
    for l in range(L):
        a, dlt, WS, Rr_l, er_l, ncr_l = lay[l]
        W = w_part(WS, layouts[l])
        A = torch.bmm(h, a.mT)
        ub = None
        if er_l is None:  # no momentum: only the weight part is read
            u = torch.bmm(h, W.mT)
            if Rr_l is not None:
                u.mul_(Rr_l)
        elif layouts[l] == "col":  # [R h | e h] @ [W | S]^T
            coef = torch.cat([Rr_l if Rr_l is not None else torch.ones_like(er_l), er_l],
                             -1).unsqueeze(-1)
            u = torch.bmm((h.unsqueeze(-2) * coef).flatten(-2), WS.mT)
        else:  # h @ [W; S]^T, then R (h W^T) + e (h S^T)
            ub = torch.bmm(h, WS.mT)
            o = ub.shape[-1] // 2
            u = ub[..., :o] * Rr_l if Rr_l is not None else ub[..., :o].clone()
            u.addcmul_(ub[..., o:], er_l)
        u.baddbmm_(A * ncr_l, dlt)
        hs.append(h)
        As.append(A)
        ubs.append(ub)
        if l < L - 1:
            h, du = act_and_grad(activation, u)
            dus.append(du)
    outs = []
    for l in range(L):
        a, dlt, WS = lay[l][:3]
        if layouts[l] == "col":
            WSn = torch.bmm(dlt.mT, (a.unsqueeze(-2) * cd).flatten(-2))
        else:
            WSn = torch.bmm((dlt.unsqueeze(-2) * cd).flatten(-2).mT, a)
        Wn, Sn = w_part(WSn, layouts[l]), s_part(WSn, layouts[l])
        W, S = w_part(WS, layouts[l]), s_part(WS, layouts[l])
        if R_end is None:
            Wn.add_(W)
        else:
            Wn.addcmul_(W, R_end)
        if e_end is not None:
            Wn.addcmul_(S, e_end)
        if M_end is not None:
            Sn.addcmul_(S, M_end)
        outs.append(WSn)
    return u, outs, hs, As, ubs, dus


def read_end(cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd, *layers) -> tuple[Tensor, ...]:
    """``ReadEnd.apply``; without grad, its forward alone (see
    :func:`~nlc.primitives.deep.kernels.key_path`)."""
    if torch.is_grad_enabled():
        return ReadEnd.apply(cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd, *layers)
    u, outs, *_ = _read_end(cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd, layers)
    return (u, *outs)


class ReadEnd(torch.autograd.Function):
    """Reads of the chunk's queries and the end-of-chunk stacked state.

    apply((L, activation, layouts, shared), Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd,
    *layers) with 6 entries per layer (a_{l-1}, delta_l, WS_l, Rr_l, er_l, ncr_l). ``WS_l`` is
    the stacked [W | S] (``col``, (G, o, 2i)) or [W; S] (``row``, (G, 2o, i)) state: the
    stacking runs along the short side so that one matmul reads (and writes) both parts.
    ``shared``: the read coefficients (Rr, er, ncr) are common to all layers (the per-layer
    entries are None); else they are per layer (Moneta's frozen normaliser folded in) and
    the common ones None. None means R = 1, e = 0, M = 0. Every tensor appears once
    (torch.compile needs distinct inputs). Returns (u_L, WS'_1..WS'_L).
    """

    @staticmethod
    def forward(ctx, cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd,
                *layers):  # noqa: D102
        u, outs, hs, As, ubs, dus = _read_end(cfg, Q, Rr, er, ncr, R_end, e_end, M_end, nc, nd, layers)
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)  # an unused end state (last chunk) costs nothing
        ctx.out_shape = u.shape
        present = lambda xs: [x is not None for x in xs]  # noqa: E731
        ctx.flags = (present(ubs), present(dus))
        ctx.save_for_backward(
            Rr, er, ncr, R_end, e_end, M_end, nc, nd, *layers,
            *hs, *As, *[x for x in ubs + dus if x is not None])
        return (u, *outs)

    @staticmethod
    @once_differentiable
    @autocast_off
    def backward(ctx, gu, *gWSn):  # noqa: D102
        L, activation, layouts, shared = ctx.cfg
        sv = list(ctx.saved_tensors)
        Rr, er, ncr, R_end, e_end, M_end, nc, nd = sv[:8]
        i = 8
        lay = [sv[i + 6 * l:i + 6 * l + 6] for l in range(L)]
        if shared:
            for x in lay:
                x[3:] = [Rr, er, ncr]
        i += 6 * L
        hs, As = sv[i:i + L], sv[i + L:i + 2 * L]
        rest = iter(sv[i + 2 * L:])
        ubs, dus = ([next(rest) if f else None for f in fl] for fl in ctx.flags)
        cd = torch.stack([nc, nd], -1).unsqueeze(-1)

        def acc(x: Optional[Tensor], y: Tensor) -> Tensor:  # x: None or a fresh tensor
            return y if x is None else x.add_(y)

        # per-layer gradients: a, dlt, WS, Rr_l, er_l, ncr_l
        g_lay: list[list[Optional[Tensor]]] = [[None] * 6 for _ in range(L)]
        gR = ge = gM = gcd = None
        # end of chunk (gWSn are owned by autograd: read only)
        for l in range(L):
            g = gWSn[l]
            if g is None:
                continue
            g = g.contiguous()
            a, dlt, WS = lay[l][:3]
            lt = layouts[l]
            gw, gs = w_part(g, lt), s_part(g, lt)
            W, S = w_part(WS, lt), s_part(WS, lt)
            gWS = torch.empty_like(WS)
            gWp, gSp = w_part(gWS, lt), s_part(gWS, lt)
            gWp.copy_(gw)  # (no out= into strided views: torch.compile rejects it)
            if R_end is not None:
                gWp.mul_(R_end)
                gR = acc(gR, _fdot(gw, W))
            if M_end is None:
                gSp.zero_()
            else:
                gSp.copy_(gs).mul_(M_end)
                gM = acc(gM, _fdot(gs, S))
            if e_end is not None:
                gSp.addcmul_(gw, e_end)
                ge = acc(ge, _fdot(gw, S))
            g_lay[l][2] = gWS
            if lt == "col":  # WS' += dlt^T [nc a | nd a]
                gX = torch.bmm(dlt, g).unflatten(-1, (2, -1))  # (G, J, 2, i)
                gcd = acc(gcd, (gX * a.unsqueeze(-2)).sum(-1))
                g_lay[l][0] = (gX * cd).sum(-2)
                g_lay[l][1] = torch.bmm((a.unsqueeze(-2) * cd).flatten(-2), g.mT)
            else:  # WS' += [nc dlt | nd dlt]^T a
                gY = torch.bmm(a, g.mT).unflatten(-1, (2, -1))  # (G, J, 2, o)
                gcd = acc(gcd, (gY * dlt.unsqueeze(-2)).sum(-1))
                g_lay[l][1] = (gY * cd).sum(-2)
                g_lay[l][0] = torch.bmm((dlt.unsqueeze(-2) * cd).flatten(-2), g)
        # reads, last layer first
        if gu is None:
            gu = torch.zeros(ctx.out_shape, dtype=nc.dtype, device=nc.device)
        gu = gu.contiguous()  # e.g. the expanded gradient of a .sum(): keep bmm on its fast path
        gh = gu
        for l in range(L - 1, -1, -1):
            a, dlt, WS, Rr_l, er_l, ncr_l = lay[l]
            lt = layouts[l]
            gl = g_lay[l]
            h = hs[l]
            if l < L - 1:
                gu = gh.mul_(dus[l]) if dus[l] is not None else gh
            if er_l is None:  # u = R (h W^T)
                tW = torch.bmm(gu, w_part(WS, lt))
                if Rr_l is not None:
                    gWr = torch.bmm((gu * Rr_l).mT, h)
                    gl[3] = (tW * h).sum(-1, keepdim=True)
                    tW.mul_(Rr_l)
                else:
                    gWr = torch.bmm(gu.mT, h)
                if gl[2] is None:
                    gl[2] = stacked_grad(gWr, lt)
                else:
                    w_part(gl[2], lt).add_(gWr)
                gh = tW
            elif lt == "col":  # u = [R h | e h] @ [W | S]^T
                coef = torch.cat([Rr_l if Rr_l is not None else torch.ones_like(er_l), er_l],
                                 -1).unsqueeze(-1)
                X = (h.unsqueeze(-2) * coef).flatten(-2)
                gl[2] = (torch.bmm(gu.mT, X) if gl[2] is None
                         else gl[2].baddbmm_(gu.mT, X))
                gX = torch.bmm(gu, WS).unflatten(-1, (2, -1))  # (G, C, 2, i)
                gc = (gX * h.unsqueeze(-2)).sum(-1)  # (G, C, 2)
                if Rr_l is not None:
                    gl[3] = gc[..., :1]
                gl[4] = gc[..., 1:]
                gh = (gX * coef).sum(-2)
            else:  # u = R (h W^T) + e (h S^T) from ub = h [W; S]^T
                coef = torch.cat([Rr_l if Rr_l is not None else torch.ones_like(er_l), er_l],
                                 -1).unsqueeze(-1)
                gub = (gu.unsqueeze(-2) * coef).flatten(-2)  # (G, C, 2o)
                gl[2] = (torch.bmm(gub.mT, h) if gl[2] is None
                         else gl[2].baddbmm_(gub.mT, h))
                gh = torch.bmm(gub, WS)
                gc = (ubs[l].unflatten(-1, (2, -1)) * gu.unsqueeze(-2)).sum(-1)
                if Rr_l is not None:
                    gl[3] = gc[..., :1]
                gl[4] = gc[..., 1:]
            # u += ((h a^T) * ncr) @ dlt
            gP = torch.bmm(gu, dlt.mT)
            P = (As[l] * ncr_l).mT
            gl[1] = torch.bmm(P, gu) if gl[1] is None else gl[1].baddbmm_(P, gu)
            gl[5] = gP * As[l]
            gA = gP.mul_(ncr_l)
            gl[0] = torch.bmm(gA.mT, h) if gl[0] is None else gl[0].baddbmm_(gA.mT, h)
            gh.baddbmm_(gA, a)
        gnc = gnd = None
        if gcd is not None:
            gnc, gnd = gcd[..., 0], gcd[..., 1]
        gRr = ger = gncr = None
        if shared:  # common coefficients: sum over layers; none per layer
            for gl in g_lay:
                if gl[3] is not None:
                    gRr = gl[3] if gRr is None else gRr + gl[3]
                if gl[4] is not None:
                    ger = gl[4] if ger is None else ger + gl[4]
                gncr = gl[5] if gncr is None else gncr.add_(gl[5])
                gl[3] = gl[4] = gl[5] = None
        flat = [g for gl in g_lay for g in gl]
        return (None, gh, gRr, ger, gncr, gR, ge, gM, gnc, gnd, *flat)
