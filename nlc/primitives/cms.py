"""Continuum Memory System (CMS): MLP blocks updated every C tokens by summed gradients.

Notation::

    B batch   T tokens in the call   C chunk size of a level   Din / Dout block in/out dim
    (CMS blocks are token-wise MLPs on the model stream: x is (B, T, Din), no head axis)
    Dh hidden width                  L number of levels        pos tokens already streamed
    theta   a level's parameters (per-sequence fast state, batch-leading)
    eta_t   the level's learning rate (scalar, per sequence (B,) or per token (B, T))
    delta_t error signal at the block output, dL/dy_t

Update rule (NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71; paper notes §2.1)::

    y_t = MLP(theta_{xi(t)}; x_t)                         xi(t) = start of t's chunk
    theta_{i+1} = theta_i - sum_{t=i-C+1}^{i} eta_t grad_theta l(theta_{xi}; x_t)   if i = 0 mod C
                = theta_i                                                           otherwise

i.e. mini-batch GD with batch = chunk: the per-token gradients are taken at the frozen
chunk-start parameters, *summed* over exactly the C tokens of the chunk (the printed lower
limit ``i-C`` gives C+1 terms; the notes flag it as an off-by-one typo) and applied once at
the boundary. Positions are 1-based in the equation: the chunk ends after the token with
absolute position ``pos + t + 1 = 0 (mod C)``.

Block ``MLP(theta; x)`` (``kind``): ``"gelu" | "silu" | "relu"``:
``W_out act(W_in x + b_in) + b_out`` (biases iff present in the state); ``"swiglu"``:
``W_out (silu(W_gate x) * W_up x)``. ``residual=True`` adds ``x`` (NL-arXiv Eq. 89 style).

Error signal (``signal``, paper notes §2.2):

* ``"local"``: associative L2 loss ``l_t = ||MLP(theta; x_t) - target_t||^2``; ``target``
  ``None`` means the block's own input (so the output dim must equal the input dim);
  ``delta_t = 2 (y_t - target_t)``.
* ``"task"``: an externally supplied teach signal ``delta_t = dL_task / dy_t``; the per-token
  loss is the surrogate ``<sg(delta_t), MLP(theta; x_t)>`` whose gradient w.r.t. the output is
  ``delta_t`` (:func:`cms_task_surrogate`).

Either way ``grad_theta l_t = J_theta(x_t)^T delta_t``: rank-1 per token for each weight
matrix, so a chunk's summed gradient is a matmul (:func:`cms_chunk_grad`). Because the
task signal of chunk ``j`` is only known after the model's loss on it, a compiler runs
``y = cms_read(state, x_chunk)`` -> loss -> ``delta`` -> ``cms_*_chunked(state, x_chunk,
delta=delta)`` chunk by chunk; the ``*_chunked`` forms also accept a whole sequence's
``delta`` when it is known in advance (and the ``local`` signal needs none).

State: ``dict[str, Tensor]``, all batch-leading. A block holds its parameters (``w_in``, ...)
and, for each, a pending gradient sum ``acc.<name>`` (the eta-weighted gradients of the
current, incomplete chunk). Initialise with :func:`cms_init_state` from meta-learned
parameters (``expand`` keeps the graph, so outer gradients reach them). Multi-level states
prefix every key with ``level{i}.``.

Partial final chunk (``policy``):

* ``"carry"`` (default): the partial chunk's gradient sum stays in ``acc.*`` and is applied
  when the chunk completes in a later call; pass ``pos`` = tokens already consumed, so
  chunk boundaries sit at absolute multiples of C. Streaming at any split == whole.
* ``"flush"``: the end of the call is a chunk boundary of every level (the partial sum is
  applied now; the next call starts fresh chunks; ``pos`` is ignored).
* ``"drop"``: the partial sum is discarded (``pos`` is ignored; chunks restart at each call).

Variants with several levels (NL-arXiv §7.1, paper notes §2.3), levels listed in order:

* ``"sequential"`` (Eqs. 70-71/73): ``y = MLP_L(...MLP_1(x))`` in the listed order, each
  level its own C; the task signal of an inner level is back-propagated through the later
  levels at their current (frozen) parameters (its gradient is ``grad_theta_l <delta, y>``
  of the chain).
* ``"independent"`` (Eq. 74): ``y = sum_l w_l MLP_l(x)`` with learned weights ``w``
  (passed as ``weights (L,)``); task signal of level l is ``w_l delta``.
* ``"nested"`` (Eq. 72): the same chain as ``sequential`` (any listed order, e.g. fast ->
  slow as consecutive layers), plus re-initialisation: sort the levels by chunk size
  (distinct sizes, each a multiple of the next smaller one, identical parameter shapes);
  when a level completes a chunk (after its own update), the next faster level is reset to
  its new parameters and its pending sum is discarded -- cascading slow -> fast, so at a
  boundary of the slowest level every faster level restarts from it. The slowest level's
  initial state is the meta-learned one; :func:`cms_reinit_from` is the same reset for a
  compiler that drives the blocks one by one.

Forms: ``*_reference`` loops over tokens and takes each per-token gradient with
``torch.func.grad`` (read as the equation); ``*_chunked`` runs matmuls per chunk (a Python
loop over the union of all levels' boundaries only). Same signature, same results.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad as func_grad
from torch.func import vmap

__all__ = [
    "KINDS",
    "POLICIES",
    "VARIANTS",
    "SIGNALS",
    "cms_param_shapes",
    "cms_init_params",
    "cms_init_state",
    "cms_init_levels",
    "cms_split_levels",
    "cms_merge_levels",
    "cms_mlp",
    "cms_read",
    "cms_local_delta",
    "cms_task_surrogate",
    "cms_chunk_grad",
    "cms_apply_update",
    "cms_reinit_from",
    "cms_block_reference",
    "cms_block_chunked",
    "cms_reference",
    "cms_chunked",
    "CMSBlock",
    "ContinuumMemorySystem",
]

KINDS = ("gelu", "silu", "relu", "swiglu")
POLICIES = ("carry", "drop", "flush")
VARIANTS = ("sequential", "independent", "nested")
SIGNALS = ("local", "task")
_ACC = "acc."
LrLike = Union[Tensor, float]


# =========================================================================== parameters/state
def cms_param_shapes(d_in: int, d_hidden: int, d_out: Optional[int] = None, *,
                     kind: str = "gelu", bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Unbatched parameter shapes of one block (``swiglu`` has no biases)."""
    _check_kind(kind)
    d_out = d_in if d_out is None else d_out
    if kind == "swiglu":
        return {"w_gate": (d_hidden, d_in), "w_up": (d_hidden, d_in), "w_out": (d_out, d_hidden)}
    shapes = {"w_in": (d_hidden, d_in), "w_out": (d_out, d_hidden)}
    if bias:
        shapes["b_in"] = (d_hidden,)
        shapes["b_out"] = (d_out,)
    return shapes


