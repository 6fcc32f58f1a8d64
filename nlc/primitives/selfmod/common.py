"""Shared pieces of HOPE's self-modifying memories (both forms of :mod:`nlc.primitives.selfmod`):
roles, meta-learned initial weights, per-sequence state, argument checks.

Notation::

    B batch   H heads   D per-head width   Dh memory hidden width
    r         a role: ``memory`` (the main memory) or a component in COMPONENTS
    M_r(x)    = x + W1_r act(W2_r x)   W1_r (D, Dh), W2_r (Dh, D)   (NL-arXiv Eq. 89)
    S1_r, S2_r  momentum buffers of W1_r, W2_r
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from ..activations import ACTIVATIONS, act
from ..deep.common import init_deep_params

__all__ = [
    "MEMORY", "COMPONENTS", "HOPE_COMPONENTS", "GATES", "components_of", "roles_of",
    "init_selfmod_params", "init_selfmod_state", "check_chunks", "check_roles", "mlp", "eta_ceiling",
]

MEMORY = "memory"
COMPONENTS = ("k", "v", "eta", "alpha", "q")  # stacking order of the component memories
HOPE_COMPONENTS = COMPONENTS[:4]  # NL-arXiv Eq. 79: q is the only static projection
GATES = ("eta", "alpha")  # components read out into a scalar gate
DRAW_ORDER = ("k", "v", "eta", "alpha", MEMORY, "q")  # the seeded draws of the initial weights
HParam = Union[float, Tensor]


# ------------------------------------------------------------------- parameters and state
def init_selfmod_params(heads: int, dim: int, hidden: int, *,
                        components: tuple[str, ...] = HOPE_COMPONENTS, scale: float = 1.0,
                        out_scale: float = 0.5, eta_bias: float = 0.0, alpha_bias: float = 5.0,
                        generator: Optional[torch.Generator] = None,
                        dtype: Optional[torch.dtype] = None,
                        device: Optional[torch.device] = None) -> dict[str, Tensor]:
    """Meta-learned initial weights of the main memory and ``components``, and the static
    read-outs of the generated gates.

    Returns ``W2_<r>`` (H, Dh, D) ~ N(0, scale^2 / D), ``W1_<r>`` (H, D, Dh) ~
    N(0, out_scale^2 / Dh) for r = memory and each component; with an eta (alpha) component
    ``w_eta`` (``w_alpha``) (H, D) ~ N(0, 1 / D) and ``b_eta`` (H,) = eta_bias (eta = eta_max
    / 2 at 0), ``b_alpha`` (H,) = alpha_bias (alpha ~ 0.993 at 5). Wrap them in
    ``nn.Parameter`` to learn them (NL-arXiv §8.1: the initial states of all memories are
    meta-learned across sequences).
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; they are among {COMPONENTS}")
    kw = dict(dtype=dtype, device=device)
    out: dict[str, Tensor] = {}
    for r in DRAW_ORDER:  # deep numbering: W1 = input side
        if r == MEMORY or r in components:
            p = init_deep_params(heads, [dim, hidden, dim], generator=generator, **kw)
            out[f"W2_{r}"] = p["W1"] * scale
            out[f"W1_{r}"] = p["W2"] * out_scale
    for g, bias in (("eta", eta_bias), ("alpha", alpha_bias)):
        if g in components:
            w = torch.randn(heads, dim, generator=generator, **kw)
            out[f"w_{g}"] = w / math.sqrt(dim)
            out[f"b_{g}"] = torch.full((heads,), float(bias), **kw)
    return out


def components_of(weights: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The component roles whose memories ``weights`` (params or state) hold, stacking order."""
    return tuple(r for r in COMPONENTS if f"W1_{r}" in weights)


def roles_of(weights: Mapping[str, Tensor]) -> tuple[str, ...]:
    """Every memory ``weights`` hold: the components, then the main memory."""
    return components_of(weights) + (MEMORY,)


def init_selfmod_state(params: Mapping[str, Tensor], batch: int, *, momentum: bool = False
                       ) -> dict[str, Tensor]:
    """Per-sequence memories ``W1_<r>`` (B, H, D, Dh), ``W2_<r>`` (B, H, Dh, D): the initial
    weights of ``params`` *expanded* (no copy), so outer gradients reach them; with
    ``momentum`` also zero buffers ``S1_<r>``, ``S2_<r>`` of the same shapes."""
    state = {}
    for r in roles_of(params):
        for n in ("W1", "W2"):
            w = params[f"{n}_{r}"]
            state[f"{n}_{r}"] = w.unsqueeze(0).expand(batch, *w.shape)
            if momentum:
                state[f"S{n[1]}_{r}"] = w.new_zeros(batch, *w.shape)
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


def check_roles(state: Mapping[str, Tensor], x: Optional[Tensor], given: Mapping[str, Tensor],
                momentum: Optional[Tensor]) -> tuple[str, ...]:
    """The components of ``state``, after checking that every role is generated or given
    (not both; alpha may be neither), ``x`` is given with components and the momentum
    buffers are in ``state`` exactly with a ``momentum``."""
    comps = components_of(state)
    unknown = set(given) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"given roles {sorted(unknown)} are not among {COMPONENTS}")
    for r in COMPONENTS:
        if (r in comps) and (r in given) or r != "alpha" and not (r in comps or r in given):
            raise ValueError(f"give {r}, or a state with a {r} memory, not "
                             + ("both" if r in given else "neither"))
    if comps and x is None:
        raise ValueError(f"the component memories {comps} need their input x")
    if (momentum is None) == (f"S1_{MEMORY}" in state):
        raise ValueError("a momentum needs a state with momentum buffers (init_selfmod_state("
                         "momentum=True)), and such a state needs a momentum")
    return comps


def mlp(W1: Tensor, W2: Tensor, x: Tensor, activation: str) -> Tensor:
    """M(x) = x + W1 act(W2 x) for x (..., n, D), W1 (..., D, Dh), W2 (..., Dh, D)."""
    return x + act(activation, x @ W2.mT) @ W1.mT


def eta_ceiling(eta_max: HParam, like: Tensor) -> Tensor:
    """eta_max as a tensor broadcastable to (B, H, n): a scalar, or (B, H) -> (B, H, 1)."""
    t = torch.as_tensor(eta_max, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[:2]).unsqueeze(-1) if t.dim() > 0 else t
