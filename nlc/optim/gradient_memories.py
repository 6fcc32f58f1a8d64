"""An optimizer level run as memories of the gradient stream (nlc.spec.optimizers).

Notation, per parameter p with gradient g and update number n of the level (1-based)::

    m_k      gradient memory k (a tensor of p's shape), written every P_k updates
    ḡ_k      the mean of the gradients since memory k's last write (g when P_k = 1)
    α_k η_k  its retention and lr; w_k its weight; v the second moment (retention β2)
    λ        weight decay, γ the level's lr at this update

One update (:meth:`GradientMemories.step`)::

    g <- g + λ p                                 (decay: l2)
    m_k <- α_k m_k + η_k ḡ_k                     (dot; NL-NeurIPS Eqs. 17-18)
    m_k <- m_k (α_k I - η_k ĝᵀĝ) + η_k ḡ_k       (l2, ĝ = ḡ_k / ||ḡ_k||_F; NL-NeurIPS Eq. 22)
    r_k = m_k  or  η_k g + α_k m_k (nesterov),   / (1 - α_k^{n_k}) (bias_correction)
    o_k = r_k  or  NS(r_k) (newton_schulz; NL-NeurIPS Eq. 24)   [* 0.2 sqrt(max(A, B)): match_adamw]
    d = Σ_k w_k o_k   (no memory: d = g)
    v <- β2 v + (1 - β2) g²,  d <- d / (sqrt(v / (1 - β2^n)) + ε)   (second moment)
    p <- p (1 - γ λ) - γ d                       (decay: decoupled)

Deep momentum (``memory: mlp``, NL-NeurIPS Eq. 23), p read as rows u_r (A x B), hidden width H::

    h(u) = tanh(W1 u / ||u||) / √H                          keys (W1: H x B, seeded N(0, 1))
    dot:  W2 <- α W2 + η Σ_r u_r h_rᵀ,   W1 <- W1 + η Σ_r (W2ᵀ u_r ⊙ (1 - H h_r²)) û_rᵀ / √H
    l2:   W2 <- α W2 + η Σ_r (u_r - W2 h_r) h_rᵀ
    r = rows W2 h(g_r)                                      (the read at the current gradient)

The rows share one memory, so a row's read holds the other rows' gradients too, weighted by
their keys' likeness: the read's norm relative to η ||g|| grows with the number of rows A
(about 0.4 at A = 4, 1.2 at A = 64, 11 at A = 1024 for H = 32), so one lr does not suit
matrices of very different heights.

The clock is the level's: n is the group's ``update`` (set by
:class:`nlc.training.optim.OuterLevels` from the update schedule, so a resumed run knows it);
memory k writes at the n that P_k divides. A parameter without a gradient at an update is
skipped, as torch's optimizers skip it, and its counts are its own: n_k (its writes, for
bias correction) and the second moment's are per parameter, like Adam's step count. A
memory between writes keeps its state and still gives its output (a slow M3 level acts
with the momentum of its last write). Parameters with more than two dimensions are read as
matrices (first dimension x the rest) by the Newton-Schulz output and the l2 objective, and
1-D ones as a row. State per parameter, all tensors (checkpointed like torch's optimizers'
state): ``m<k>``, ``acc<k>`` (the gradient sum of a memory with P_k > 1) and ``c<k>`` (how
many), ``w<k>`` (n_k), ``o<k>`` (its output, held between writes: M3's slow Newton-Schulz
runs once per write), ``v`` and ``nv`` (its writes); counters are 0-dim CPU tensors.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..ir.nodes import GradientMemoryIR, GradientRuleIR
from ..primitives.newton_schulz import newton_schulz, rms_matched


class GradientMemories(torch.optim.Optimizer):
    """``GradientMemories(groups, lr, eps)``: each group has ``params``, ``weight_decay``
    and ``rule`` (a :class:`~nlc.ir.nodes.GradientRuleIR`); ``update``, the level's update
    number n, is set before each step (by default it counts the calls)."""

    def __init__(self, groups: list[dict], lr: float, eps: float = 1e-8) -> None:
        super().__init__(groups, {"lr": lr, "eps": eps, "weight_decay": 0.0, "update": 0})
        self.counting = True  # until a caller sets the groups' "update" itself

    def set_update(self, n: int) -> None:
        """The level's update number for the next :meth:`step` (1-based)."""
        self.counting = False
        for group in self.param_groups:
            group["update"] = n

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            if self.counting:
                group["update"] += 1
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, group)
        return None

    def _update(self, p: Tensor, g: Tensor, group: dict) -> None:
        rule: GradientRuleIR = group["rule"]
        lr, decay, n = group["lr"], group["weight_decay"], group["update"]
        state = self.state[p]
        if rule.decay == "l2" and decay:
            g = g + decay * p
        outputs = [self._memory(state, k, memory, g, n) for k, memory in enumerate(rule.momenta)]
        d = sum(m.weight * o for m, o in zip(rule.momenta, outputs)) if outputs else g
        if rule.scale == "match_adamw":
            d = rms_matched(d.reshape(_matrix_shape(p))).reshape(p.shape)
        if rule.second_moment is not None:
            beta = rule.second_moment
            v = state.setdefault("v", torch.zeros_like(p))
            v.mul_(beta).addcmul_(g, g, value=1 - beta)
            d = d / ((v / (1 - beta ** _count(state, "nv"))).sqrt() + group["eps"])
        if rule.decay == "decoupled" and decay:
            p.mul_(1 - lr * decay)
        p.add_(d, alpha=-lr)

    def _memory(self, state: dict, k: int, memory: GradientMemoryIR, g: Tensor, n: int) -> Tensor:
        if memory.memory == "mlp":
            return _deep_momentum(state, k, memory, g, n)
        m = state.setdefault(f"m{k}", torch.zeros_like(g))
        written = _due(state, k, memory, g, n)
        if written is not None:
            _write(m, memory, written)
        held = memory.period > 1 and not memory.nesterov  # its output changes only when it writes
        if held and written is None and f"o{k}" in state:
            return state[f"o{k}"]
        read = memory.lr * g + memory.retention * m if memory.nesterov else m
        writes = int(state[f"w{k}"])
        if memory.bias_correction and writes:
            read = read / (1 - memory.retention ** writes)
        if memory.output == "newton_schulz":
            read = newton_schulz(read.reshape(_matrix_shape(g)), memory.ns_steps).reshape(g.shape)
        if held:
            state[f"o{k}"] = read.clone() if read is m else read  # a tensor of its own (safetensors)
        return read


