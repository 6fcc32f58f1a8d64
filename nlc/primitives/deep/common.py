"""Shared pieces of the deep (MLP) associative memory: config, MLP, objectives, state.

Notation (see :mod:`nlc.primitives.deep` for the full legend)::

    B batch   H heads   T tokens   C chunk   L memory depth (number of weight matrices)
    D_0 = Dk (key/query dim) ... D_L = Dv (value dim); hidden widths D_1 .. D_{L-1} (= Dh)
    W_l  (B, H, D_l, D_{l-1})  layer-l weights (state), S_l the momentum buffer of W_l
    M(x) = [x +] N(W_L act(W_{L-1} ... act(W_1 x)))      (Titans §3.1; HOPE NL-arXiv Eq. 89)
    N(z) = gamma * (z - mean z) / sqrt(var z + eps) + beta    with ``norm`` (TTT's LayerNorm),
           else the identity; gamma, beta (..., 1, Dv) per head

Nothing here is differentiated through ``torch.func`` except in the reference form.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..activations import ACTIVATIONS, act

__all__ = [
    "OBJECTIVES", "GLOBAL_RETENTIONS",
    "init_deep_params", "init_deep_state", "deep_layers", "mlp_forward",
    "objective_loss", "lq_norm_scale", "soft_threshold", "log_gate_cumsum", "segment_products",
    "simplex", "layer_norm_out", "layer_norm_vjp", "token_hparam",
]

OBJECTIVES = ("l2", "lp", "huber", "dot")
GLOBAL_RETENTIONS = ("decay", "lq", "elastic", "kl")
LN_EPS = 1e-5  # the memory output's LayerNorm (torch's default)

HParam = Union[float, Tensor]


# --------------------------------------------------------------------------- configuration
def check_config(activation: str, objective: str, global_retention: str, chunk: int,
                 window: int) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if global_retention not in GLOBAL_RETENTIONS:
        raise ValueError(f"global_retention must be one of {GLOBAL_RETENTIONS}, "
                         f"got {global_retention!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")


def hparam(x: HParam, like: Tensor, B: int, H: int, trailing: int) -> Tensor:
    """A hyper-parameter (float, scalar tensor or (B, H) tensor) as a tensor for the
    flattened batch*heads layout: a scalar stays a scalar, else (B*H,) + (1,) * trailing."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() > 0:
        t = t.expand(B, H).reshape((B * H,) + (1,) * trailing)
    return t


def deep_layers(state: dict[str, Tensor]) -> tuple[str, int]:
    """(prefix, depth) of a deep-memory state: prefix ``"W"`` (weights) or ``"A"`` (lq)."""
    prefix = "A" if "A1" in state else "W"
    L = 0
    while f"{prefix}{L + 1}" in state:
        L += 1
    if L == 0:
        raise ValueError("state has no 'W1' / 'A1' entry: build it with init_deep_state")
    return prefix, L


