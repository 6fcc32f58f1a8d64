"""HOPE self-modifying Titans (NL-arXiv §8, Eqs. 83-93), chunkwise-parallel form (Eqs. 90-91).

Notation::

    B batch   H heads   T tokens in the call   D per-head width   Dh memory hidden width
    r         a role, one of ROLES = (k, v, eta, alpha, memory), plus q with adaptive queries
              (HOPE's "adaptive q" ablation, NL-arXiv Table 6); otherwise q is static (given)
    M_r(x)    = x + W1_r act(W2_r x)       residual 2-layer MLP (NL-arXiv Eq. 89)
              W2_r (Dh, D) input side, W1_r (D, Dh) output side (paper names; note that
              :mod:`nlc.primitives.deep` numbers the layers the other way round)
    C_m, C_o  ``chunk_memory`` (main memory) and ``chunk_other`` (k, v, eta, alpha memories)
    xi_m, xi_o  chunk starts (0-based t): xi = C floor(t / C), counted from the call start;
              M_{r,xi} is the state *before* token xi (= last state of the previous chunk)
    w_eta, b_eta, w_alpha, b_alpha   static read-outs (H, D) / (H,) (slow parameters)

The rule, per (batch, head), for t = 0..T-1 (s(r) = xi_m for r = memory, xi_o otherwise)::

    k_t     = l2norm(M_{k,xi_o}(x_t))      (l2norm only if normalize_k; HOPE §8.3)
    v_t     = M_{v,xi_o}(x_t)
    eta_t   = eta_max * sigmoid(w_eta . M_{eta,xi_o}(x_t) + b_eta)
    alpha_t = sigmoid(w_alpha . M_{alpha,xi_o}(x_t) + b_alpha)
    q_t     = l2norm(M_{q,xi_o}(x_t))      (adaptive queries only; l2norm only if normalize_q)
    vhat_{r,t} = M_{r,s(r)}(v_t)                                   (self-targets, Eqs. 83-85)
    L_r(W; t)  = 1/2 || M_W(k_t) - vhat_{r,t} ||^2, gradients at W = M_{r,s(r)} (frozen):
        h = act(W2 k_t), e = k_t + W1 h - vhat   (delta1),   delta2 = (W1^T e) * act'(W2 k_t)
        dL/dW1 = e h^T,   dL/dW2 = delta2 k_t^T
    W2_{r,t} = W2_{r,t-1} (alpha_t I - eta_t k_t k_t^T) - eta_t delta2_{r,t} k_t^T   (Eq. 88)
    W1_{r,t} = alpha_t W1_{r,t-1} - eta_t e_{r,t} h_{r,t}^T
    o_t = M_{memory,t-1}(q_t)          (read before write, per-token state; Eq. 94)

With C_m = C_o = 1 every xi is t: the exact self-referential per-token rule of Eqs. 83-88.

Choices where the paper is silent or ambiguous (paper notes §3.3-3.4, marked [U] there):

* eta and alpha are *scalars* per token and head: the eta / alpha memories map x_t to a
  D-vector which a static linear read-out (w, b) and a sigmoid turn into a gate (eta also
  times ``eta_max``). kmccleary3301/nested_learning also uses scalar per-token gates
  (softplus for eta); a sigmoid with a ceiling keeps the DGD step stable for unit k
  (eta < 1 + alpha).
* The DGD preconditioner (alpha I - eta k k^T) right-multiplies only W2, the one matrix whose
  input is k (dimensionally compatible); W1 gets the plain retention alpha (as kmccleary).
* The objective is 1/2 ||.||^2, the convention of the paper's matrix case Eq. 93
  (-eta (M_xi k - vhat) k^T, as :func:`nlc.primitives.matrix.dgd_reference`).
* The inner gradient treats vhat as a constant target (derivative w.r.t. the memory only);
  the outer (meta) gradient flows through everything, k, v, eta, alpha and vhat included,
  over the whole unrolled call (full unroll; detach the carried state to truncate).
* Chunking (Eqs. 90-91, xi = last state of the previous chunk): k, v, eta, alpha, the
  self-targets and the inner gradients come from chunk-start states. The printed Eq. 90
  also reads y_t = M_{memory,xi}(q_t); we read the per-token state M_{memory,t-1} under
  the frozen-gradient recurrence instead (same at C_m = 1, and causal/attention-like).
* The main memory freezes its gradients and self-target at M_{memory,xi_m} (chunk_memory
  grid); the other four at their own xi_o (chunk_other grid). C_m must be a multiple of
  C_o. No momentum (Eq. 88 has none; HOPE Table 6's "w/o momentum" row is not modelled).

Numerics. The self-targets grow with the weights (vhat = M(v), the W1 step scales with
||W||^2 ||v||), so the rule itself can blow up when ||v|| is large: with the default init,
D = 64 and ||x_t|| ~ 5 per head, the exact (chunk 1) rule overflows within ~10 tokens even
in float64, while unit-norm x stays bounded. Keep x normalised and eta_max moderate.
Retention < 1 with little write signal decays the weights towards 0 (a fixed point: M = id):
on CPU, float32 weights that reach subnormals make every op very slow
(``torch.set_flush_denormal(True)`` avoids it).

Chunked algorithm. The four memories k, v, eta, alpha never read the main memory, so pass 1
runs them alone over chunk_other chunks (stacked into one batch: they share k, eta, alpha,
so their W2 rows stack into one (4 Dh, D) matrix under one generalized delta recurrence) and
emits k, v, eta, alpha for all T; pass 2 runs the main memory over chunk_memory chunks.
Inside a chunk, with frozen rank-1 gradients, W2 follows the generalized delta recurrence
S_t = S_{t-1}(alpha_t I - b_t k_t k_t^T) + u_t k_t^T of :mod:`nlc.primitives.delta_kernel`
with b = eta, u = -eta delta2 (UT transform), and W1 a decayed sum (b = 0, keys h = act(W2_xi
k), u = -eta e). The main memory reads attention-like, layer by layer: z_t = W2_{t-1} q_t is
the delta kernel's read, then W1_{t-1} act(z_t) the decayed-sum read. Pass 1 reads nothing
from its memories' per-token states, so it forms only the end-of-chunk map of the same UT
transform (:func:`nlc.primitives.delta_kernel.chunk_end_state`), with the decays of one ``log_decay`` shared by W1 and W2; the
frozen-gradient error e = M(k) - M(v) takes one W1 matmul on act(W2 k) - act(W2 v). Loops run
over chunks only. Streaming equals the whole call when segments split at multiples of
``chunk_memory``.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from nlc.primitives.deep_common import ACTIVATIONS, act, act_derivative, init_deep_params
from nlc.primitives.delta_kernel import chunk_end_state, generalized_delta_chunked, log_decay, log_gate
from nlc.primitives.layers import l2_normalize, readout_gate

__all__ = [
    "ROLES", "ADAPTIVE_Q", "roles_of", "init_selfmod_params", "init_selfmod_state", "selfmod_chunked",
    "selfmod_reference",
]

ROLES = ("k", "v", "eta", "alpha", "memory")
OTHER = ROLES[:4]
ADAPTIVE_Q = "q"  # the optional fifth component: queries generated by a memory
READOUTS = ("w_eta", "b_eta", "w_alpha", "b_alpha")
HParam = Union[float, Tensor]


# ------------------------------------------------------------------- parameters and state
def init_selfmod_params(heads: int, dim: int, hidden: int, *, scale: float = 1.0,
                        out_scale: float = 0.5, eta_bias: float = 0.0,
                        alpha_bias: float = 5.0, adaptive_q: bool = False,
                        generator: Optional[torch.Generator] = None,
                        dtype: Optional[torch.dtype] = None,
                        device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """Meta-learned initial weights of the five memories and the static gate read-outs.

    Returns ``W2_<r>`` (H, Dh, D) ~ N(0, scale^2 / D), ``W1_<r>`` (H, D, Dh) ~
    N(0, out_scale^2 / Dh) for r in :data:`ROLES` (and ``q`` with ``adaptive_q``); ``w_eta``, ``w_alpha`` (H, D) ~
    N(0, 1 / D); ``b_eta`` (H,) = eta_bias (eta = eta_max / 2 at 0); ``b_alpha`` (H,) =
    alpha_bias (alpha ~ 0.993 at 5). Wrap them in ``nn.Parameter`` to learn them (NL-arXiv
    §8.1: the initial states of all memories are meta-learned across sequences).
    """
    kw = dict(dtype=dtype, device=device)
    out: dict[str, Tensor] = {}
    for r in ROLES + ((ADAPTIVE_Q,) if adaptive_q else ()):  # deep numbering: W1 = input side
        p = init_deep_params(heads, [dim, hidden, dim], generator=generator, **kw)
        out[f"W2_{r}"] = p["W1"] * scale
        out[f"W1_{r}"] = p["W2"] * out_scale
    for g, bias in (("eta", eta_bias), ("alpha", alpha_bias)):
        w = torch.randn(heads, dim, generator=generator, **kw)
        out[f"w_{g}"] = w / math.sqrt(dim)
        out[f"b_{g}"] = torch.full((heads,), float(bias), **kw)
    return out


def _adaptive(weights: dict[str, Tensor]) -> tuple[str, ...]:
    """``("q",)`` when ``weights`` (params or state) hold a q memory, else ``()``."""
    return (ADAPTIVE_Q,) if f"W1_{ADAPTIVE_Q}" in weights else ()


def roles_of(weights: dict[str, Tensor]) -> tuple[str, ...]:
    """The roles whose memories ``weights`` hold: :data:`ROLES`, plus ``q``."""
    return ROLES + _adaptive(weights)


def others_of(weights: dict[str, Tensor]) -> tuple[str, ...]:
    """The component roles (all but the main memory), in their stacking order."""
    return OTHER + _adaptive(weights)


def init_selfmod_state(params: dict[str, Tensor], batch: int) -> dict[str, Tensor]:
    """Per-sequence memories ``W1_<r>`` (B, H, D, Dh), ``W2_<r>`` (B, H, Dh, D): the initial
    weights of ``params`` *expanded* (no copy), so outer gradients reach them."""
    state = {}
    for r in roles_of(params):
        for n in ("W1", "W2"):
            w = params[f"{n}_{r}"]
            state[f"{n}_{r}"] = w.unsqueeze(0).expand(batch, *w.shape)
    return state


# ----------------------------------------------------------------------------- helpers
def check_chunks(chunk_memory: int, chunk_other: int, activation: str) -> None:
    for name, c in (("chunk_memory", chunk_memory), ("chunk_other", chunk_other)):
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"{name} must be a positive int, got {c!r}")
    if chunk_memory % chunk_other:
        raise ValueError(f"chunk_memory ({chunk_memory}) must be a multiple of chunk_other "
                         f"({chunk_other})")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def mlp(W1: Tensor, W2: Tensor, x: Tensor, activation: str) -> Tensor:
    """M(x) = x + W1 act(W2 x) for x (..., n, D), W1 (..., D, Dh), W2 (..., Dh, D)."""
    return x + act(activation, x @ W2.mT) @ W1.mT


def eta_ceiling(eta_max: HParam, like: Tensor) -> Tensor:
    """eta_max as a tensor broadcastable to (B, H, n): a scalar, or (B, H) -> (B, H, 1)."""
    t = torch.as_tensor(eta_max, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[:2]).unsqueeze(-1) if t.dim() > 0 else t


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


# ----------------------------------------------------------------------------- chunked form
def _readouts(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The eta and alpha read-outs stacked once per call: w (H, 2, 1, D), b (H, 2, 1)."""
    w = torch.stack([params["w_eta"], params["w_alpha"]], 1).unsqueeze(2)
    return w, torch.stack([params["b_eta"], params["b_alpha"]], 1).unsqueeze(2)


