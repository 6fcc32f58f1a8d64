"""Per-chunk kernels of the chunked deep memory, with hand-written backward passes.

Notation (see :mod:`nlc.primitives.deep`)::

    G = B*H (flattened batch*heads)   C chunk (query rows)   J write keys of the chunk
    (J = C + window - 1)   L depth   W_l (G, D_l, D_{l-1})   a_{l-1} (G, J, D_{l-1}) layer
    input of the write keys at M_xi (a_0 = keys)   delta_l (G, J, D_l) back-propagated error

Two ``torch.autograd.Function`` s split a chunk step; the glue between them (gate
coefficients, gradient guards, MIRAS global retention) stays ordinary autograd:

* :class:`KeyPath`  (K, V, W_xi) -> (a_1..a_{L-1}, delta_1..delta_L): the forward pass of the
  write keys through M_xi and the analytic backward pass of the inner objective,
  ``delta_L = l'(y; v)``, ``delta_l = (delta_{l+1} W_{l+1}) * act'(z_l)``.
* :class:`ReadEnd`  reads the queries through the per-token weights
  ``W_t = R_t W_xi + e_t S_xi - sum_j c'_{t,j} delta_j a_j^T`` (layer by layer,
  ``u_l = R (h W^T) + e (h S^T) + ((h a^T) * ncr) @ delta``, ``ncr = -c'``) and forms the
  end-of-chunk state ``W' = R W_st + e S + delta^T (nc a)``, ``S' = M S + delta^T (nd a)``.

Writing the backward by hand (instead of letting autograd record every elementwise op of the
dual form) keeps the backward at about two matmuls per forward matmul with few elementwise
passes over (J, D) or (D_l, D_{l-1}) tensors. First-order gradients only
(``once_differentiable``); the objective parameters p / delta receive no gradient.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["KeyPath", "ReadEnd"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def act_d(name: str, z: Tensor) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """(act(z), act'(z), aux): act'(z) is None for the identity; aux feeds :func:`act_dd`."""
    if name == "gelu":  # exact GELU z Phi(z); derivative Phi(z) + z phi(z); aux = phi(z)
        cdf = torch.special.ndtr(z)
        pdf = (z * z).mul_(-0.5).exp_().mul_(_INV_SQRT2PI)
        a = z * cdf
        return a, cdf.addcmul_(pdf, z), pdf
    if name == "silu":  # aux = sigmoid(z)
        s = torch.sigmoid(z)
        d = (1.0 - s).mul_(z).add_(1.0).mul_(s)
        return z * s, d, s
    if name == "relu":
        pos = (z > 0).to(z.dtype)
        return z * pos, pos, None
    return z, None, None


def act_dd(name: str, z: Tensor, aux: Optional[Tensor]) -> Optional[Tensor]:
    """act''(z) from z and the ``aux`` of :func:`act_d` (None when zero: relu, identity)."""
    if name == "gelu":  # phi(z) (2 - z^2)
        return (z * z).neg_().add_(2.0).mul_(aux)
    if name == "silu":  # s (1 - s) (2 + z (1 - 2 s))
        s = aux
        return (1.0 - 2.0 * s).mul_(z).add_(2.0).mul_(s * (1.0 - s))
    return None


def obj_d(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """l'(y; v) elementwise (see ``deep_common.objective_grad``)."""
    if name == "dot":
        return -v
    e = y - v
    if name == "l2":
        return e.mul_(2.0)
    if name == "lp":
        return torch.sign(e) * e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p - 1.0) * p
    return torch.maximum(torch.minimum(e, delta), -delta).mul_(2.0)


def obj_dd(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor
           ) -> tuple[Optional[Tensor], Tensor]:
    """(d l'/d y, d l'/d v) elementwise factors (d/dy None when zero: dot objective)."""
    if name == "dot":
        return None, torch.full_like(v, -1.0)
    if name == "l2":
        two = torch.full_like(v, 2.0)
        return two, -two
    e = y - v
    if name == "lp":
        c = e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p - 2.0) * (p * (p - 1.0))
        c = c * (e != 0)
        return c, -c
    m = (e.abs() < delta).to(e.dtype) * 2.0
    return m, -m


