"""Transformer++ building blocks shared by every compiled architecture.

Notation::

    B batch   T tokens in the call   D model (or per-head) dim   Dh hidden width
    H heads   w short-convolution window (4 in HOPE / Titans / Mamba)
    pos       absolute token position (0 = first token of the sequence)

Token streams are ``(B, T, D)``; per-head tensors are ``(B, H, T, D)``. Everything here is
a pure function of its inputs (modules only hold parameters); the streaming pieces take and
return a ``dict[str, Tensor]`` state whose tensors lead with ``B``.

Contents:

* :func:`l2_normalize` -- ``x / sqrt(||x||^2 + eps)`` over the last dim (Titans §4.4,
  NL-arXiv §8.3 normalise q and k).
* :func:`rms_norm` / :class:`RMSNorm` -- ``x / sqrt(mean(x^2) + eps) * g`` (Zhang & Sennrich).
* :class:`SwiGLU` -- ``W_down (silu(W_gate x) * W_up x)`` (Shazeer 2020; Llama MLP), gate and
  up as one fused GEMM ``[W_gate; W_up] x``.
* :class:`GeluMLP` -- ``W_2 gelu(W_1 x + b_1) + b_2`` (original Transformer MLP).
* :func:`apply_rope` -- rotary position embedding (Su et al. 2021), "rotate-half"
  (GPT-NeoX / Llama) pairing: feature ``i`` is rotated with feature ``i + D/2`` by the angle
  ``pos * base^(-2i/D)``. Positions start at ``offset`` so a segment of a stream is rotated
  exactly as it would be inside the whole sequence.
* :func:`causal_conv1d` / :func:`causal_conv1d_reference` / :class:`ShortConv` -- causal
  depthwise short convolution ``y_t = b + sum_{j=0}^{w-1} W[:, j] * x_{t-w+1+j}`` (window 4
  in NL-arXiv §8.3, Titans §4.4, Mamba). The streaming state ``{"conv": (B, w-1, D)}`` holds the
  last ``w-1`` inputs (zeros before the first token), so segment-by-segment == whole.
* :func:`readout_gate` -- ``sigmoid(w . y + b)`` over the last dim: the gate a knob reads
  from another level's per-head output (HOPE's eta and alpha, NL-arXiv Eqs. 86-88).
* :func:`init_linear_` / :func:`init_conv_weight_` -- the default initialisations of
  ``nn.Linear`` and :class:`ShortConv`, in place on any slice of a fused weight (the same
  draws as a separate module of that slice's shape).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "l2_normalize",
    "readout_gate",
    "rms_norm",
    "RMSNorm",
    "SwiGLU",
    "GeluMLP",
    "rope_angles",
    "apply_rope",
    "causal_conv1d",
    "causal_conv1d_reference",
    "init_conv_state",
    "ShortConv",
    "init_linear_",
    "init_conv_weight_",
]


# --------------------------------------------------------------------------- normalisation
def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(sum(x^2) + eps)`` along ``dim`` (smooth at 0, unlike a clamp)."""
    return x * torch.rsqrt((x * x).sum(dim=dim, keepdim=True) + eps)


