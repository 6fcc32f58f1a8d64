"""HOPE self-modifying Titans, chunkwise-parallel form (NL-arXiv Eqs. 90-91).

Notation (the family legend, with the rule this form computes, is in
:mod:`nlc.primitives.selfmod`)::

    B batch   H heads   T tokens in the call   D per-head width   Dh memory hidden width
    R         number of stacked component memories (they share k, eta, alpha)
    C_m, C_o  ``chunk_memory`` (main memory) and ``chunk_other`` (the component memories)
    W1 (B, H, [R,] D, Dh), W2s (B, H, R Dh, D): the memories' weights, stacked; S1, S2 momenta
    e, h, delta2  rank-1 factors of the frozen inner gradients (dL/dW1 = e h^T, dL/dW2 =
              delta2 k^T)
    P, Dm     decays of one chunk, (.., C+1) and (.., C+1, C)
              (:func:`nlc.primitives.matrix.kernels.log_decay`)

Chunked algorithm. The component memories never read the main memory, so pass 1 runs them
alone over chunk_other chunks (stacked into one batch: they share k, eta, alpha, so their W2
rows stack into one (R Dh, D) matrix under one generalized delta recurrence) and emits their
roles for all T; pass 2 runs the main memory over chunk_memory chunks. Inside a chunk, with
frozen rank-1 gradients and no momentum, W2 follows the generalized delta recurrence
S_t = S_{t-1}(alpha_t I - b_t k_t k_t^T) + u_t k_t^T of :mod:`nlc.primitives.matrix`
with b = p eta, u = -eta delta2 (UT transform), and W1 a decayed sum (b = 0, keys h = act(W2_xi
k), u = -eta e). The main memory reads attention-like, layer by layer: z_t = W2_{t-1} q_t is
the delta kernel's read, then W1_{t-1} act(z_t) the decayed-sum read. Pass 1 reads nothing
from its memories' per-token states, so it forms only the end-of-chunk map of the same UT
transform (:func:`nlc.primitives.matrix.kernels.chunk_end_state`), with the decays of one
``log_decay`` shared by W1 and W2; the frozen-gradient error e = M(k) - M(v) takes one W1
matmul on act(W2 k) - act(W2 v). With momentum both passes use
:func:`~nlc.primitives.selfmod.momentum.momentum_chunk` instead. Loops run over chunks only.
Streaming equals the whole call when segments split at multiples of ``chunk_memory``.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from ..activations import act, act_derivative
from ..layers import l2_normalize, readout_gate
from ..matrix.chunk import generalized_delta_chunked
from ..matrix.kernels import chunk_end_state, log_decay, log_gate
from .common import GATES, MEMORY, HParam, check_chunks, check_roles, components_of, eta_ceiling
from .momentum import momentum_chunk

__all__ = ["selfmod_chunked", "selfmod_memory", "selfmod_roles"]

# R memories that read the same inputs are stacked: W1 (B, H, R, D, Dh) and their input-side
# matrices as rows of one W2s (B, H, R Dh, D), so layer 2 is a single matmul for all R and
# W2s is directly the state of one generalized delta recurrence (shared k, eta, alpha).
def _split(a: Tensor, R: int) -> Tensor:
    """(B, H, n, R Dh) -> (B, H, R, n, Dh)."""
    return a.unflatten(-1, (R, -1)).transpose(2, 3)


def _mlp_stacked(W1: Tensor, W2s: Tensor, z: Tensor, activation: str) -> Tensor:
    """M_r(z) for the R stacked memories at shared inputs z (B, H, n, D): (B, H, R, n, D)."""
    a = act(activation, z @ W2s.mT)
    return z.unsqueeze(2) + _split(a, W1.shape[2]) @ W1.mT


def _frozen_grads(W1: Tensor, W2s: Tensor, k: Tensor, v: Tensor, activation: str
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-1 gradient factors of 1/2 ||M_r(k_t) - M_r(v_t)||^2 at frozen stacked weights.

    k, v (B, H, C, D) shared by the R memories. Returns e (B, H, R, C, D), h (B, H, R, C, Dh)
    and delta2 (B, H, C, R Dh): dL/dW1_r = e h^T, dL/dW2_r = delta2_r k^T. The self-target
    M_r(v) is a constant of the inner gradient.
    """
    C, R = k.shape[-2], W1.shape[2]
    vk = torch.cat([v, k], -2)  # one pass per layer for the targets and the keys
    z = vk @ W2s.mT  # (B, H, 2C, R Dh)
    av, ak = act(activation, z).split(C, 2)  # split, not slicing: backward is one cat
    da = act_derivative(activation, z.split(C, 2)[1])  # act' only where the gradient needs it
    # e = M_r(k) - M_r(v) = (k - v) + W1 (act(W2 k) - act(W2 v)): one W1 matmul for both
    e = (k - v).unsqueeze(2) + _split(ak - av, R) @ W1.mT  # (B, H, R, C, D)
    d2 = (e @ W1).transpose(2, 3).flatten(3)  # W1^T e, (B, H, C, R Dh)
    return e, _split(ak, R), (d2 if da is None else d2 * da)