class KeyPath(torch.autograd.Function):
    """(K, V, W_1..W_L) -> (a_1..a_{L-1}, delta_1..delta_L) at the chunk-start weights."""

    @staticmethod
    def forward(ctx, cfg, K, V, p, delta, *Ws):  # noqa: D102
        L, activation, objective, residual = cfg
        a, zs, ds, bs, aux = [K], [], [], [], []
        z = K
        for l in range(L):
            z = torch.bmm(a[l], Ws[l].mT)
            if l < L - 1:
                h, d, x = act_d(activation, z)
                a.append(h)
                zs.append(z)
                ds.append(d)
                aux.append(x)
        y = z + K if residual else z
        deltas: list[Tensor] = [obj_d(objective, y, V, p, delta)] * L
        for l in range(L - 2, -1, -1):
            b = torch.bmm(deltas[l + 1], Ws[l + 1])
            bs.insert(0, b)
            deltas[l] = b if ds[l] is None else b * ds[l]
        ctx.cfg = cfg
        ctx.nz = (sum(d is not None for d in ds), sum(x is not None for x in aux))
        ctx.save_for_backward(K, V, p, delta, y, *Ws, *a[1:], *deltas, *zs,
                              *[d for d in ds if d is not None],
                              *[x for x in aux if x is not None], *bs)
        return tuple(a[1:]) + tuple(deltas)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # noqa: D102
        L, activation, objective, residual = ctx.cfg
        sv = list(ctx.saved_tensors)
        K, V, p, delta, y = sv[:5]
        Ws = sv[5:5 + L]
        i = 5 + L
        a = [K] + sv[i:i + L - 1]
        i += L - 1
        deltas = sv[i:i + L]
        i += L
        zs = sv[i:i + L - 1]
        i += L - 1
        nd, nx = ctx.nz
        ds = list(sv[i:i + nd]) if nd else [None] * (L - 1)
        i += nd
        auxs = list(sv[i:i + nx]) if nx else [None] * (L - 1)
        i += nx
        bs = sv[i:i + L - 1]
        ga = list(grads[:L - 1])
        gdel = list(grads[L - 1:])  # owned by autograd: never modified in place
        gW: list[Optional[Tensor]] = [None] * L
        gz_extra: list[Optional[Tensor]] = [None] * (L - 1)
        # delta recursion: delta_l = b_l * act'(z_l), b_l = delta_{l+1} W_{l+1}
        for l in range(L - 1):
            g = gdel[l]
            gb = g if ds[l] is None else g * ds[l]
            dd = act_dd(activation, zs[l], auxs[l])
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
        return (None, gK, gV, None, None, *gW)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """Per-batch Frobenius inner product of (G, m, n) tensors -> (G, 1, 1)."""
    G = x.shape[0]
    return torch.bmm(x.reshape(G, 1, -1), y.reshape(G, -1, 1))