def cms_init_params(d_in: int, d_hidden: int, d_out: Optional[int] = None, *,
                    kind: str = "gelu", bias: bool = True, dtype=None, device=None,
                    generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
    """nn.Linear-style initial (meta) parameters, unbatched: ``U(-1/sqrt(fan_in), +)``."""
    out = {}
    for name, shape in cms_param_shapes(d_in, d_hidden, d_out, kind=kind, bias=bias).items():
        fan_in = d_hidden if name in ("w_out", "b_out") else d_in
        bound = 1.0 / math.sqrt(fan_in)
        t = torch.rand(shape, dtype=dtype, device=device, generator=generator)
        out[name] = (2 * t - 1) * bound
    return out


def cms_init_state(params: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    """Per-sequence state from unbatched meta-learned ``params``: each parameter expanded to
    ``(B, ...)`` (differentiable w.r.t. ``params``) plus zero accumulators ``acc.<name>``."""
    state: dict[str, Tensor] = {}
    for name, p in params.items():
        state[name] = p.unsqueeze(0).expand(batch, *p.shape)
    for name, p in params.items():
        state[_ACC + name] = p.new_zeros((batch, *p.shape))
    return state


def cms_merge_levels(levels: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per-level states -> one flat state with keys ``level{i}.<key>``."""
    return {f"level{i}.{k}": v for i, lv in enumerate(levels) for k, v in lv.items()}


def cms_split_levels(state: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
    """Inverse of :func:`cms_merge_levels` (levels ``0..L-1``, contiguous)."""
    levels: list[dict[str, Tensor]] = []
    i = 0
    while True:
        pre = f"level{i}."
        lv = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
        if not lv:
            break
        levels.append(lv)
        i += 1
    if not levels:
        raise KeyError("state has no 'level0.*' keys (use the cms_block_* functions for a "
                       "single unprefixed block)")
    return levels


def cms_init_levels(level_params: Sequence[Mapping[str, Tensor]], batch: int) -> dict[str, Tensor]:
    """Multi-level state from per-level meta-learned params (see :func:`cms_init_state`)."""
    return cms_merge_levels([cms_init_state(p, batch) for p in level_params])


# =========================================================================== block maths
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown CMS block kind {kind!r}; expected one of {KINDS}")


def _names(state: Mapping[str, Tensor]) -> list[str]:
    return [k for k in state if not k.startswith(_ACC)]


def _params(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(_ACC)}


def _act(a: Tensor, kind: str) -> Tensor:
    if kind == "gelu":
        return F.gelu(a)
    if kind == "relu":
        return torch.relu(a)
    return F.silu(a)  # silu, and the gate of swiglu


def _act_grad(a: Tensor, kind: str) -> Tensor:
    if kind == "gelu":  # d/da a Phi(a) = Phi(a) + a phi(a)
        return 0.5 * (1.0 + torch.erf(a * (1.0 / math.sqrt(2.0)))) + \
            a * torch.exp(-0.5 * a * a) * (1.0 / math.sqrt(2.0 * math.pi))
    if kind == "relu":
        return (a > 0).to(a.dtype)
    s = torch.sigmoid(a)  # silu' = s (1 + a (1 - s))
    return s * (1.0 + a * (1.0 - s))


def _mT(w: Tensor) -> Tensor:
    return w.transpose(-1, -2)


def _forward(p: Mapping[str, Tensor], u: Tensor, kind: str, residual: bool
             ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Batched block forward ``u (B, n, Din) -> y (B, n, Dout)`` plus what backward needs."""
    if kind == "swiglu":
        a = torch.matmul(u, _mT(p["w_gate"]))
        c = torch.matmul(u, _mT(p["w_up"]))
        h = F.silu(a) * c
        cache = (a, c, h)
    else:
        a = torch.matmul(u, _mT(p["w_in"]))
        if "b_in" in p:
            a = a + p["b_in"].unsqueeze(1)
        h = _act(a, kind)
        cache = (a, h)
    y = torch.matmul(h, _mT(p["w_out"]))
    if "b_out" in p:
        y = y + p["b_out"].unsqueeze(1)
    if residual:
        y = y + u
    return y, cache


def _backward(p: Mapping[str, Tensor], u: Tensor, cache: tuple[Tensor, ...], delta: Tensor,
              eta: Tensor, kind: str, residual: bool, need_dx: bool
              ) -> tuple[dict[str, Tensor], Optional[Tensor]]:
    """``sum_t eta_t grad_theta <delta_t, MLP(theta; u_t)>`` (rank-1 per token -> matmuls),
    and ``d<delta, y>/du`` (unweighted) if ``need_dx``."""
    e = eta.unsqueeze(-1)  # (B, n, 1)
    h = cache[-1]
    de = delta * e
    g = {"w_out": torch.matmul(_mT(de), h)}
    if "b_out" in p:
        g["b_out"] = de.sum(dim=1)
    gh = torch.matmul(delta, p["w_out"])  # (B, n, Dh)
    dx = None
    if kind == "swiglu":
        a, c, _ = cache
        ga = gh * c * _act_grad(a, "silu")
        gc = gh * F.silu(a)
        g["w_gate"] = torch.matmul(_mT(ga * e), u)
        g["w_up"] = torch.matmul(_mT(gc * e), u)
        if need_dx:
            dx = torch.matmul(ga, p["w_gate"]) + torch.matmul(gc, p["w_up"])
    else:
        a = cache[0]
        ga = gh * _act_grad(a, kind)
        gae = ga * e
        g["w_in"] = torch.matmul(_mT(gae), u)
        if "b_in" in p:
            g["b_in"] = gae.sum(dim=1)
        if need_dx:
            dx = torch.matmul(ga, p["w_in"])
    if need_dx and residual:
        dx = dx + delta
    return {k: g[k] for k in p}, dx


def _eta(lr: LrLike, B: int, a: int, b: int, like: Tensor) -> Tensor:
    """Per-token step sizes ``(B, b-a)`` from a scalar, ``(B,)`` or ``(B, T)`` lr."""
    if not isinstance(lr, Tensor):
        lr = torch.as_tensor(lr, dtype=like.dtype, device=like.device)
    lr = lr.to(like.dtype)
    if lr.dim() == 0:
        return lr.expand(B, b - a)
    if lr.dim() == 1:
        return lr.unsqueeze(-1).expand(B, b - a)
    return lr[:, a:b]


def _eta_t(lr: LrLike, B: int, t: int, like: Tensor) -> Tensor:
    return _eta(lr, B, t, t + 1, like)[:, 0]


def cms_mlp(params: Mapping[str, Tensor], x: Tensor, *, kind: str = "gelu",
            residual: bool = False) -> Tensor:
    """Read one block with its current (batched) parameters: ``x (B, T, Din) -> (B, T, Dout)``.

    ``params`` may be a full block state (``acc.*`` keys are ignored)."""
    _check_kind(kind)
    return _forward(_params(params), x, kind, residual)[0]


def cms_local_delta(y: Tensor, target: Tensor) -> Tensor:
    """``d ||y - target||^2 / dy = 2 (y - target)`` (the ``local`` error signal)."""
    return 2.0 * (y - target)


def cms_task_surrogate(y: Tensor, delta: Tensor) -> Tensor:
    """``sum <y, sg(delta)>``: a loss whose gradient w.r.t. ``y`` is ``delta`` (teach signal)."""
    return (y * delta.detach()).sum()


def cms_chunk_grad(params: Mapping[str, Tensor], x: Tensor, delta: Tensor,
                   lr: Optional[LrLike] = None, *, kind: str = "gelu", residual: bool = False,
                   return_input_grad: bool = False):
    """Summed per-token gradients of one chunk, analytically (NL-arXiv Eq. 71's sum).

    ``sum_t eta_t grad_theta <delta_t, MLP(theta; x_t)>`` for ``x (B, n, Din)``, ``delta
    (B, n, Dout)``; ``lr`` = eta (scalar, ``(B,)`` or ``(B, n)``; None = 1). For the local
    signal pass ``delta = cms_local_delta(MLP(theta; x), target)``. Each weight's per-token
    gradient is rank-1 (e.g. ``dW_out = delta_t h_t^T``), so the sum is one matmul. The
    update is ``theta - cms_chunk_grad(...)`` (:func:`cms_apply_update`). With
    ``return_input_grad`` also returns ``d<delta, y>/dx (B, n, Din)``.
    """
    _check_kind(kind)
    p = _params(params)
    y, cache = _forward(p, x, kind, residual)
    eta = _eta(1.0 if lr is None else lr, x.shape[0], 0, x.shape[1], x)
    g, dx = _backward(p, x, cache, delta, eta, kind, residual, return_input_grad)
    return (g, dx) if return_input_grad else g


def cms_apply_update(state: Mapping[str, Tensor], grads: Mapping[str, Tensor]
                     ) -> dict[str, Tensor]:
    """``theta <- theta - grads`` for every parameter in ``grads`` (other keys kept)."""
    return {k: (v - grads[k] if k in grads else v) for k, v in state.items()}


def cms_reinit_from(state: Mapping[str, Tensor], source: Mapping[str, Tensor]
                    ) -> dict[str, Tensor]:
    """Nested-CMS reset (NL-arXiv Eq. 72): ``state``'s parameters := ``source``'s, pending
    sums ``acc.*`` := 0. Call when ``source`` (the next slower level) completes a chunk."""
    out = {}
    for k, v in state.items():
        out[k] = torch.zeros_like(v) if k.startswith(_ACC) else source[k]
    return out


# =========================================================================== validation
def _validate(levels: list[dict[str, Tensor]], x: Tensor, chunks: Sequence[int],
              lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor], signal: str,
              target: Optional[Tensor], delta: Optional[Tensor], pos: int, policy: str,
              kind: str) -> None:
    _check_kind(kind)
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


def _phases(chunks: Sequence[int], pos: int, policy: str) -> list[int]:
    return [pos % c if policy == "carry" else 0 for c in chunks]


def _due(phases: Sequence[int], chunks: Sequence[int], n_done: int) -> list[int]:
    """Levels whose chunk ends after ``n_done`` tokens of this call."""
    return [l for l, (ph, c) in enumerate(zip(phases, chunks)) if (ph + n_done) % c == 0]


def _slow_to_fast(chunks: Sequence[int]) -> list[int]:
    """Level indices sorted by chunk size, largest (slowest) first."""
    return sorted(range(len(chunks)), key=lambda l: (-chunks[l], l))


def _boundary(params: list[dict], accs: list[dict], due: Sequence[int], variant: str,
              chunks: Sequence[int]) -> None:
    """Apply the due levels' summed updates (Eq. 71) and the nested resets (Eq. 72).

    Mutates the Python lists only (never a tensor)."""
    for l in due:
        params[l] = {k: params[l][k] - accs[l][k] for k in params[l]}
        accs[l] = {k: torch.zeros_like(v) for k, v in accs[l].items()}
    if variant == "nested" and due:
        order = _slow_to_fast(chunks)
        for s, f in zip(order[:-1], order[1:]):  # cascade slow -> fast
            if s in due:
                params[f] = dict(params[s])
                accs[f] = {k: torch.zeros_like(v) for k, v in accs[f].items()}


def _finish(params: list[dict], accs: list[dict], T: int, policy: str, variant: str,
            chunks: Sequence[int]) -> list[dict[str, Tensor]]:
    if T > 0 and policy == "flush":
        _boundary(params, accs, list(range(len(params))), variant, chunks)
    elif T > 0 and policy == "drop":
        accs = [{k: torch.zeros_like(v) for k, v in a.items()} for a in accs]
    out = []
    for p, a in zip(params, accs):
        st = dict(p)
        st.update({_ACC + k: v for k, v in a.items()})
        out.append(st)
    return out


def _unpack(levels: list[dict[str, Tensor]]) -> tuple[list[dict], list[dict]]:
    params = [_params(lv) for lv in levels]
    accs = [{k: lv[_ACC + k] if _ACC + k in lv else torch.zeros_like(lv[k]) for k in p}
            for lv, p in zip(levels, params)]
    return params, accs


# =========================================================================== chunked engine
def _levels_chunked(levels: list[dict[str, Tensor]], x: Tensor, *, chunks: Sequence[int],
                    lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor],
                    signal: str, target: Optional[Tensor], delta: Optional[Tensor], pos: int,
                    policy: str, kind: str, residual: bool
                    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
    _validate(levels, x, chunks, lrs, variant, weights, signal, target, delta, pos, policy, kind)
    B, T, _ = x.shape
    n = len(levels)
    phases = _phases(chunks, pos, policy)
    chained = variant != "independent"  # sequential and nested compose the levels in order
    cuts = {T}
    for ph, c in zip(phases, chunks):
        cuts.update(range(c - ph, T, c))
    cuts.discard(0)
    params, accs = _unpack(levels)
    outs = []
    a = 0
    for b in sorted(cuts):
        u = x[:, a:b]
        ins, ys, caches = [], [], []
        inp = u
        for l in range(n):
            y_l, cache = _forward(params[l], inp, kind, residual)
            ins.append(inp)
            ys.append(y_l)
            caches.append(cache)
            if chained:
                inp = y_l
        if chained:
            out = ys[-1]
        else:
            out = ys[0] * weights[0].to(x.dtype)
            for l in range(1, n):
                out = out + ys[l] * weights[l].to(x.dtype)
        outs.append(out)

        if signal == "local":
            tgt = None if target is None else target[:, a:b]
            deltas = [cms_local_delta(ys[l], ins[l] if tgt is None else tgt) for l in range(n)]
        else:
            d = delta[:, a:b].to(x.dtype)
            if chained:
                deltas = [d] * n  # filled top-down below
            else:
                deltas = [d * weights[l].to(x.dtype) for l in range(n)]
        down = deltas[-1]
        for l in reversed(range(n)):
            if signal == "task" and chained:
                deltas[l] = down
            need_dx = signal == "task" and chained and l > 0
            eta = _eta(lrs[l], B, a, b, x)
            g, dx = _backward(params[l], ins[l], caches[l], deltas[l], eta, kind, residual, need_dx)
            accs[l] = {k: accs[l][k] + g[k] for k in g}
            if need_dx:
                down = dx
        _boundary(params, accs, _due(phases, chunks, b), variant, chunks)
        a = b
    y = torch.cat(outs, dim=1) if outs else x.new_zeros(B, 0, _out_dim(params, variant))
    return y, _finish(params, accs, T, policy, variant, chunks)


def _out_dim(params: list[dict], variant: str) -> int:
    return params[0 if variant == "independent" else -1]["w_out"].shape[1]


# =========================================================================== reference engine
def _mlp_token(p: Mapping[str, Tensor], u: Tensor, kind: str, residual: bool) -> Tensor:
    """Unbatched ``MLP(theta; u)`` for one token ``u (Din,)``, written as the equation."""
    if kind == "swiglu":
        h = F.silu(p["w_gate"] @ u) * (p["w_up"] @ u)
    else:
        pre = p["w_in"] @ u
        if "b_in" in p:
            pre = pre + p["b_in"]
        h = _act(pre, kind)
    y = p["w_out"] @ h
    if "b_out" in p:
        y = y + p["b_out"]
    return y + u if residual else y


def _levels_reference(levels: list[dict[str, Tensor]], x: Tensor, *, chunks: Sequence[int],
                      lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor],
                      signal: str, target: Optional[Tensor], delta: Optional[Tensor], pos: int,
                      policy: str, kind: str, residual: bool
                      ) -> tuple[Tensor, list[dict[str, Tensor]]]:
    _validate(levels, x, chunks, lrs, variant, weights, signal, target, delta, pos, policy, kind)
    B, T, _ = x.shape
    n = len(levels)
    phases = _phases(chunks, pos, policy)
    params, accs = _unpack(levels)
    w = None if weights is None else weights.to(x.dtype)

    def mlp(p, u):
        return _mlp_token(p, u, kind, residual)

    chained = variant != "independent"

    def chain(ps, u):  # the block's output y_t as a function of every level's parameters
        if chained:
            for p in ps:
                u = mlp(p, u)
            return u
        return sum(w[l] * mlp(ps[l], u) for l in range(n))

    def local_loss(p, u, tgt):  # l_t = ||MLP(theta; u_t) - target_t||^2
        r = mlp(p, u) - tgt
        return (r * r).sum()

    def task_loss(ps, u, d):  # surrogate <sg(delta_t), y_t(theta)>
        return (chain(ps, u) * d).sum()

    outs = []
    for t in range(T):
        x_t = x[:, t]
        # outputs with the frozen chunk-start parameters, and every level's input
        ins, u = [], x_t
        for l in range(n):
            ins.append(u if chained else x_t)
            if chained:
                u = vmap(mlp)(params[l], u)
        outs.append(vmap(chain)(params, x_t))
        # per-token gradients grad_theta l(theta_xi; x_t)
        if signal == "local":
            grads = []
            for l in range(n):
                tgt = ins[l] if target is None else target[:, t]
                grads.append(vmap(func_grad(local_loss))(params[l], ins[l], tgt))
        else:
            grads = vmap(func_grad(task_loss))(params, x_t, delta[:, t].to(x.dtype))
        # accumulate eta_t * grad into the pending chunk sums
        for l in range(n):
            e = _eta_t(lrs[l], B, t, x)
            accs[l] = {k: accs[l][k] + e.view(B, *([1] * (g.dim() - 1))) * g
                       for k, g in grads[l].items()}
        # token with absolute position pos + t + 1 closes the chunk of every level it divides
        _boundary(params, accs, _due(phases, chunks, t + 1), variant, chunks)
    y = torch.stack(outs, dim=1) if outs else x.new_zeros(B, 0, _out_dim(params, variant))
    return y, _finish(params, accs, T, policy, variant, chunks)


# =========================================================================== public forms
def _block_call(engine, state, x, chunk, lr, signal, target, delta, pos, policy, kind, residual):
    y, levels = engine([dict(state)], x, chunks=[chunk], lrs=[lr], variant="sequential",
                       weights=None, signal=signal, target=target, delta=delta, pos=pos,
                       policy=policy, kind=kind, residual=residual)
    return y, levels[0]


def cms_block_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                      signal: str = "local", target: Optional[Tensor] = None,
                      delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                      kind: str = "gelu", residual: bool = False
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """One CMS block over ``x (B, T, Din)``, chunked form (NL-arXiv Eqs. 70-71).

    Outputs of the tokens of a chunk use the chunk-start parameters; at the end of each
    chunk ``theta <- theta - sum_chunk eta_t grad l_t(theta_chunkstart)`` (one matmul per
    weight, :func:`cms_chunk_grad`). ``signal``/``target``/``delta``/``pos``/``policy``: see
    the module doc. Returns ``(y (B, T, Dout), new_state)``.
    """
    return _block_call(_levels_chunked, state, x, chunk, lr, signal, target, delta, pos,
                       policy, kind, residual)


def cms_block_reference(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                        signal: str = "local", target: Optional[Tensor] = None,
                        delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                        kind: str = "gelu", residual: bool = False
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`cms_block_chunked` (same signature and results): for each
    token read ``y_t = MLP(theta; x_t)``, add ``eta_t grad l_t(theta)`` (``torch.func.grad``)
    to the pending sum, and apply the sum when ``pos + t + 1 = 0 (mod C)``."""
    return _block_call(_levels_reference, state, x, chunk, lr, signal, target, delta, pos,
                       policy, kind, residual)


def cms_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                lrs: Sequence[LrLike], variant: str = "sequential",
                weights: Optional[Tensor] = None, signal: str = "local",
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None, pos: int = 0,
                policy: str = "carry", kind: str = "gelu", residual: bool = False
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-level CMS (``level{i}.*`` state), chunked form; see the module doc for
    ``variant`` (sequential Eqs. 70-71, independent Eq. 74, nested Eq. 72).

    Within each stretch between consecutive boundaries of any level, every level reads with
    its current parameters and adds its summed gradient (matmuls); at a level's boundary its
    pending sum is applied. Returns ``(y (B, T, Dout), new_state)``.
    """
    y, levels = _levels_chunked(cms_split_levels(state), x, chunks=chunks, lrs=lrs,
                                variant=variant, weights=weights, signal=signal, target=target,
                                delta=delta, pos=pos, policy=policy, kind=kind,
                                residual=residual)
    return y, cms_merge_levels(levels)


def cms_reference(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                  lrs: Sequence[LrLike], variant: str = "sequential",
                  weights: Optional[Tensor] = None, signal: str = "local",
                  target: Optional[Tensor] = None, delta: Optional[Tensor] = None,
                  pos: int = 0, policy: str = "carry", kind: str = "gelu",
                  residual: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`cms_chunked` (same signature and results). The task-signal
    gradients of all levels are ``torch.func.grad`` of ``<delta_t, y_t(theta_1..theta_L)>``."""
    y, levels = _levels_reference(cms_split_levels(state), x, chunks=chunks, lrs=lrs,
                                  variant=variant, weights=weights, signal=signal,
                                  target=target, delta=delta, pos=pos, policy=policy,
                                  kind=kind, residual=residual)
    return y, cms_merge_levels(levels)


def cms_read(state: Mapping[str, Tensor], x: Tensor, *, variant: str = "sequential",
             weights: Optional[Tensor] = None, kind: str = "gelu", residual: bool = False
             ) -> Tensor:
    """Outputs with the current parameters, no update: the read a compiler runs before the
    task loss of a chunk (valid for tokens inside the current chunk of every level). Takes a
    single-block state (unprefixed) or a multi-level one (``level{i}.*``)."""
    _check_kind(kind)
    if not any(k.startswith("level0.") for k in state):
        return cms_mlp(state, x, kind=kind, residual=residual)
    levels = [_params(lv) for lv in cms_split_levels(state)]
    if variant in ("sequential", "nested"):
        u = x
        for p in levels:
            u = _forward(p, u, kind, residual)[0]
        return u
    if variant == "independent":
        if weights is None:
            raise ValueError("independent CMS needs weights")
        out = None
        for l, p in enumerate(levels):
            y = _forward(p, x, kind, residual)[0] * weights[l].to(x.dtype)
            out = y if out is None else out + y
        return out
    raise ValueError(f"unknown CMS variant {variant!r}")


# =========================================================================== modules
def _as_param_dict(params: Mapping[str, Tensor]) -> nn.ParameterDict:
    return nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})


class CMSBlock(nn.Module):
    """One CMS block with meta-learned initial parameters (a CMS level, NL-arXiv Eqs. 70-71).

    ``init_state(batch)`` expands the meta parameters into per-sequence fast state;
    ``forward(x, state=None, *, pos=0, target=None, delta=None) -> (y, new_state)`` runs
    :func:`cms_block_chunked` (``state=None``: a fresh state, ``pos`` should then be 0).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: Optional[int] = None, *, chunk: int,
                 lr: float = 1e-2, kind: str = "gelu", bias: bool = True,
                 residual: bool = False, signal: str = "local", policy: str = "carry") -> None:
        super().__init__()
        if signal not in SIGNALS or policy not in POLICIES:
            raise ValueError(f"bad signal {signal!r} or policy {policy!r}")
        self.chunk, self.kind, self.residual = chunk, kind, residual
        self.signal, self.policy = signal, policy
        self.init = _as_param_dict(cms_init_params(d_in, d_hidden, d_out, kind=kind, bias=bias))
        self.register_buffer("lr", torch.tensor(float(lr)))

    def init_state(self, batch: int) -> dict[str, Tensor]:
        return cms_init_state(dict(self.init.items()), batch)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None, *, pos: int = 0,
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(x.shape[0]) if state is None else state
        return cms_block_chunked(state, x, chunk=self.chunk, lr=self.lr.to(x.dtype),
                                 signal=self.signal, target=target, delta=delta, pos=pos,
                                 policy=self.policy, kind=self.kind, residual=self.residual)


class ContinuumMemorySystem(nn.Module):
    """Several CMS levels (``variant``: sequential / independent / nested; module doc).

    * sequential: level l maps ``dims[l] -> dims[l+1]`` (``dims`` has L+1 entries; an int
      means every level is ``d -> d``).
    * independent: every level ``d -> d``; learned aggregation weights ``agg`` (init 1/L).
    * nested: a chain of ``d -> d`` levels (any order, e.g. fast -> slow) with Eq. 72
      resets; one set of meta-learned parameters (the slowest level's initial state),
      every level starts from it.
    """

    def __init__(self, dims: Union[int, Sequence[int]], d_hidden: int, *,
                 chunks: Sequence[int], lrs: Union[float, Sequence[float]] = 1e-2,
                 variant: str = "sequential", kind: str = "gelu", bias: bool = True,
                 residual: bool = False, signal: str = "local", policy: str = "carry") -> None:
        super().__init__()
        n = len(chunks)
        if variant not in VARIANTS or signal not in SIGNALS or policy not in POLICIES:
            raise ValueError(f"bad variant {variant!r}, signal {signal!r} or policy {policy!r}")
        if isinstance(dims, int):
            dims = [dims] * (n + 1)
        if len(dims) != n + 1:
            raise ValueError(f"dims needs {n + 1} entries for {n} levels")
        if variant != "sequential" and len(set(dims)) != 1:
            raise ValueError(f"{variant} CMS needs every level d -> d")
        self.chunks, self.variant, self.kind = list(chunks), variant, kind
        self.residual, self.signal, self.policy = residual, signal, policy
        n_sets = 1 if variant == "nested" else n
        self.inits = nn.ModuleList(
            _as_param_dict(cms_init_params(dims[l], d_hidden, dims[l + 1], kind=kind, bias=bias))
            for l in range(n_sets))
        lrs = [float(lrs)] * n if isinstance(lrs, (int, float)) else [float(v) for v in lrs]
        self.register_buffer("lrs", torch.tensor(lrs))
        self.agg = nn.Parameter(torch.full((n,), 1.0 / n)) if variant == "independent" else None

    def init_state(self, batch: int) -> dict[str, Tensor]:
        sets = [dict(pd.items()) for pd in self.inits]
        if self.variant == "nested":
            sets = sets * len(self.chunks)
        return cms_init_levels(sets, batch)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None, *, pos: int = 0,
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(x.shape[0]) if state is None else state
        lrs = [self.lrs[l].to(x.dtype) for l in range(len(self.chunks))]
        return cms_chunked(state, x, chunks=self.chunks, lrs=lrs, variant=self.variant,
                           weights=self.agg, signal=self.signal, target=target, delta=delta,
                           pos=pos, policy=self.policy, kind=self.kind, residual=self.residual)
