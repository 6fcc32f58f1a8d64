"""Continuum Memory System (CMS) levels: chunk schedule and the sequential / independent /
nested chains, in a chunked (matmul) and a reference (per-token ``torch.func``) form.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   T tokens in the call   L number of levels   C_l chunk size of level l
    pos       tokens already streamed (absolute position of the call's first token)
    phase_l   pos mod C_l under the "carry" policy, else 0 (chunks restart at the call)
    w_l       aggregation weight of level l (independent variant)

Schedule (NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71): the tokens of a chunk read with
the chunk-start parameters ``theta_xi``; the chunk of level l closes after the token with
absolute (1-based) position ``pos + t + 1 = 0 (mod C_l)``, where its pending sum is applied.
Both forms walk the call in segments (chunked: the stretches between consecutive
boundaries of any level; reference: single tokens) and apply the due levels' sums at the
end of each segment; the partial final chunk follows ``policy`` (carry / flush / drop).

Variants (NL-arXiv §7.1, paper notes §2.3), levels in the listed order:

* ``"sequential"`` (Eqs. 70-71/73): ``y = MLP_L(...MLP_1(x))``; an inner level's task signal
  is back-propagated through the later levels at their current (frozen) parameters.
* ``"independent"`` (Eq. 74): ``y = sum_l w_l MLP_l(x)``; level l's task signal is ``w_l delta``.
* ``"nested"`` (Eq. 72): the sequential chain plus re-initialisation. Levels sorted by chunk
  size (distinct, each a multiple of the next smaller, identical parameter shapes); when a
  level completes a chunk (after its own update), the next faster level is reset to its new
  parameters and its pending sum discarded -- cascading slow -> fast.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.func import grad as func_grad
from torch.func import vmap

from nlc.primitives.cms_mlp import (
    LrLike, block_backward, block_forward, block_token, check_kind, cms_local_delta, step_sizes,
)
from nlc.primitives.cms_state import pack_levels, unpack_levels, zeros_like_all

__all__ = ["POLICIES", "VARIANTS", "SIGNALS"]

POLICIES = ("carry", "drop", "flush")
VARIANTS = ("sequential", "independent", "nested")
SIGNALS = ("local", "task")


# =========================================================================== validation
def _validate(levels: list[dict[str, Tensor]], x: Tensor, chunks: Sequence[int],
              lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor], signal: str,
              target: Optional[Tensor], delta: Optional[Tensor], pos: int, policy: str,
              kind: str) -> None:
    check_kind(kind)
    if variant not in VARIANTS:
        raise ValueError(f"unknown CMS variant {variant!r}; expected one of {VARIANTS}")
    if signal not in SIGNALS:
        raise ValueError(f"unknown CMS error signal {signal!r}; expected one of {SIGNALS}")
    if policy not in POLICIES:
        raise ValueError(f"unknown flush policy {policy!r}; expected one of {POLICIES}")
    n = len(levels)
    if len(chunks) != n or len(lrs) != n:
        raise ValueError(f"{n} levels but {len(chunks)} chunk sizes and {len(lrs)} lrs")
    if any(int(c) != c or c < 1 for c in chunks):
        raise ValueError(f"chunk sizes must be positive ints, got {list(chunks)}")
    if int(pos) != pos or pos < 0:
        raise ValueError(f"pos must be a non-negative int, got {pos!r}")
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, D), got shape {tuple(x.shape)}")
    if variant == "independent" and (weights is None or weights.shape != (n,)):
        raise ValueError(f"independent CMS needs weights of shape ({n},)")
    if variant == "nested":
        order = _slow_to_fast(chunks)
        for s, f in zip(order[:-1], order[1:]):
            if chunks[s] == chunks[f] or chunks[s] % chunks[f]:
                raise ValueError("nested CMS needs distinct chunk sizes, each a multiple of the "
                                 f"next smaller one, got {list(chunks)}")
            if {k: v.shape for k, v in levels[s].items()} != \
                    {k: v.shape for k, v in levels[f].items()}:
                raise ValueError("nested CMS levels must have identical parameter shapes")
    if signal == "task" and delta is None:
        raise ValueError("signal='task' needs delta = dL/d(output), shape (B, T, Dout)")
    if signal == "task" and delta.shape[:2] != x.shape[:2]:
        raise ValueError(f"delta shape {tuple(delta.shape)} does not match x {tuple(x.shape)}")
    if target is not None and target.shape[:2] != x.shape[:2]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match x {tuple(x.shape)}")


# =========================================================================== schedule
def _due(phases: Sequence[int], chunks: Sequence[int], n_done: int) -> list[int]:
    """Levels whose chunk ends after ``n_done`` tokens of this call."""
    return [l for l, (ph, c) in enumerate(zip(phases, chunks)) if (ph + n_done) % c == 0]


def _cuts(phases: Sequence[int], chunks: Sequence[int], T: int) -> list[int]:
    """Ends of the chunked form's segments: every level's boundaries in the call, and T."""
    cuts = {T}
    for ph, c in zip(phases, chunks):
        cuts.update(range(c - ph, T, c))
    cuts.discard(0)
    return sorted(cuts)


def _slow_to_fast(chunks: Sequence[int]) -> list[int]:
    """Level indices sorted by chunk size, largest (slowest) first."""
    return sorted(range(len(chunks)), key=lambda l: (-chunks[l], l))


def _boundary(params: list[dict], accs: list[dict], due: Sequence[int], variant: str,
              chunks: Sequence[int]) -> None:
    """Apply the due levels' summed updates (Eq. 71) and the nested resets (Eq. 72).

    Mutates the Python lists only (never a tensor)."""
    for l in due:
        params[l] = {k: params[l][k] - accs[l][k] for k in params[l]}
        accs[l] = zeros_like_all(accs[l])
    if variant == "nested" and due:
        order = _slow_to_fast(chunks)
        for s, f in zip(order[:-1], order[1:]):  # cascade slow -> fast
            if s in due:
                params[f] = dict(params[s])
                accs[f] = zeros_like_all(accs[f])


# =========================================================================== forward of all levels
def read_levels(params: Sequence[dict], u: Tensor, *, variant: str, weights: Optional[Tensor],
                kind: str, residual: bool) -> tuple[Tensor, list, list, list]:
    """Every level read on ``u (B, n, Din)`` with its current parameters. Returns the output
    (chain for sequential/nested, ``sum_l w_l y_l`` for independent) and per level its
    input, output and :func:`block_forward` cache."""
    chained = variant != "independent"
    ins, ys, caches = [], [], []
    inp = u
    for p in params:
        y_l, cache = block_forward(p, inp, kind, residual)
        ins.append(inp)
        ys.append(y_l)
        caches.append(cache)
        if chained:
            inp = y_l
    if chained:
        return ys[-1], ins, ys, caches
    out = ys[0] * weights[0].to(u.dtype)
    for l in range(1, len(ys)):
        out = out + ys[l] * weights[l].to(u.dtype)
    return out, ins, ys, caches


# =========================================================================== segment steps
def _chunk_step(params: list[dict], accs: list[dict], x: Tensor, a: int, b: int, *,
                lrs, variant, weights, signal, target, delta, kind, residual) -> Tensor:
    """Tokens ``a..b-1`` (inside one chunk of every level): outputs, and each level's summed
    gradient added to its pending sum with matmuls (:func:`block_backward`)."""
    n = len(params)
    chained = variant != "independent"
    out, ins, ys, caches = read_levels(params, x[:, a:b], variant=variant, weights=weights,
                                       kind=kind, residual=residual)
    if signal == "local":
        tgt = None if target is None else target[:, a:b]
        deltas = [cms_local_delta(ys[l], ins[l] if tgt is None else tgt) for l in range(n)]
    elif chained:  # the outer level's signal; inner ones are back-propagated below
        deltas = [delta[:, a:b].to(x.dtype)] * n
    else:
        deltas = [delta[:, a:b].to(x.dtype) * weights[l].to(x.dtype) for l in range(n)]
    backprop = signal == "task" and chained
    for l in reversed(range(n)):
        eta = step_sizes(lrs[l], x.shape[0], a, b, x)
        g, dx = block_backward(params[l], ins[l], caches[l], deltas[l], eta, kind, residual,
                               need_dx=backprop and l > 0)
        accs[l] = {k: accs[l][k] + g[k] for k in g}
        if dx is not None:
            deltas[l - 1] = dx
    return out


def _token_step(params: list[dict], accs: list[dict], x: Tensor, a: int, b: int, *,
                lrs, variant, weights, signal, target, delta, kind, residual) -> Tensor:
    """Token ``t = a`` (``b = a + 1``) read as the equation: outputs with the frozen
    chunk-start parameters, then ``eta_t grad_theta l(theta_xi; x_t)`` (``torch.func.grad``)
    added to every level's pending sum."""
    t, B = a, x.shape[0]
    chained = variant != "independent"
    w = None if weights is None else weights.to(x.dtype)

    def mlp(p, u):
        return block_token(p, u, kind, residual)

    def chain(ps, u):  # the block's output y_t as a function of every level's parameters
        if chained:
            for p in ps:
                u = mlp(p, u)
            return u
        return sum(w[l] * mlp(ps[l], u) for l in range(len(ps)))

    def local_loss(p, u, tgt):  # l_t = ||MLP(theta; u_t) - target_t||^2
        r = mlp(p, u) - tgt
        return (r * r).sum()

    def task_loss(ps, u, d):  # surrogate <sg(delta_t), y_t(theta)>
        return (chain(ps, u) * d).sum()

    x_t = x[:, t]
    if signal == "local":
        grads, u = [], x_t
        for p in params:  # level l's input: the previous level's output if chained, else x_t
            tgt = u if target is None else target[:, t]
            grads.append(vmap(func_grad(local_loss))(p, u, tgt))
            if chained:
                u = vmap(mlp)(p, u)
    else:
        grads = vmap(func_grad(task_loss))(params, x_t, delta[:, t].to(x.dtype))
    for l, g_l in enumerate(grads):
        e = step_sizes(lrs[l], B, t, t + 1, x)[:, 0]
        accs[l] = {k: accs[l][k] + e.view(B, *([1] * (g.dim() - 1))) * g for k, g in g_l.items()}
    return vmap(chain)(params, x_t).unsqueeze(1)