class ReadEnd(torch.autograd.Function):
    """Reads of the chunk's queries and the end-of-chunk state (see module docstring).

    apply(L, activation, Q, Rr, R_end, e_end, M_end, nc, nd, ncr, er, *layers) with 6 entries
    per layer (a_{l-1}, delta_l, W_xi, W_store, S, inv_l): ``W_store`` None means W_xi
    (the stored weights are the chunk-start weights); ``inv_l`` (G, 1, 1) scales the in-chunk
    update part of the read (Moneta's frozen normaliser), None = 1. Other None entries mean
    R = 1, e = 0, M = 0. Every tensor appears once (torch.compile needs distinct inputs).
    Returns (u_L, W'_1..W'_L, S'_1..S'_L).
    """

    @staticmethod
    def forward(ctx, L, activation, Q, Rr, R_end, e_end, M_end, nc, nd, ncr, er,
                *layers):  # noqa: D102
        lay = [layers[6 * l:6 * l + 6] for l in range(L)]
        h = Q
        hs, As, dus, upds = [], [], [], []
        u = Q
        for l in range(L):
            a, dlt, W0, _, S, inv = lay[l]
            small_in = W0.shape[-1] <= W0.shape[-2]  # scale the smaller side of each product
            A = torch.bmm(h, a.mT)
            upd = torch.bmm(A * ncr, dlt)
            if er is not None:
                if small_in:
                    upd.baddbmm_(h * er, S.mT)
                else:
                    upd.addcmul_(torch.bmm(h, S.mT), er)
            if Rr is None:
                u = torch.bmm(h, W0.mT)
            elif small_in:
                u = torch.bmm(h * Rr, W0.mT)
            else:
                u = torch.bmm(h, W0.mT).mul_(Rr)
            if inv is None:
                u.add_(upd)
                upds.append(None)
            else:
                u.addcmul_(upd, inv)
                upds.append(upd)
            hs.append(h)
            As.append(A)
            if l < L - 1:
                h, du, _ = act_d(activation, u)
                dus.append(du)
        outW, outS = [], []
        for l in range(L):
            a, dlt, W0, Wst, S, _ = lay[l]
            Wst = W0 if Wst is None else Wst
            if W0.shape[-1] <= W0.shape[-2]:
                Wn = torch.bmm(dlt.mT, a * nc.unsqueeze(-1))
                Sn = torch.bmm(dlt.mT, a * nd.unsqueeze(-1))
            else:
                Wn = torch.bmm((dlt * nc.unsqueeze(-1)).mT, a)
                Sn = torch.bmm((dlt * nd.unsqueeze(-1)).mT, a)
            if R_end is None:
                Wn.add_(Wst)
            else:
                Wn.addcmul_(Wst, R_end)
            if e_end is not None:
                Wn.addcmul_(S, e_end)
            if M_end is not None:
                Sn.addcmul_(S, M_end)
            outW.append(Wn)
            outS.append(Sn)
        ctx.L, ctx.activation = L, activation
        present = lambda xs: [x is not None for x in xs]  # noqa: E731
        ctx.flags = (present(dus), present(upds))
        ctx.save_for_backward(
            Rr, R_end, e_end, M_end, nc, nd, ncr, er, *layers,
            *hs, *As, *[x for x in dus + upds if x is not None])
        return (u, *outW, *outS)

    @staticmethod
    @once_differentiable
    def backward(ctx, gu, *gstate):  # noqa: D102
        L = ctx.L
        sv = list(ctx.saved_tensors)
        Rr, R_end, e_end, M_end, nc, nd, ncr, er = sv[:8]
        i = 8
        lay = [sv[i + 6 * l:i + 6 * l + 6] for l in range(L)]
        i += 6 * L
        hs, As = sv[i:i + L], sv[i + L:i + 2 * L]
        rest = iter(sv[i + 2 * L:])
        dus, upds = ([next(rest) if f else None for f in fl] for fl in ctx.flags)
        gWp, gSp = gstate[:L], gstate[L:]  # owned by autograd: never modified in place
        nc1, nd1 = nc.unsqueeze(-1), nd.unsqueeze(-1)

        g_lay: list[list[Optional[Tensor]]] = [[None] * 6 for _ in range(L)]
        gR = ge = gM = gnc = gnd = gRr = ger = gncr = None

        def acc(x: Optional[Tensor], y: Tensor) -> Tensor:  # x: None or a fresh tensor
            return y if x is None else x.add_(y)

        # end of chunk: W' = R Wst + e S + dlt^T (nc a),  S' = M S + dlt^T (nd a)
        for l in range(L):
            a, dlt, W0, Wst, S, _ = lay[l]
            sep = Wst is not None
            Wst = W0 if Wst is None else Wst
            gw, gs = gWp[l], gSp[l]
            gl = g_lay[l]
            gl[3 if sep else 2] = gw * R_end if R_end is not None else gw.clone()
            gS = gs * M_end if M_end is not None else None
            if e_end is not None:
                gS = gw * e_end if gS is None else gS.addcmul_(gw, e_end)
                ge = acc(ge, _dot(gw, S))
            gl[4] = gS
            if R_end is not None:
                gR = acc(gR, _dot(gw, Wst))
            if M_end is not None:
                gM = acc(gM, _dot(gs, S))
            if W0.shape[-1] <= W0.shape[-2]:  # rows of a are short: scale a
                gl[1] = torch.bmm(a * nc1, gw.mT).baddbmm_(a * nd1, gs.mT)
                gxc, gxd = torch.bmm(dlt, gw), torch.bmm(dlt, gs)
                gnc = acc(gnc, (gxc * a).sum(-1))
                gnd = acc(gnd, (gxd * a).sum(-1))
                gl[0] = gxc.mul_(nc1).addcmul_(gxd, nd1)
            else:  # rows of dlt are short: scale dlt
                gl[0] = torch.bmm(dlt * nc1, gw).baddbmm_(dlt * nd1, gs)
                pw, ps = torch.bmm(a, gw.mT), torch.bmm(a, gs.mT)
                gnc = acc(gnc, (pw * dlt).sum(-1))
                gnd = acc(gnd, (ps * dlt).sum(-1))
                gl[1] = pw.mul_(nc1).addcmul_(ps, nd1)
        # reads, last layer first: u = R (h W0^T) + inv (er (h S^T) + ((h a^T) * ncr) @ dlt)
        gh = gu
        for l in range(L - 1, -1, -1):
            a, dlt, W0, Wst, S, inv = lay[l]
            small_out = W0.shape[-2] <= W0.shape[-1]
            gl = g_lay[l]
            h = hs[l]
            if l < L - 1:
                gu = gh.mul_(dus[l]) if dus[l] is not None else gh
            tW = torch.bmm(gu, W0)  # d/dh of h W0^T, before the R_t row scale
            if Rr is not None:
                gRr = acc(gRr, (tW * h).sum(-1, keepdim=True))
                gW0 = (torch.bmm((gu * Rr).mT, h) if small_out
                       else torch.bmm(gu.mT, h * Rr))
                gh = tW.mul_(Rr)
            else:
                gW0 = torch.bmm(gu.mT, h)
                gh = tW
            gl[2] = acc(gl[2], gW0)
            gue = gu
            if inv is not None:
                gl[5] = _dot(gu, upds[l])
                gue = gu * inv
            if er is not None:
                tS = torch.bmm(gue, S)
                ger = acc(ger, (tS * h).sum(-1, keepdim=True))
                gSr = (torch.bmm((gue * er).mT, h) if small_out
                       else torch.bmm(gue.mT, h * er))
                gl[4] = acc(gl[4], gSr)
                gh.addcmul_(tS, er)
            gP = torch.bmm(gue, dlt.mT)
            gl[1].baddbmm_((As[l] * ncr).mT, gue)
            gncr = acc(gncr, gP * As[l])
            gA = gP.mul_(ncr)
            gl[0].baddbmm_(gA.mT, h)
            gh.baddbmm_(gA, a)
        flat = [g for gl in g_lay for g in gl]
        return (None, None, gh, gRr, gR, ge, gM, gnc, gnd, gncr, ger, *flat)