# ------------------------------------------------------------------------------ parameters
def init_deep_params(heads: int, dims: Sequence[int], *, scale: float = 1.0,
                     generator: Optional[torch.Generator] = None,
                     dtype: Optional[torch.dtype] = None,
                     device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """Initial memory weights (the meta-learned M_0): ``{"W1": (H, D_1, D_0), ...}``.

    ``dims = [Dk, Dh, ..., Dv]`` (length L + 1, L >= 1). Entries are N(0, scale^2 / fan_in).
    Wrap them in ``nn.Parameter`` to meta-learn them (NL-arXiv §8.1: initial states are
    meta-learned across sequences).
    """
    if len(dims) < 2:
        raise ValueError("dims needs at least [Dk, Dv]")
    out = {}
    for l in range(1, len(dims)):
        w = torch.randn(heads, dims[l], dims[l - 1], generator=generator, dtype=dtype,
                        device=device)
        out[f"W{l}"] = w * (scale / math.sqrt(dims[l - 1]))
    return out


def init_deep_state(params: dict[str, Tensor], batch: int, *, window: int = 1,
                    global_retention: str = "decay") -> dict[str, Tensor]:
    """Per-sequence memory state from meta-learned initial weights ``params`` (no batch dim).

    ``params["W{l}"]``: (H, D_l, D_{l-1}), l = 1..L. Returns, all leading with B:

    * ``W{l}`` (B, H, D_l, D_{l-1}): ``params`` *expanded* (no copy), so the outer optimizer
      learns the initial state through the unrolled inner updates. For
      ``global_retention="lq"`` (Moneta) the key is ``A{l}`` instead: the linear accumulator
      A_0 = params, whose normalisation A / ||A||_q^{q-2} gives the weights; for ``"kl"``
      (Memora) ``A{l}`` are logits, the weights ``mass * softmax(A)`` (:func:`simplex`).
    * ``S{l}``: momentum buffers, zeros of the same shapes.
    * ``window > 1`` (ATLAS Omega): ``omega_k`` (B, H, window-1, Dk), ``omega_v``
      (B, H, window-1, Dv), ``omega_gamma`` (B, H, window-1), zeros (gamma 0 = empty slot).
    """
    if global_retention not in GLOBAL_RETENTIONS:
        raise ValueError(f"global_retention must be one of {GLOBAL_RETENTIONS}")
    L = 0
    while f"W{L + 1}" in params:
        L += 1
    if L == 0:
        raise ValueError("params needs 'W1', 'W2', ...")
    prefix = "A" if global_retention in ("lq", "kl") else "W"
    state: dict[str, Tensor] = {}
    for l in range(1, L + 1):
        w = params[f"W{l}"]
        state[f"{prefix}{l}"] = w.unsqueeze(0).expand(batch, *w.shape)
        state[f"S{l}"] = w.new_zeros(batch, *w.shape)
    if window > 1:
        w1, wl = params["W1"], params[f"W{L}"]
        H = w1.shape[0]
        state["omega_k"] = w1.new_zeros(batch, H, window - 1, w1.shape[-1])
        state["omega_v"] = w1.new_zeros(batch, H, window - 1, wl.shape[-2])
        state["omega_gamma"] = w1.new_zeros(batch, H, window - 1)
    return state


# ------------------------------------------------------------------------------------- MLP
def mlp_forward(weights: Sequence[Tensor], x: Tensor, activation: str, residual: bool,
                norm: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """M(x) for batched weights ``(..., D_l, D_{l-1})`` and inputs ``(..., n, D_0)``; ``norm``
    (gamma, beta) broadcastable to the output: the LayerNorm N before the residual."""
    h = x
    for l, w in enumerate(weights):
        h = h @ w.mT
        if l < len(weights) - 1:
            h = act(activation, h)
    h = layer_norm_out(h, norm)
    return h + x if residual else h


def layer_norm_out(z: Tensor, norm: Optional[tuple[Tensor, Tensor]]) -> Tensor:
    """N(z) over the last dim (the module legend); the identity when ``norm`` is None."""
    if norm is None:
        return z
    zhat = torch.nn.functional.layer_norm(z, z.shape[-1:], eps=LN_EPS)
    return torch.addcmul(norm[1], zhat, norm[0])


def layer_norm_vjp(z: Tensor, g: Tensor, gamma: Tensor) -> Tensor:
    """(dN/dz)^T g for N of :func:`layer_norm_out` at z: the error of the last layer's
    pre-norm output, ``(gamma g - mean(gamma g) - zhat mean(gamma g zhat)) / sigma``, written
    in ordinary ops so that autograd differentiates it again (the outer gradient)."""
    mu = z.mean(-1, keepdim=True)
    inv = torch.rsqrt(z.var(-1, unbiased=False, keepdim=True) + LN_EPS)
    zhat = (z - mu) * inv
    gg = g * gamma
    return inv * (gg - gg.mean(-1, keepdim=True) - zhat * (gg * zhat).mean(-1, keepdim=True))


def simplex(a: Tensor, mass: HParam) -> Tensor:
    """Memora's weights from their logits: every row ``mass * softmax(a)`` (MIRAS' KL retention
    keeps the weights non-negative with a fixed total per row, the 'c' of MIRAS Eq. 21)."""
    return torch.softmax(a, -1) * mass


def token_hparam(x: HParam, B: int, H: int, T: int) -> Optional[Tensor]:
    """A per-token hyper-parameter ``(B, H, T)`` as ``(B H, T)``; None for a scalar or a
    (B, H) one (those go through :func:`hparam`)."""
    if torch.is_tensor(x) and x.dim() == 3:
        return x.expand(B, H, T).reshape(B * H, T)
    return None


# ----------------------------------------------------------------------------- objectives
def objective_loss(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """MIRAS attentional bias l(y; v), summed over the last dim (MIRAS §3).

    l2: ||y - v||^2;  lp: ||y - v||_p^p;  huber: sum_i h(e_i) with h(e) = e^2 for |e| <= delta
    and 2 delta |e| - delta^2 outside (C^1; equals l2 as delta -> inf);  dot: -<y, v>.
    """
    if name == "dot":
        return -(y * v).sum(-1)
    e = y - v
    if name == "l2":
        return (e * e).sum(-1)
    if name == "lp":  # clamp: zero gradient (not NaN) at e = 0 for 1 <= p < 2
        return e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p).sum(-1)
    ae = e.abs()
    return torch.where(ae <= delta, e * e, 2.0 * delta * ae - delta * delta).sum(-1)


def objective_grad(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """d l(y; v) / d y (analytic, elementwise): the error fed back through the memory."""
    if name == "dot":
        return -v
    e = y - v
    if name == "l2":
        return 2.0 * e
    if name == "lp":
        return p * torch.sign(e) * e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p - 1.0)
    return 2.0 * torch.maximum(torch.minimum(e, delta), -delta)


def guard_scale(sq_norm: Tensor, clip: Optional[Tensor], normalize: bool,
                eps: Tensor) -> Optional[Tensor]:
    """Per-token factor applied to a token's own inner gradient (norm over all weights).

    normalize: g / max(||g||, eps); then clip: g * clip / max(||g||, clip). ``sq_norm`` is
    ||g||^2 per token; ``clip`` / ``eps`` are tensors broadcastable to it. The sqrt is taken
    on a clamped value so the backward stays finite at a zero gradient.
    """
    if clip is None and not normalize:
        return None
    n = torch.sqrt(sq_norm.clamp_min(torch.finfo(sq_norm.dtype).tiny))
    s = None
    if normalize:
        s = 1.0 / torch.maximum(n, eps)
        n = n * s
    if clip is not None:
        f = clip / torch.maximum(n, clip)
        s = f if s is None else s * f
    return s


# ------------------------------------------------------------------ MIRAS global retention
def lq_norm_scale(a: Tensor, q: Tensor) -> Tensor:
    """nu(A) = ||A||_q^{q-2} = (sum |A|^q)^{(q-2)/q} of each (D_l, D_{l-1}) matrix, shape
    (..., 1, 1) (Moneta, MIRAS).

    The sum is floored at the dtype's smallest normal number before the outer power, so
    nu > 0 and ``A / nu`` is 0 (not 0/0) at ``A = 0`` for every q, with a finite (zero)
    gradient there: ``|a|^q`` has derivative 0 at 0 for q > 1, and the floor passes none.
    """
    s = a.abs().pow(q).sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    return s.pow((q - 2.0) / q)


def soft_threshold(w: Tensor, lam: Tensor) -> Tensor:
    """Elastic-net proximal map sign(w) max(|w| - lam, 0) (MIRAS global retention)."""
    return torch.sign(w) * torch.relu(w.abs() - lam)


def autocast_off(backward):
    """A hand-written ``backward`` run with autocast off and its incoming gradients in the
    saved tensors' dtype: the memory mixers run these kernels' forward outside autocast
    (``train.dtype: bfloat16``), but autograd may call the backward inside it (the teach
    signal's ``autograd.grad`` in the model's forward), where bmm would turn bfloat16."""
    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        saved = next(t for t in ctx.saved_tensors if isinstance(t, Tensor) and t.is_floating_point())
        grads = tuple(g.to(saved.dtype) if isinstance(g, Tensor) and g.is_floating_point() else g
                      for g in grads)
        with torch.autocast(saved.device.type, enabled=False):
            return backward(ctx, *grads)
    return wrapped


# --------------------------------------------------------------------------- chunk gates


def log_gate_cumsum(x: Tensor) -> Tensor:
    """Cumulative log of a gate (..., C); exact zeros are clamped to the smallest normal."""
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)).cumsum(-1)


def segment_products(cs: Tensor) -> Tensor:
    """(..., C) cumulative logs -> (..., C, C): out[t, s] = prod_{s < i <= t} x_i (s <= t),
    0 above the diagonal; a difference of log-cumsums inside one chunk, masked before exp."""
    C = cs.shape[-1]
    i = torch.arange(C, device=cs.device)
    seg = cs.unsqueeze(-1) - cs.unsqueeze(-2)
    return torch.exp(torch.where(i[:, None] >= i[None, :], seg, -torch.inf))