def readout_gate(y: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``sigmoid(sum_d y[..., d] w[..., d] + b)``: y (..., D), w and b broadcast against y
    (without its last dim for b) -> y's shape without the last dim."""
    return torch.sigmoid((y * w).sum(-1) + b)


def rms_norm(x: Tensor, weight: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim: ``x / sqrt(mean(x^2) + eps)``, times ``weight`` if given."""
    y = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-feature gain (initialised to 1)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


# --------------------------------------------------------------------------- init
def init_linear_(weight: Tensor, bias: Optional[Tensor] = None) -> None:
    """``nn.Linear``'s default initialisation in place: ``weight (out, in)`` kaiming-uniform
    (``U(-1/sqrt(in), 1/sqrt(in))``), then ``bias`` ``U(-1/sqrt(in), 1/sqrt(in))``."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)


def init_conv_weight_(weight: Tensor) -> None:
    """:class:`ShortConv`'s initialisation in place: ``weight (D, w)`` ``U(-1/sqrt(w), 1/sqrt(w))``."""
    bound = 1.0 / math.sqrt(weight.shape[-1])
    nn.init.uniform_(weight, -bound, bound)


# --------------------------------------------------------------------------- MLPs
class SwiGLU(nn.Module):
    """``y = W_down (silu(W_gate x) * (W_up x))``; ``hidden`` defaults to ``round(8/3 dim)``.

    Gate and up are one ``nn.Linear(dim, 2 hidden)`` (``gate_up``: rows ``[:hidden]`` are
    ``W_gate``, ``[hidden:]`` ``W_up``), initialised as two separate ``nn.Linear`` would be
    (gate weight, gate bias, up weight, up bias, in that order).
    """

    def __init__(self, dim: int, hidden: Optional[int] = None, out_dim: Optional[int] = None,
                 bias: bool = False) -> None:
        super().__init__()
        hidden = hidden if hidden is not None else int(round(8 * dim / 3))
        out_dim = out_dim if out_dim is not None else dim
        self.hidden = hidden
        self.gate_up = nn.utils.skip_init(nn.Linear, dim, 2 * hidden, bias=bias)
        with torch.no_grad():
            for half in (slice(0, hidden), slice(hidden, 2 * hidden)):
                init_linear_(self.gate_up.weight[half],
                             None if self.gate_up.bias is None else self.gate_up.bias[half])
        self.down = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class GeluMLP(nn.Module):
    """``y = W_2 gelu(W_1 x + b_1) + b_2`` (exact erf GELU); ``hidden`` defaults to ``4 dim``."""

    def __init__(self, dim: int, hidden: Optional[int] = None, out_dim: Optional[int] = None,
                 bias: bool = True) -> None:
        super().__init__()
        hidden = hidden if hidden is not None else 4 * dim
        out_dim = out_dim if out_dim is not None else dim
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


# --------------------------------------------------------------------------- RoPE
def rope_angles(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Rotation angles ``positions[..., None] * base^(-2i/dim)``, ``i = 0..dim/2-1``.

    ``positions`` is any float/int tensor; the result has shape ``positions.shape + (dim/2,)``
    and dtype float64 if ``positions`` is float64 else float32.
    """
    if dim % 2:
        raise ValueError(f"RoPE needs an even feature dim, got {dim}")
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    i = torch.arange(0, dim // 2, device=positions.device, dtype=dtype)
    inv_freq = torch.exp(i * (-2.0 * math.log(base) / dim))
    return positions.to(dtype).unsqueeze(-1) * inv_freq


def apply_rope(x: Tensor, offset: Union[int, Tensor] = 0, *, base: float = 10000.0,
               positions: Optional[Tensor] = None) -> Tensor:
    """Rotary embedding of ``x (B, H, T, D)`` (or ``(B, T, D)``), rotate-half pairing.

    Token ``t`` of the call sits at absolute position ``offset + t``. ``offset`` is a Python
    int, a 0-d tensor or a ``(B,)`` tensor (per-sequence offsets); pass the number of tokens
    already streamed so that ``apply_rope(x[..., a:b, :], offset=a) == apply_rope(x)[..., a:b, :]``.
    ``positions`` (shape ``(T,)`` or ``(B, T)``) overrides ``offset``.

    ``out[..., :D/2] = x1 cos - x2 sin``, ``out[..., D/2:] = x2 cos + x1 sin`` where
    ``x1, x2`` are the two halves of the features and the angle is ``pos * base^(-2i/D)``.
    """
    T, D = x.shape[-2], x.shape[-1]
    if positions is None:
        ar = torch.arange(T, device=x.device)
        if isinstance(offset, Tensor):
            off = offset.to(device=x.device)
            positions = off.unsqueeze(-1) + ar if off.dim() == 1 else off + ar
        else:
            positions = ar + offset
    if x.dtype == torch.float64:
        positions = positions.to(torch.float64)
    ang = rope_angles(positions, D, base)  # (T, D/2) or (B, T, D/2)
    if ang.dim() == 3 and x.dim() == 4:
        ang = ang.unsqueeze(1)  # (B, 1, T, D/2) broadcasts over heads
    cos = torch.cos(ang).to(x.dtype)
    sin = torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# --------------------------------------------------------------------------- short conv
def init_conv_state(batch: int, dim: int, window: int = 4, *, dtype=None, device=None
                    ) -> dict[str, Tensor]:
    """Empty streaming state: ``{"conv": zeros(B, w-1, D)}`` (zeros = before the sequence)."""
    return {"conv": torch.zeros(batch, window - 1, dim, dtype=dtype, device=device)}


def _conv_history(x: Tensor, weight: Tensor, state: Optional[dict[str, Tensor]]) -> Tensor:
    w = weight.shape[-1]
    B, _, D = x.shape
    if state is None:
        hist = x.new_zeros(B, w - 1, D)
    else:
        hist = state["conv"].to(x.dtype)
        if hist.shape[1] != w - 1:
            raise ValueError(f"conv state holds {hist.shape[1]} inputs, window {w} needs {w - 1}")
    return torch.cat((hist, x), dim=1)  # (B, w-1+T, D)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  state: Optional[dict[str, Tensor]] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Causal depthwise convolution, fast form (``F.conv1d`` with ``groups=D``).

    ``x (B, T, D)``, ``weight (D, w)``, ``bias (D,)``; ``y_t = bias + sum_j weight[:, j] *
    x_{t-w+1+j}`` (``weight[:, -1]`` multiplies the current token). ``state["conv"]`` holds the
    ``w-1`` inputs before this call (``None``: zeros). Returns ``(y (B, T, D), new_state)``
    with the last ``w-1`` inputs (works for any ``T``, including ``T < w-1``).
    """
    w = weight.shape[-1]
    xp = _conv_history(x, weight, state)
    if x.shape[1] == 0:  # nothing to convolve; the state is unchanged
        return x.new_zeros(x.shape), {"conv": xp}
    y = F.conv1d(xp.transpose(1, 2), weight.unsqueeze(1), bias, groups=weight.shape[0])
    new_state = {"conv": xp[:, xp.shape[1] - (w - 1):]}
    return y.transpose(1, 2), new_state


def causal_conv1d_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                            state: Optional[dict[str, Tensor]] = None
                            ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`causal_conv1d` (same signature and results)."""
    w = weight.shape[-1]
    xp = _conv_history(x, weight, state)
    outs = []
    for t in range(x.shape[1]):
        window = xp[:, t: t + w]  # inputs x_{t-w+1} .. x_t, (B, w, D)
        y_t = (window * weight.t().unsqueeze(0)).sum(dim=1)
        if bias is not None:
            y_t = y_t + bias
        outs.append(y_t)
    y = torch.stack(outs, dim=1) if outs else x.new_zeros(x.shape)
    return y, {"conv": xp[:, xp.shape[1] - (w - 1):]}


class ShortConv(nn.Module):
    """Causal depthwise short convolution over ``(B, T, D)`` with streaming state.

    ``activation`` ("silu" or None) is applied after the convolution (Mamba / Titans style).
    ``forward(x, state=None) -> (y, new_state)``; see :func:`causal_conv1d`.
    """

    def __init__(self, dim: int, window: int = 4, bias: bool = False,
                 activation: Optional[str] = None) -> None:
        super().__init__()
        if window < 1:
            raise ValueError("window must be >= 1")
        if activation not in (None, "silu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.dim, self.window, self.activation = dim, window, activation
        self.weight = nn.Parameter(torch.empty(dim, window))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        with torch.no_grad():
            init_conv_weight_(self.weight)

    def init_state(self, batch: int, *, dtype=None, device=None) -> dict[str, Tensor]:
        return init_conv_state(batch, self.dim, self.window, dtype=dtype or self.weight.dtype,
                               device=device or self.weight.device)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        y, new_state = causal_conv1d(x, self.weight, self.bias, state)
        if self.activation == "silu":
            y = F.silu(y)
        return y, new_state