# =========================================================================== driver
def run_levels(levels: list[dict[str, Tensor]], x: Tensor, *, form: str, chunks: Sequence[int],
               lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor], signal: str,
               target: Optional[Tensor], delta: Optional[Tensor], pos: int, policy: str,
               kind: str, residual: bool) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Stream ``x (B, T, Din)`` through the levels (``form``: chunked or reference; same
    results). Returns ``(y (B, T, Dout), new level states)``."""
    _validate(levels, x, chunks, lrs, variant, weights, signal, target, delta, pos, policy, kind)
    B, T, _ = x.shape
    phases = [pos % c if policy == "carry" else 0 for c in chunks]
    if form == "chunked":
        step, cuts = _chunk_step, _cuts(phases, chunks, T)
    else:
        step, cuts = _token_step, range(1, T + 1)
    params, accs = unpack_levels(levels)
    outs, a = [], 0
    for b in cuts:
        outs.append(step(params, accs, x, a, b, lrs=lrs, variant=variant, weights=weights,
                         signal=signal, target=target, delta=delta, kind=kind,
                         residual=residual))
        _boundary(params, accs, _due(phases, chunks, b), variant, chunks)
        a = b
    if outs:
        y = torch.cat(outs, dim=1)
    else:
        y = x.new_zeros(B, 0, params[0 if variant == "independent" else -1]["w_out"].shape[1])
    if T > 0 and policy == "flush":
        _boundary(params, accs, list(range(len(params))), variant, chunks)
    elif T > 0 and policy == "drop":
        accs = [zeros_like_all(acc) for acc in accs]
    return y, pack_levels(params, accs)