def _decays(alpha: Optional[Tensor], beta: Optional[Tensor], C: int, like: Tensor):
    """log_decay of the retention (alpha None: 1) and, with a momentum, of beta."""
    dec = log_decay(None if alpha is None else log_gate(alpha), C, like)
    return dec, None if beta is None else log_decay(log_gate(beta), C, like)


def _with_r(decay):
    """Decays (P (.., C+1), D (.., C+1, C)) with a stacked-memory dim before the token dims."""
    P, D = decay
    return P.unsqueeze(-2), D.unsqueeze(-3)


# ----------------------------------------------------------------------------- chunked form
def _readouts(params: Mapping[str, Tensor], gates: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The generated gates' read-outs stacked once per call: w (H, G, 1, D), b (H, G, 1)."""
    w = torch.stack([params[f"w_{g}"] for g in gates], 1).unsqueeze(2)
    return w, torch.stack([params[f"b_{g}"] for g in gates], 1).unsqueeze(2)


def _add_matmul(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x + a @ b for batched (..., m, n) x: one baddbmm over the flattened leading dims (its
    backward passes the gradient of x through without an elementwise op)."""
    return torch.baddbmm(x.flatten(0, -3), a.flatten(0, -3), b.flatten(0, -3)).view(x.shape)


def _generated(y: Tensor, comps: tuple[str, ...], readouts, em: Tensor, normalize_k: bool,
               normalize_q: bool) -> dict[str, Tensor]:
    """The roles the stacked components' outputs y (B, H, R, C, D) generate (NL-arXiv Eqs. 83-85,
    with the read-outs of :func:`_readouts`)."""
    at = {r: i for i, r in enumerate(comps)}
    out = {r: y[:, :, at[r]] for r in ("k", "v", "q") if r in at}
    for r, norm in (("k", normalize_k), ("q", normalize_q)):
        if r in out and norm:
            out[r] = l2_normalize(out[r])
    gates = tuple(g for g in GATES if g in at)  # adjacent in the stacking order
    if gates:
        lo = at[gates[0]]
        values = readout_gate(y[:, :, lo:lo + len(gates)], *readouts)  # (B, H, G, C)
        for i, g in enumerate(gates):
            out[g] = em * values[:, :, i] if g == "eta" else values[:, :, i]
    return out


def _others_chunk(mem: tuple[Tensor, ...], x: Tensor, given: dict[str, Tensor], beta: Optional[Tensor],
                  comps: tuple[str, ...], readouts, em: Tensor, precondition: bool,
                  normalize_k: bool, normalize_q: bool, activation: str):
    """One chunk_other chunk of the stacked components ``mem`` = (W1, W2s[, S1, S2s]): their
    generated roles and their end-of-chunk weights (and momentum buffers)."""
    C = x.shape[2]
    W1, W2s = mem[:2]
    roles = {**given, **_generated(_mlp_stacked(W1, W2s, x, activation), comps, readouts, em,
                                   normalize_k, normalize_q)}
    k, eta, alpha = roles["k"], roles["eta"], roles.get("alpha")
    e, h, d2 = _frozen_grads(W1, W2s, k, roles["v"], activation)
    b = eta if precondition else None
    u2 = -eta.unsqueeze(-1) * d2
    dec, mdec = _decays(alpha, beta, C, x)
    if mdec is not None:  # momentum: W2 rows under one recurrence, W1 per memory (keys h)
        S1, S2s = mem[2:]
        _, W2n, S2n = momentum_chunk(W2s, S2s, k, u2, dec, mdec, b=b)
        _, W1n, S1n = momentum_chunk(W1, S1, h, -eta[:, :, None, :, None] * e, _with_r(dec), _with_r(mdec))
        return roles, (W1n, W2n, S1n, S2n)
    P, Dm = dec  # shared by both layers
    W2n = chunk_end_state(W2s, k, u2, P, Dm, b=b)  # one DGD recurrence on the stacked rows
    # W1_end = R_C W1_xi - sum_j (R_C / R_j) eta_j e_j h_j^T    (R_t = prod_{i<=t} alpha_i)
    coef = -(Dm[..., C, :] * eta)  # (B, H, C)
    W1n = _add_matmul(W1 * P[..., C, None, None, None], e.mT, coef[:, :, None, :, None] * h)
    return roles, (W1n, W2n)


def _memory_chunk(mem: tuple[Tensor, ...], roles: dict[str, Tensor], beta: Optional[Tensor],
                  precondition: bool, activation: str) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One chunk_memory chunk of the main memory ``mem`` = (W1, W2[, S1, S2]): per-token
    reads o_t and its end weights (and momentum buffers)."""
    q, k, eta, alpha = roles["q"], roles["k"], roles["eta"], roles.get("alpha")
    C = q.shape[2]
    W1, W2 = mem[:2]
    e, h, d2 = _frozen_grads(W1.unsqueeze(2), W2, k, roles["v"], activation)
    a, b = eta.unsqueeze(-1), eta if precondition else None
    if beta is not None:
        dec, mdec = _decays(alpha, beta, C, q)
        z, W2n, S2n = momentum_chunk(W2, mem[3], k, -a * d2, dec, mdec, b=b, q=q)
        o1, W1n, S1n = momentum_chunk(W1, mem[2], h[:, :, 0], -a * e[:, :, 0], dec, mdec,
                                      q=act(activation, z))
        return q + o1, (W1n, W2n, S1n, S2n)
    # layer 2 (input side): z_t = W2_{t-1} q_t under the DGD recurrence (UT transform)
    z, s2 = generalized_delta_chunked({"S": W2}, q, k, -a * d2, retention=alpha, b=b, chunk=C)
    # layer 1 (output side): W1_{t-1} act(z_t), W1 a decayed sum with keys h (dual form)
    o1, s1 = generalized_delta_chunked({"S": W1}, act(activation, z), h[:, :, 0],
                                       -a * e[:, :, 0], retention=alpha, chunk=C)
    return q + o1, (s1["S"], s2["S"])


def _buffers(state: Mapping[str, Tensor], r: str) -> tuple[str, ...]:
    """The state keys of memory ``r``: W1, W2 and, when the state has them, S1, S2."""
    names = ("W1", "W2", "S1", "S2") if f"S1_{r}" in state else ("W1", "W2")
    return tuple(f"{n}_{r}" for n in names)


def selfmod_roles(state: Mapping[str, Tensor], x: Optional[Tensor], given: Mapping[str, Tensor], *,
                  params: Mapping[str, Tensor], beta: Optional[Tensor], precondition: bool = True,
                  chunk_other: int = 16, eta_max: HParam = 1.0, normalize_k: bool = True,
                  normalize_q: bool = True, activation: str = "gelu"
                  ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Pass 1 of :func:`selfmod_chunked`: the roles of every token, ``given`` and generated by
    the component memories of ``state`` (over chunk_other chunks), and the components' new
    state (their keys only; none without components). ``beta`` (B, H, T) or None. The
    roles of a token depend on the state at its chunk_other chunk's start, never on the main
    memory: a caller may cache them (the runtime does, across calls inside a chunk_memory chunk)."""
    comps = components_of(state)
    roles, new = dict(given), {}
    if not comps:
        return roles, new
    T = x.shape[2]
    keys = [_buffers(state, r) for r in comps]
    mem = tuple(torch.stack([state[ks[i]] for ks in keys], 2) if i % 2 == 0  # W1, S1
                else torch.cat([state[ks[i]] for ks in keys], 2)  # W2, S2: stacked rows
                for i in range(len(keys[0])))
    em = eta_ceiling(eta_max, x)
    gates = tuple(g for g in GATES if g in comps)
    readouts = _readouts(params, gates) if gates else None
    chunks = []
    for s in range(0, T, chunk_other):
        c = slice(s, s + chunk_other)
        out, mem = _others_chunk(mem, x[:, :, c], {r: t[:, :, c] for r, t in given.items()},
                                 None if beta is None else beta[:, :, c], comps, readouts, em,
                                 precondition, normalize_k, normalize_q, activation)
        chunks.append({r: out[r] for r in comps})
    roles.update({r: torch.cat([ch[r] for ch in chunks], 2) for r in comps})
    for i, m in enumerate(mem):
        parts = m.unbind(2) if i % 2 == 0 else m.unflatten(2, (len(comps), -1)).unbind(2)
        new.update({ks[i]: w for ks, w in zip(keys, parts)})
    return roles, new


def selfmod_memory(state: Mapping[str, Tensor], roles: Mapping[str, Tensor], *, beta: Optional[Tensor],
                   precondition: bool = True, chunk_memory: int = 64, activation: str = "gelu"
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """Pass 2 of :func:`selfmod_chunked`: the main memory of ``state`` over chunk_memory
    chunks, reading and writing with ``roles`` (``q``, ``k``, ``v`` (B, H, T, D), ``eta`` and
    optionally ``alpha`` (B, H, T)). Returns o (B, H, T, D) and the main memory's new keys."""
    mem = tuple(state[n] for n in _buffers(state, MEMORY))
    outs = []
    for s in range(0, roles["q"].shape[2], chunk_memory):
        c = slice(s, s + chunk_memory)
        o, mem = _memory_chunk(mem, {r: t[:, :, c] for r, t in roles.items()},
                               None if beta is None else beta[:, :, c], precondition, activation)
        outs.append(o)
    return torch.cat(outs, 2), dict(zip(_buffers(state, MEMORY), mem))


def selfmod_chunked(state: Mapping[str, Tensor], x: Optional[Tensor], given: Mapping[str, Tensor], *,
                    params: Mapping[str, Tensor], momentum: Optional[Tensor] = None,
                    precondition: bool = True, chunk_memory: int = 64, chunk_other: int = 16,
                    eta_max: HParam = 1.0, normalize_k: bool = True, normalize_q: bool = True,
                    activation: str = "gelu") -> tuple[Tensor, dict[str, Tensor]]:
    """Self-modifying Titans (NL-arXiv Eqs. 83-91, 94), chunkwise-parallel: pass 1
    (:func:`selfmod_roles`) then pass 2 (:func:`selfmod_memory`).

    Args: ``state`` from :func:`~nlc.primitives.selfmod.common.init_selfmod_state` (``W1_<r>``, ``W2_<r>`` [, ``S1_<r>``,
    ``S2_<r>``] for the main memory and each component); ``x`` (B, H, T, D) the input the
    components read (None without components); ``given`` the roles without a component:
    ``q``, ``k``, ``v`` (B, H, T, D) (the caller projects, convolves and normalises them),
    ``eta`` (B, H, T) and optionally ``alpha`` (B, H, T) (absent: 1);
    ``params``: the read-outs ``w_<g>``, ``b_<g>`` of the generated gates (other entries
    are ignored); ``momentum``: beta (B, H, T) or broadcastable, or None (no momentum; then
    the state holds no buffers); ``precondition``: the DGD preconditioner (False: rule gd);
    ``chunk_memory`` / ``chunk_other``: the two chunk sizes of NL-arXiv §8.2 (chunk_memory a multiple
    of chunk_other, else ValueError); ``eta_max``: the ceiling of a generated eta, float or
    tensor, scalar or (B, H); ``normalize_k`` / ``normalize_q``: l2-normalise the generated
    keys / queries; ``activation`` of every memory (gelu = exact erf GELU, silu, relu,
    identity).

    Returns ``(o (B, H, T, D), new_state)`` with o_t = M_{memory,t-1}(q_t); same results as
    ``reference.selfmod_reference`` (see the family docstring for the exact semantics).
    """
    check_chunks(chunk_memory, chunk_other, activation)
    check_roles(state, x, given, momentum)
    ref = x if x is not None else given["k"]
    B, H, T, D = ref.shape
    if T == 0:
        return ref.new_zeros(B, H, 0, D), dict(state)
    beta = None if momentum is None else momentum.expand(B, H, T)
    roles, new = selfmod_roles(state, x, given, params=params, beta=beta, precondition=precondition,
                               chunk_other=chunk_other, eta_max=eta_max, normalize_k=normalize_k,
                               normalize_q=normalize_q, activation=activation)
    o, main = selfmod_memory(state, roles, beta=beta, precondition=precondition,
                             chunk_memory=chunk_memory, activation=activation)
    return o, {**new, **main}
