"""Deep (MLP) memory, chunked form: the TTT dual form with momentum, decay and Omega window.

Notation (the family legend, with the rule this form computes, is in
:mod:`nlc.primitives.deep`)::

    B batch   H heads   T tokens   C chunk size (``chunk``)   G = B H   L depth
    W_l, S_l  layer-l weights and momentum (the state)   W_xi, S_xi  at the chunk start
    a_{l-1,j}, delta_{l,j}  layer input and back-propagated error of write key j at M_xi
    R, Mp     products of the retention / momentum gates inside a chunk
    c, c', e  the chunk coefficients derived below;  w = window - 1

Chunked form (the TTT "dual form" with momentum and decay). At frozen weights every per-token
layer gradient is rank one, grad_{W_l} l(M_xi; k_j, v_j) = delta_{l,j} a_{l-1,j}^T with a the
layer input and delta the back-propagated error (analytic objective / activation
derivatives, batched matmuls, no autograd in the inner loop). Derivation, positions
t = 1..C inside a chunk, u_t = g_t (one gradient, or the Omega window sum)::

    S_t = Mp_t S_xi - sum_{s<=t} (Mp_t / Mp_s) lr_s u_s                 (unroll S)
    W_t = R_t W_xi + sum_{tau<=t} (R_t / R_tau) S_tau                  (unroll W)
        = R_t W_xi + e_t S_xi - sum_{s<=t} c_{t,s} u_s
    R_t = prod_{i<=t} r_i,  Mp_t = prod_{i<=t} m_i,  e_t = sum_{tau<=t} (R_t / R_tau) Mp_tau
    c_{t,s} = sum_{s<=tau<=t} (R_t / R_tau) (Mp_tau / Mp_s) lr_s,  i.e.
    c = DR @ (DM * lr[None, :]),  DR[t, tau] = R_t / R_tau,  DM[tau, s] = Mp_tau / Mp_s  (lower)
    c' = c @ Band(gamma)   (u_s = sum_j Band[s, j] gamma_j G_j: key j is in the Omega window of
                            every step s with j <= s < j + c; c = 1: c' = c diag(gamma))

so W_t = R_t W_xi + e_t S_xi - sum_j c'_{t,j} delta_j a_j^T, and a query is read
attention-like, layer by layer (the hidden activations of a query use the per-token weights
of the layer below; ``read_after_write=False`` uses the rows of t - 1)::

    z_l = R (h W_xi^T) + e (h S_xi^T) - ((c' * (h A^T)) @ Delta)

End-of-chunk weights and momentum are the last rows: two rank-J matmuls Delta^T (coef * A).
DR / DM are exp of differences of log-cumsums inside the chunk, masked before the exp (a
gate that is exactly 0 is clamped to the smallest normal float: its product is ~1e-38 /
1e-308 instead of 0, and it gets no gradient). No (T, D_l, D_{l-1}) weight tensor is ever
formed; the Python loop runs over chunks only.

The per-chunk work is two ``torch.autograd.Function`` s with hand-written backward passes
(:mod:`~nlc.primitives.deep.kernels`, :mod:`~nlc.primitives.deep.read_end`); gate
coefficients, guards and the MIRAS maps stay ordinary autograd. Gradients flow to the
initial weights (``init_deep_state`` expands the meta-learned ``params``), q, k, v and all
gates. Limits of the chunked form: first-order gradients only (no double backward), and
``p`` / ``delta`` / ``grad_clip`` / ``normalize_eps`` / ``lq`` / ``elastic_lambda`` get
gradients only where they enter through autograd glue (``lq``, ``elastic_lambda``,
``grad_clip``, ``normalize_eps`` do; ``p`` and ``delta`` do not). The reference form
(:mod:`~nlc.primitives.deep.reference`) differentiates everything
through ``torch.func``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .common import (
    HParam, check_config, deep_layers, guard_scale, hparam, layer_norm_out, log_gate_cumsum,
    lq_norm_scale, mlp_forward, segment_products, soft_threshold, token_hparam,
)
from .kernels import key_path, s_part, w_part
from .read_end import read_end

__all__ = ["deep_memory_chunked"]


def _gate_coeffs(lr: Tensor, mom: Optional[Tensor], ret: Optional[Tensor],
                 gam: Optional[Tensor], w: int, raw: bool) -> dict[str, Optional[Tensor]]:
    """Chunk coefficients from gates (..., C) (gam: (..., C + w) over the window keys)."""
    C = lr.shape[-1]
    dev = lr.device
    i = torch.arange(C, device=dev)
    if ret is None:
        DR = (i[:, None] >= i[None, :]).to(lr.dtype)
        Rc = None
    else:
        cs = log_gate_cumsum(ret)
        DR, Rc = segment_products(cs), torch.exp(cs)
    if mom is None:  # S_t = -lr_t g_t: DM = I
        c = DR * lr.unsqueeze(-2)
        e = M_end = None
        mrow = torch.where(i == C - 1, lr, 0.0)
    else:
        cs = log_gate_cumsum(mom)
        DM, Mc = segment_products(cs), torch.exp(cs)
        e = (DR @ Mc.unsqueeze(-1)).squeeze(-1)
        c = DR @ (DM * lr.unsqueeze(-2))
        mrow = DM[..., -1, :] * lr
        M_end = Mc[..., -1]
    if w > 0:  # Omega: token s (ext index s + w) sums the gradients of ext keys s .. s + w
        j = torch.arange(C + w, device=dev)
        band = ((j[None, :] >= i[:, None]) & (j[None, :] <= i[:, None] + w)).to(lr.dtype)
        band = band * gam.unsqueeze(-2)  # (..., C, C + w)
        c = c @ band
        mrow = (mrow.unsqueeze(-2) @ band).squeeze(-2)
    elif gam is not None:
        c = c * gam.unsqueeze(-2)
        mrow = mrow * gam
    c = -c  # the kernels take -c' (and -c'_end, -d_end): W_t = ... + sum_j (-c'_tj) G_j
    out: dict[str, Optional[Tensor]] = {
        "R_end": None if Rc is None else Rc[..., -1],
        "e_end": None if e is None else e[..., -1],
        "nc_end": c[..., -1, :], "M_end": M_end, "nd_end": -mrow,
    }
    if raw:
        out.update(Rr=Rc, er=e, ncr=c)
    else:  # row t reads the weights after t-1 tokens; row 0 = chunk start (R 1, e 0, c' 0)
        out["Rr"] = None if Rc is None else torch.cat([torch.ones_like(Rc[..., :1]),
                                                       Rc[..., :-1]], -1)
        out["er"] = None if e is None else torch.cat([torch.zeros_like(e[..., :1]),
                                                      e[..., :-1]], -1)
        out["ncr"] = torch.cat([torch.zeros_like(c[..., :1, :]), c[..., :-1, :]], -2)
    return out


def deep_memory_chunked(
    state: dict[str, Tensor], q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
    momentum: Optional[Tensor] = None, retention: Optional[Tensor] = None,
    gamma: Optional[Tensor] = None, *, chunk: int = 64, window: int = 1,
    activation: str = "gelu", residual: bool = False, objective: str = "l2",
    p: HParam = 2.0, delta: HParam = 1.0, read_after_write: bool = False,
    grad_clip: Optional[HParam] = None, grad_normalize: bool = False,
    normalize_eps: HParam = 1e-6, global_retention: str = "decay", lq: HParam = 4.0,
    elastic_lambda: HParam = 0.0, norm: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Deep MLP memory (Titans Eqs. 8-14 / MIRAS / ATLAS Omega), chunkwise-parallel form.

    Args (layout (B, H, T, D)): ``state`` from :func:`init_deep_state`; ``q``, ``k``
    (B, H, T, Dk); ``v`` (B, H, T, Dv); gates (B, H, T) (or broadcastable): ``lr`` step size,
    ``momentum`` surprise decay (None = 0, no momentum), ``retention`` (None = 1; Titans
    1 - alpha), ``gamma`` Omega / per-token weight (None = 1). ``chunk``: gradients frozen
    at the chunk start; ``window``: Omega window c (the state carries ``omega_*`` when
    c > 1; missing means empty). ``p`` (lp), ``delta`` (huber), ``grad_clip``,
    ``normalize_eps``, ``lq`` (Moneta q), ``elastic_lambda``: floats or tensors, scalar or
    (B, H); ``delta`` may also be per token (B, H, T) (MIRAS' Yaad delta_t; window 1).
    ``norm``: (gamma, beta), each (H, Dv), the output LayerNorm of TTT (family legend).
    Returns ``(o (B, H, T, Dv), new_state)``; see the family docstring for the exact
    semantics (same results as :func:`deep_memory_reference`). The returned ``W{l}`` /
    ``S{l}`` may be (non-contiguous) views of one stacked buffer.
    """
    check_config(activation, objective, global_retention, chunk, window)
    if global_retention == "kl":
        raise ValueError("kl retention forms per-token weights: deep_memory_per_token_chunked")
    prefix, L = deep_layers(state)
    B, H, T, Dk = q.shape
    Dv = v.shape[-1]
    G, w, raw = B * H, window - 1, read_after_write
    d_tok = token_hparam(delta, B, H, T)
    if d_tok is not None and window > 1:
        raise ValueError("a per-token delta takes window 1 (each Omega step sums several tokens)")
    p_t, d_t = hparam(p, q, B, H, 2), (hparam(delta, q, B, H, 2) if d_tok is None else None)
    nrm = None if norm is None else tuple(x.expand(B, H, Dv).reshape(G, 1, Dv) for x in norm)
    qexp, lam = hparam(lq, q, B, H, 2), hparam(elastic_lambda, q, B, H, 2)
    clip = None if grad_clip is None else hparam(grad_clip, q, B, H, 1)
    eps = hparam(normalize_eps, q, B, H, 1)
    guards = grad_clip is not None or grad_normalize

    gshape = (B, H, T)
    lr = lr.expand(gshape).reshape(G, T)
    mom = None if momentum is None else momentum.expand(gshape).reshape(G, T)
    ret = None if retention is None else retention.expand(gshape).reshape(G, T)
    gam = None if gamma is None else gamma.expand(gshape).reshape(G, T)
    qf = q.reshape(G, T, Dk)
    kx, vx = k.reshape(G, T, Dk), v.reshape(G, T, Dv)
    gx = gam
    if w > 0:  # prefix the carried Omega window (ext index = token index + w)
        ck = state.get("omega_k", k.new_zeros(B, H, w, Dk)).reshape(G, w, Dk)
        cv = state.get("omega_v", v.new_zeros(B, H, w, Dv)).reshape(G, w, Dv)
        cg = state.get("omega_gamma", q.new_zeros(B, H, w)).reshape(G, w)
        kx, vx = torch.cat([ck, kx], 1), torch.cat([cv, vx], 1)
        gx = torch.cat([cg, q.new_ones(G, T) if gam is None else gam], 1)

    # per-chunk operands: full chunks (n x C, gate coefficients in one batch) + remainder.
    # unbind (not indexing) so the backward assembles each input once, not once per chunk.
    nf, rem = T // chunk, T % chunk
    chunks = []
    for start, n, C in ((0, nf, chunk), (nf * chunk, 1, rem)):
        if n == 0 or C == 0:
            continue

        def blk(x: Optional[Tensor]) -> Optional[Tensor]:
            return None if x is None else x[:, start:start + n * C].unflatten(1, (n, C))

        def win(x: Tensor) -> Tensor:  # (G, n, C + w, ...) overlapping windows of ext keys
            if w == 0:
                return blk(x)
            u = x[:, start:start + n * C + w].unfold(1, C + w, C)
            return u if u.dim() == 3 else u.movedim(-1, 2)

        co = _gate_coeffs(blk(lr), blk(mom), blk(ret), None if gx is None else win(gx), w, raw)
        cols = {key: ([None] * n if val is None else val.unbind(1)) for key, val in co.items()}
        cols["q"], cols["k"], cols["v"] = blk(qf).unbind(1), win(kx).unbind(1), win(vx).unbind(1)
        cols["delta"] = [d_t] * n if d_tok is None else blk(d_tok).unsqueeze(-1).unbind(1)
        chunks += [{key: val[j] for key, val in cols.items()} for j in range(n)]

    # stacked state per layer: [W | S] when W is taller than wide, else [W; S] (the short side)
    shapes = [state[f"{prefix}{l}"].shape[2:] for l in range(1, L + 1)]
    layouts = tuple("col" if i <= o else "row" for o, i in shapes)
    WSs = [torch.cat([state[f"{prefix}{l}"].reshape(G, o, i), state[f"S{l}"].reshape(G, o, i)],
                     -1 if lt == "col" else -2)
           for l, (o, i), lt in zip(range(1, L + 1), shapes, layouts)]
    lq_mode = global_retention == "lq"
    kcfg = (L, activation, objective, residual, ("plain",) * L if lq_mode else layouts)
    rcfg = (L, activation, layouts, not lq_mode)
    outs = []
    for ch in chunks:
        Qc, Kc, Vc = ch["q"], ch["k"], ch["v"]
        # write keys at M_xi: layer inputs a_{l-1} and back-propagated errors delta_l
        if lq_mode:  # Moneta: M_xi = A_xi / nu(A_xi), the normaliser frozen for the chunk
            As_ = [w_part(x, lt) for x, lt in zip(WSs, layouts)]
            inv = [1.0 / lq_norm_scale(a, qexp) for a in As_]
            kp = key_path(kcfg, Kc, Vc, p_t, ch["delta"], *[a * s for a, s in zip(As_, inv)], norm=nrm)
        else:
            kp = key_path(kcfg, Kc, Vc, p_t, ch["delta"], *WSs, norm=nrm)
        ins, deltas = [Kc, *kp[:L - 1]], list(kp[L - 1:])

        ncr, nc, nd = ch["ncr"], ch["nc_end"], ch["nd_end"]
        if guards:  # ||delta a^T||_F^2 = ||delta||^2 ||a||^2, summed over layers
            sq = sum(deltas[l].pow(2).sum(-1) * ins[l].pow(2).sum(-1) for l in range(L))
            sc = guard_scale(sq, clip, grad_normalize, eps)
            ncr, nc, nd = ncr * sc.unsqueeze(-2), nc * sc, nd * sc
        Rr = None if ch["Rr"] is None else ch["Rr"].unsqueeze(-1)
        er = None if ch["er"] is None else ch["er"].unsqueeze(-1)
        R_end = None if ch["R_end"] is None else ch["R_end"][:, None, None]
        e_end = None if ch["e_end"] is None else ch["e_end"][:, None, None]
        M_end = None if ch["M_end"] is None else ch["M_end"][:, None, None]
        layers: list[Optional[Tensor]] = []
        for l in range(L):
            if lq_mode:  # reads use A: R / nu on the A part, 1 / nu on the update part
                Rr_l = inv[l].expand(G, Qc.shape[1], 1) if Rr is None else Rr * inv[l]
                er_l = None if er is None else er * inv[l]
                layers += [ins[l], deltas[l], WSs[l], Rr_l, er_l, ncr * inv[l]]
            else:
                layers += [ins[l], deltas[l], WSs[l], None, None, None]
        common = (None, None, None) if lq_mode else (Rr, er, ncr)
        res = read_end(rcfg, Qc, *common, R_end, e_end, M_end, nc, nd, *layers)
        o = layer_norm_out(res[0], nrm)
        o = o + Qc if residual else o
        newWS = list(res[1:])
        if global_retention == "elastic":
            newWS = [torch.cat([soft_threshold(w_part(x, lt), lam), s_part(x, lt)],
                               -1 if lt == "col" else -2) for x, lt in zip(newWS, layouts)]
        if raw and global_retention != "decay":  # the boundary token reads phi(A_end)
            Wphi = [w_part(x, lt) for x, lt in zip(newWS, layouts)]
            if lq_mode:
                Wphi = [a / lq_norm_scale(a, qexp) for a in Wphi]
            last = mlp_forward(Wphi, Qc[:, -1:], activation, residual, nrm)
            o = torch.cat([o[:, :-1], last], 1)
        outs.append(o)
        WSs = newWS

    o = torch.cat(outs, 1).reshape(B, H, T, Dv) if outs else q.new_zeros(B, H, 0, Dv)
    new = {f"{prefix}{l + 1}": w_part(WSs[l], layouts[l]).reshape(B, H, *shapes[l])
           for l in range(L)}
    new.update({f"S{l + 1}": s_part(WSs[l], layouts[l]).reshape(B, H, *shapes[l])
                for l in range(L)})
    if w > 0:
        nx = kx.shape[1]
        new["omega_k"] = kx[:, nx - w:].reshape(B, H, w, Dk)
        new["omega_v"] = vx[:, nx - w:].reshape(B, H, w, Dv)
        new["omega_gamma"] = gx[:, nx - w:].reshape(B, H, w)
    return o, new
