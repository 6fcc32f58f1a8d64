"""Reference (per-token loop) form of HOPE self-modifying Titans; see :mod:`nlc.primitives.selfmod`.

Notation::

    B batch  H heads  T tokens  D per-head width  Dh memory hidden width
    r in (k, v, eta, alpha, memory)   M_r(x) = x + W1_r act(W2_r x)   (NL-arXiv Eq. 89)
    xi_m / xi_o  start of the token's chunk_memory / chunk_other chunk (frozen states)

It reads as NL-arXiv Eqs. 83-91 (with the read-outs and choices documented in
:mod:`nlc.primitives.selfmod`): one token at a time, the inner gradients come from
``torch.func.grad`` of 1/2 ||M(k) - vhat||^2 at the frozen chunk-start weights (``vmap`` over
batch * heads), and every memory is updated by the DGD rule with weight decay (Eq. 88).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad, vmap

from nlc.primitives.layers import l2_normalize

__all__ = ["selfmod_reference"]


def selfmod_reference(state: dict[str, Tensor], x: Tensor, q: Tensor, *,
                      params: dict[str, Tensor], chunk_memory: int = 64, chunk_other: int = 16,
                      eta_max=1.0, normalize_k: bool = True,
                      activation: str = "gelu") -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop; same signature and results as :func:`selfmod.selfmod_chunked`.

    For t = 0..T-1, with F_r = M_{r,xi_o} for r in (k, v, eta, alpha) and
    F_memory = M_{memory,xi_m} (states frozen at the start of t's chunk)::

        k_t = l2norm(F_k(x_t)),  v_t = F_v(x_t)
        eta_t = eta_max sigmoid(w_eta . F_eta(x_t) + b_eta)
        alpha_t = sigmoid(w_alpha . F_alpha(x_t) + b_alpha)
        o_t = M_{memory,t-1}(q_t)
        for every r:  vhat = F_r(v_t);  (g1, g2) = grad_{W1, W2} 1/2 ||M_{F_r}(k_t) - vhat||^2
                      W2_r <- W2_r (alpha_t I - eta_t k_t k_t^T) - eta_t g2
                      W1_r <- alpha_t W1_r - eta_t g1
    """
    from nlc.primitives.selfmod import (  # local: selfmod re-exports this module
        OTHER, READOUTS, ROLES, check_chunks, eta_ceiling, gate_scalar,
    )
    from nlc.primitives.deep_common import act

    check_chunks(chunk_memory, chunk_other, activation)
    B, H, T, D = x.shape
    BH = B * H
    eye = torch.eye(D, dtype=x.dtype, device=x.device)

    def flat(t: Tensor) -> Tensor:
        return t.reshape(BH, *t.shape[2:])

    def M(W1: Tensor, W2: Tensor, z: Tensor) -> Tensor:  # one vector per (b, h): (BH, D)
        return z + (W1 @ act(activation, W2 @ z.unsqueeze(-1))).squeeze(-1)

    def loss(W1: Tensor, W2: Tensor, k: Tensor, target: Tensor) -> Tensor:  # one (b, h)
        y = k + W1 @ act(activation, W2 @ k)
        return 0.5 * ((y - target) ** 2).sum()

    inner_grad = vmap(grad(loss, argnums=(0, 1)))
    em = eta_ceiling(eta_max, x).expand(B, H, 1).reshape(BH)
    rd = {n: params[n] for n in READOUTS}

    def gate(y: Tensor, g: str) -> Tensor:  # (BH, D) -> (BH,)
        return gate_scalar(y.reshape(B, H, 1, D), rd[f"w_{g}"], rd[f"b_{g}"]).reshape(BH)

    W = {r: (flat(state[f"W1_{r}"]), flat(state[f"W2_{r}"])) for r in ROLES}
    F: dict[str, tuple[Tensor, Tensor]] = {}
    outs = []
    for t in range(T):
        if t % chunk_other == 0:  # xi_o: freeze the k, v, eta, alpha memories
            F.update({r: W[r] for r in OTHER})
        if t % chunk_memory == 0:  # xi_m: freeze the main memory
            F["memory"] = W["memory"]
        xt, qt = flat(x[:, :, t]), flat(q[:, :, t])
        k = M(*F["k"], xt)
        if normalize_k:
            k = l2_normalize(k)
        v = M(*F["v"], xt)
        eta = em * torch.sigmoid(gate(M(*F["eta"], xt), "eta"))
        alpha = torch.sigmoid(gate(M(*F["alpha"], xt), "alpha"))
        outs.append(M(*W["memory"], qt))  # read before write: M_{memory,t-1}(q_t)
        pre = alpha[:, None, None] * eye - eta[:, None, None] * (k[:, :, None] * k[:, None, :])
        for r in ROLES:
            vhat = M(*F[r], v)  # self-generated target (Eqs. 83-85)
            g1, g2 = inner_grad(*F[r], k, vhat)
            W1, W2 = W[r]
            W[r] = (alpha[:, None, None] * W1 - eta[:, None, None] * g1,
                    W2 @ pre - eta[:, None, None] * g2)  # Eq. 88 on W2, plain decay on W1
    o = torch.stack(outs, 1).reshape(B, H, T, D) if outs else q.new_zeros(B, H, 0, D)
    new = {}
    for r in ROLES:
        new[f"W1_{r}"] = W[r][0].reshape(B, H, *W[r][0].shape[1:])
        new[f"W2_{r}"] = W[r][1].reshape(B, H, *W[r][1].shape[1:])
    return o, new