def _add_matmul(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x + a @ b for batched (..., m, n) x: one baddbmm over the flattened leading dims (its
    backward passes the gradient of x through without an elementwise op)."""
    return torch.baddbmm(x.flatten(0, -3), a.flatten(0, -3), b.flatten(0, -3)).view(x.shape)


def _others_chunk(W1: Tensor, W2s: Tensor, x: Tensor, readouts: tuple[Tensor, Tensor],
                  em: Tensor, normalize_k: bool, normalize_q: bool, activation: str):
    """One chunk_other chunk of the stacked (k, v, eta, alpha[, q]) memories: generated inputs
    (Eqs. 83-85 with the read-outs of :func:`_readouts`) and the end-of-chunk weights."""
    C = x.shape[2]
    y = _mlp_stacked(W1, W2s, x, activation)  # (B, H, 4 or 5, C, D)
    k = l2_normalize(y[:, :, 0]) if normalize_k else y[:, :, 0]
    v = y[:, :, 1]
    gates = readout_gate(y[:, :, 2:4], readouts[0], readouts[1])  # (B, H, 2, C)
    eta, alpha = em * gates[:, :, 0], gates[:, :, 1]
    e, h, d2 = _frozen_grads(W1, W2s, k, v, activation)
    P, Dm = log_decay(log_gate(alpha), C, x)  # shared by both layers
    # W2 of the four memories: one DGD recurrence on the stacked rows, u = -eta delta2
    W2n = chunk_end_state(W2s, k, -eta.unsqueeze(-1) * d2, P, Dm, b=eta)
    # W1_end = R_C W1_xi - sum_j (R_C / R_j) eta_j e_j h_j^T    (R_t = prod_{i<=t} alpha_i)
    coef = -(Dm[..., C, :] * eta)  # (B, H, C)
    W1n = _add_matmul(W1 * P[..., C, None, None, None], e.mT, coef[:, :, None, :, None] * h)
    generated = (k, v, eta, alpha)
    if y.shape[2] > 4:  # adaptive queries
        generated += (l2_normalize(y[:, :, 4]) if normalize_q else y[:, :, 4],)
    return generated, W1n, W2n


def _memory_chunk(W1: Tensor, W2: Tensor, q: Tensor, k: Tensor, v: Tensor, eta: Tensor,
                  alpha: Tensor, activation: str) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk_memory chunk of the main memory: per-token reads o_t and end weights."""
    C = q.shape[2]
    e, h, d2 = _frozen_grads(W1.unsqueeze(2), W2, k, v, activation)
    a = eta.unsqueeze(-1)
    # layer 2 (input side): z_t = W2_{t-1} q_t under the DGD recurrence (UT transform)
    z, s2 = generalized_delta_chunked({"S": W2}, q, k, -a * d2, retention=alpha, b=eta,
                                      chunk=C)
    # layer 1 (output side): W1_{t-1} act(z_t), W1 a decayed sum with keys h (dual form)
    o1, s1 = generalized_delta_chunked({"S": W1}, act(activation, z), h[:, :, 0],
                                       -a * e[:, :, 0], retention=alpha, chunk=C)
    return q + o1, s1["S"], s2["S"]


def selfmod_chunked(state: dict[str, Tensor], x: Tensor, q: Optional[Tensor], *,
                    params: dict[str, Tensor], chunk_memory: int = 64, chunk_other: int = 16,
                    eta_max: HParam = 1.0, normalize_k: bool = True, normalize_q: bool = True,
                    activation: str = "gelu") -> tuple[Tensor, dict[str, Tensor]]:
    """Self-modifying Titans (NL-arXiv Eqs. 83-91, 94), chunkwise-parallel.

    Args: ``state`` from :func:`init_selfmod_state` (``W1_<r>``, ``W2_<r>`` for r in
    :data:`ROLES`); ``x`` (B, H, T, D) the input the k / v / eta / alpha memories read;
    ``q`` (B, H, T, D) the static query (the caller projects, convolves and normalises it),
    or None when ``state`` holds a ``q`` memory (adaptive queries, l2-normalised if
    ``normalize_q``);
    ``params``: the read-outs ``w_eta``, ``b_eta``, ``w_alpha``, ``b_alpha`` (other entries
    are ignored); ``chunk_memory`` / ``chunk_other``: the two chunk sizes of §8.2
    (chunk_memory a multiple of chunk_other, else ValueError); ``eta_max``: float or tensor,
    scalar or (B, H); ``normalize_k``: l2-normalise the generated keys; ``activation`` of
    every memory (gelu = exact erf GELU, silu, relu, identity).

    Returns ``(o (B, H, T, D), new_state)`` with o_t = M_{memory,t-1}(q_t); same results as
    :func:`selfmod_reference` (see the module docstring for the exact semantics).
    """
    check_chunks(chunk_memory, chunk_other, activation)
    others = others_of(state)
    if (q is None) != (len(others) > len(OTHER)):
        raise ValueError("give a static q, or a state with a q memory (adaptive queries), not "
                         + ("neither" if q is None else "both"))
    B, H, T, D = x.shape
    em = eta_ceiling(eta_max, x)
    W1 = torch.stack([state[f"W1_{r}"] for r in others], 2)  # (B, H, R, D, Dh)
    W2 = torch.cat([state[f"W2_{r}"] for r in others], 2)  # (B, H, R Dh, D)
    readouts = _readouts(params)
    gates: list[tuple[Tensor, ...]] = []
    for s in range(0, T, chunk_other):  # pass 1: k, v, eta, alpha (and q) memories
        g, W1, W2 = _others_chunk(W1, W2, x[:, :, s:s + chunk_other], readouts, em,
                                  normalize_k, normalize_q, activation)
        gates.append(g)
    new = {f"W1_{r}": w for r, w in zip(others, W1.unbind(2))}
    new.update({f"W2_{r}": w for r, w in zip(others, W2.unflatten(2, (len(others), -1)).unbind(2))})
    Wm1, Wm2 = state["W1_memory"], state["W2_memory"]
    if T == 0:
        new.update(W1_memory=Wm1, W2_memory=Wm2)
        return x.new_zeros(B, H, 0, D), new
    k, v, eta, alpha, *generated_q = (torch.cat(t, 2) for t in zip(*gates))
    q = generated_q[0] if generated_q else q
    outs = []
    for s in range(0, T, chunk_memory):  # pass 2: the main memory
        c = slice(s, s + chunk_memory)
        o, Wm1, Wm2 = _memory_chunk(Wm1, Wm2, q[:, :, c], k[:, :, c], v[:, :, c],
                                    eta[:, :, c], alpha[:, :, c], activation)
        outs.append(o)
    new.update(W1_memory=Wm1, W2_memory=Wm2)
    return torch.cat(outs, 2), new


from nlc.primitives.selfmod_reference import selfmod_reference  # noqa: E402  (re-export)