def _due(state: dict, k: int, memory: GradientMemoryIR, g: Tensor, n: int) -> Tensor | None:
    """What memory k writes at update n: ``g``, or with a period P > 1 the mean of the
    gradients since its last write once n reaches its next multiple of P (None before). A
    parameter without a gradient at some update (skipped, as torch's optimizers skip it)
    writes at its next update instead, the mean over the gradients it had."""
    if memory.period == 1:
        _count(state, f"w{k}")
        return g
    acc = state.setdefault(f"acc{k}", torch.zeros_like(g))
    acc.add_(g)
    had = _count(state, f"c{k}")
    if n // memory.period <= _count(state, f"w{k}", 0):
        return None
    _count(state, f"w{k}")
    written = acc / had
    acc.zero_()
    state[f"c{k}"].zero_()
    return written


def _count(state: dict, key: str, step: int = 1) -> int:
    """A per-parameter counter kept as a 0-dim CPU tensor (checkpointed with the state,
    read without a device sync), advanced by ``step``; returns its new value."""
    counter = state.setdefault(key, torch.zeros((), dtype=torch.float64))
    counter.add_(step)
    return int(counter)


def _deep_momentum(state: dict, k: int, memory: GradientMemoryIR, g: Tensor, n: int) -> Tensor:
    rows = g.reshape(_matrix_shape(g))
    if f"w1_{k}" not in state:
        seeded = torch.Generator().manual_seed(rows.shape[1] * 7919 + memory.hidden + k)
        state[f"w1_{k}"] = torch.randn(memory.hidden, rows.shape[1], generator=seeded).to(g)
        state[f"w2_{k}"] = torch.zeros(rows.shape[1], memory.hidden, dtype=g.dtype, device=g.device)
    w1, w2 = state[f"w1_{k}"], state[f"w2_{k}"]
    written = _due(state, k, memory, g, n)
    written = None if written is None else written.reshape(rows.shape)
    scale = memory.hidden ** -0.5
    if written is not None:
        unit = written / (written.norm(dim=1, keepdim=True) + 1e-12)
        keys = torch.tanh(unit @ w1.T) * scale  # (A, H)
        if memory.objective == "dot":
            w1.add_(((written @ w2) * (1 - keys.square() / scale ** 2)).T @ unit, alpha=memory.lr * scale)
            w2.mul_(memory.retention).add_(written.T @ keys, alpha=memory.lr)
        else:
            w2.mul_(memory.retention).add_((written - keys @ w2.T).T @ keys, alpha=memory.lr)
    unit = rows / (rows.norm(dim=1, keepdim=True) + 1e-12)
    return (torch.tanh(unit @ w1.T) * scale @ w2.T).reshape(g.shape)


def _write(m: Tensor, memory: GradientMemoryIR, g: Tensor) -> None:
    if memory.objective == "dot":
        m.mul_(memory.retention).add_(g, alpha=memory.lr)
        return
    shape = _matrix_shape(g)
    key = g.reshape(shape) / (torch.linalg.matrix_norm(g.reshape(shape)) + 1e-12)
    flat = m.reshape(shape)
    # m ĝᵀĝ in the cheaper order: an A x A or a B x B intermediate, never the larger one
    along = (flat @ key.T) @ key if shape[0] <= shape[1] else flat @ (key.T @ key)
    flat.copy_(memory.retention * flat - memory.lr * along + memory.lr * g.reshape(shape))


def state_shape_ok(key: str, shape: list[int], param_shape: list[int]) -> bool:
    """Whether a saved state tensor ``key`` of ``shape`` fits a parameter of ``param_shape``
    (the parameter's shape, or a deep momentum's W1 (H, B) / W2 (B, H), B its row width)."""
    if shape == list(param_shape):
        return True
    width = math.prod(param_shape) if len(param_shape) < 2 else math.prod(param_shape[1:])  # _matrix_shape's B
    if len(shape) != 2:
        return False
    if key.startswith("w1_"):
        return shape[1] == width
    return key.startswith("w2_") and shape[0] == width


def _matrix_shape(t: Tensor) -> tuple[int, int]:
    """A tensor read as a matrix: (first dimension, the rest); a vector as one row."""
    return (1, t.numel()) if t.dim() < 2 else (t.shape[0], t[0].numel())
