"""Per-chunk kernels of the chunked deep memory, with hand-written backward passes.

Notation (see :mod:`nlc.primitives.deep`)::

    G = B*H (flattened batch*heads)   C chunk (query rows)   J write keys of the chunk
    (J = C + window - 1)   L depth   W_l (G, D_l, D_{l-1})   a_{l-1} (G, J, D_{l-1}) layer
    input of the write keys at M_xi (a_0 = keys)   delta_l (G, J, D_l) back-propagated error

Two ``torch.autograd.Function`` s split a chunk step (called through :func:`key_path` and
:func:`read_end`, which skip autograd without grad); the glue between them (gate
coefficients, gradient guards, MIRAS global retention) stays ordinary autograd:

* :class:`KeyPath`  (K, V, W_xi) -> (a_1..a_{L-1}, delta_1..delta_L): the forward pass of the
  write keys through M_xi and the analytic backward pass of the inner objective,
  ``delta_L = l'(y; v)``, ``delta_l = (delta_{l+1} W_{l+1}) * act'(z_l)``.
* :class:`ReadEnd`  reads the queries through the per-token weights
  ``W_t = R_t W_xi + e_t S_xi - sum_j c'_{t,j} delta_j a_j^T`` (layer by layer,
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
:mod:`nlc.primitives.deep_derivatives` (act and act': ``activations.act_and_grad``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from nlc.primitives.activations import act_and_grad
from nlc.primitives.deep_common import autocast_off, layer_norm_out, layer_norm_vjp
from nlc.primitives.deep_derivatives import act_dd, obj_d, obj_dd

__all__ = ["KeyPath", "ReadEnd", "key_path", "read_end"]


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


def _embed(gW: Tensor, layout: str) -> Tensor:
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
        gWS = [None if g is None else _embed(g, lay) for g, lay in zip(gW, layouts)]
        return (None, gK, gV, None, None, *gWS)


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
    """``ReadEnd.apply``; without grad, its forward alone (see :func:`key_path`)."""
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
                    gl[2] = _embed(gWr, lt)
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
