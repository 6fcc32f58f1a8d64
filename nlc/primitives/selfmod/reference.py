"""HOPE self-modifying Titans, reference form: the per-token loop (the family legend is in
:mod:`nlc.primitives.selfmod`).

Notation::

    B batch  H heads  T tokens  D per-head width  Dh memory hidden width
    r a role: the main memory or a component   M_r(x) = x + W1_r act(W2_r x)   (NL-arXiv Eq. 89)
    xi_m / xi_o  start of the token's chunk_memory / chunk_other chunk (frozen states)
    S1_r, S2_r   momentum buffers (with a momentum beta)

It reads as NL-arXiv Eqs. 83-91 (with the read-outs and choices documented in
:mod:`nlc.primitives.selfmod`): one token at a time, the inner gradients come from
``torch.func.grad`` of 1/2 ||M(k) - vhat||^2 at the frozen chunk-start weights (``vmap`` over
batch * heads), and every memory is updated by the DGD rule with weight decay (NL-arXiv Eq. 88),
through Titans' momentum when one is given (Titans Eqs. 9-10).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor
from torch.func import grad, vmap

from ..activations import act
from ..layers import l2_normalize, readout_gate
from .common import MEMORY, HParam, check_chunks, check_roles, eta_ceiling, roles_of

__all__ = ["selfmod_reference"]


def selfmod_reference(state: Mapping[str, Tensor], x: Optional[Tensor], given: Mapping[str, Tensor], *,
                      params: Mapping[str, Tensor], momentum: Optional[Tensor] = None,
                      precondition: bool = True, chunk_memory: int = 64, chunk_other: int = 16,
                      eta_max: HParam = 1.0, normalize_k: bool = True, normalize_q: bool = True,
                      activation: str = "gelu") -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop; same signature and results as ``chunk.selfmod_chunked``.

    For t = 0..T-1, with F_r = M_{r,xi_o} for the components and F_memory = M_{memory,xi_m}
    (states frozen at the start of t's chunk), each role generated or given::

        k_t = l2norm(F_k(x_t)),  v_t = F_v(x_t),  q_t = l2norm(F_q(x_t))
        eta_t = eta_max sigmoid(w_eta . F_eta(x_t) + b_eta)
        alpha_t = sigmoid(w_alpha . F_alpha(x_t) + b_alpha)      (neither: 1)
        o_t = M_{memory,t-1}(q_t)
        for every r:  vhat = F_r(v_t);  (g1, g2) = grad_{W1, W2} 1/2 ||M_{F_r}(k_t) - vhat||^2
                      S1_r <- beta_t S1_r - eta_t g1,   S2_r <- beta_t S2_r - eta_t g2
                      W2_r <- W2_r (alpha_t I - p eta_t k_t k_t^T) + S2_r
                      W1_r <- alpha_t W1_r + S1_r
    (no momentum: S_r = -eta_t g, i.e. beta = 0; p = 1 with ``precondition``, else 0).
    """
    check_chunks(chunk_memory, chunk_other, activation)
    comps = check_roles(state, x, given, momentum)
    ref = x if x is not None else given["k"]
    B, H, T, D = ref.shape
    BH = B * H
    eye = torch.eye(D, dtype=ref.dtype, device=ref.device)

    def flat(t: Tensor) -> Tensor:
        return t.reshape(BH, *t.shape[2:])

    def M(W1: Tensor, W2: Tensor, z: Tensor) -> Tensor:  # one vector per (b, h): (BH, D)
        return z + (W1 @ act(activation, W2 @ z.unsqueeze(-1))).squeeze(-1)

    def loss(W1: Tensor, W2: Tensor, k: Tensor, target: Tensor) -> Tensor:  # one (b, h)
        y = k + W1 @ act(activation, W2 @ k)
        return 0.5 * ((y - target) ** 2).sum()

    inner_grad = vmap(grad(loss, argnums=(0, 1)))
    em = eta_ceiling(eta_max, ref).expand(B, H, 1).reshape(BH)
    beta = None if momentum is None else flat(momentum.expand(B, H, T))

    def gate(y: Tensor, g: str) -> Tensor:  # (BH, D) -> (BH,), after the sigmoid
        w, b = params[f"w_{g}"], params[f"b_{g}"]
        return readout_gate(y.reshape(B, H, 1, D), w[:, None, :], b[:, None]).reshape(BH)

    roles = roles_of(state)
    W = {r: (flat(state[f"W1_{r}"]), flat(state[f"W2_{r}"])) for r in roles}
    S = {r: (flat(state[f"S1_{r}"]), flat(state[f"S2_{r}"])) for r in roles} if beta is not None else {}
    F: dict[str, tuple[Tensor, Tensor]] = {}
    outs = []
    for t in range(T):
        if t % chunk_other == 0:  # xi_o: freeze the components
            F.update({r: W[r] for r in comps})
        if t % chunk_memory == 0:  # xi_m: freeze the main memory
            F[MEMORY] = W[MEMORY]
        z = {r: flat(g[:, :, t]) for r, g in given.items()}
        for r in comps:
            y = M(*F[r], flat(x[:, :, t]))
            if r in ("k", "q") and (normalize_k if r == "k" else normalize_q):
                y = l2_normalize(y)
            z[r] = em * gate(y, r) if r == "eta" else gate(y, r) if r == "alpha" else y
        k, eta = z["k"], z["eta"]
        alpha = z.get("alpha", torch.ones_like(eta))
        outs.append(M(*W[MEMORY], z["q"]))  # read before write: M_{memory,t-1}(q_t)
        pre = alpha[:, None, None] * eye
        if precondition:
            pre = pre - eta[:, None, None] * (k[:, :, None] * k[:, None, :])
        for r in roles:
            vhat = M(*F[r], z["v"])  # self-generated target (NL-arXiv Eqs. 83-85)
            g1, g2 = inner_grad(*F[r], k, vhat)
            s1, s2 = -eta[:, None, None] * g1, -eta[:, None, None] * g2
            if beta is not None:  # Titans' momentum of the write (Titans Eqs. 9-10)
                b = beta[:, t, None, None]
                s1, s2 = b * S[r][0] + s1, b * S[r][1] + s2
                S[r] = (s1, s2)
            W1, W2 = W[r]
            # NL-arXiv Eq. 88 on W2, plain decay on W1
            W[r] = (alpha[:, None, None] * W1 + s1, W2 @ pre + s2)
    o = torch.stack(outs, 1).reshape(B, H, T, D) if outs else ref.new_zeros(B, H, 0, D)
    new = {}
    for r in roles:
        for i, n in enumerate(("W1", "W2")):
            new[f"{n}_{r}"] = W[r][i].reshape(B, H, *W[r][i].shape[1:])
            if r in S:
                new[f"S{i + 1}_{r}"] = S[r][i].reshape(B, H, *S[r][i].shape[1:])
    return o, new
