"""Analytic model FLOPs per token of every benchmarked level block (forward pass).

Counted from the algorithm as the fast (chunked) form implements it: a matmul of an
(m x k) by a (k x n) matrix is 2 m n k FLOPs (:func:`benchmarks._harness.mm`), a triangular
solve of a C x C system with W right-hand sides C^2 W; elementwise work, exp, cumprod and
softmax are not counted; causal attention counts only the unmasked part. fwd+bwd = 3 x fwd.

Notation: d model width, H heads of D = d / H, C chunk, G per-head scalar gates per token,
Dh hidden width of an MLP memory, T sequence length. ``s`` is a
:class:`benchmarks._shapes.Shape`.
"""
from __future__ import annotations

import math
from typing import Optional

from benchmarks._harness import mm
from benchmarks._shapes import Shape


def flops_memory_projections(s: Shape, n_gates: int) -> float:
    """q, k, v, g: 4 x (d -> d); gates: d -> G H; output: d -> d  (RMSNorm, gating ignored):
    2 d (4d) + 2 d (G H) + 2 d d."""
    d = s.d
    return mm(1, 4 * d, d) + mm(1, n_gates * s.heads, d) + mm(1, d, d)


def flops_delta_kernel_chunk(C: int, Dk: int, Dv: int, *, b: bool, wk: bool, Cp: int = 0,
                             band: bool = False) -> float:
    """One chunk of ``matrix.chunk.generalized_delta_chunked`` (or the Omega variant).

    W = Dv (+ Dk when the writes read the chunk-start state: wk), C' = write keys (C, or
    C + window - 1 for Omega)::

      UT transform (b):  K K^T  2 C C Dk  +  triangular solve  C^2 W
      affine_terms:      Q Kw^T 2 C C' Dk +  A W  2 C C' W  +  W^T Kr  2 W C' Dk
      Omega mixing:      Dmat @ band  2 (C + 1) C C'
      scan (wk):         S Tr  2 Dv Dk Dk          (a scalar decay otherwise)
      read:              Qs S^T  2 C Dv Dk
    """
    Cp = Cp or C
    W = Dv + (Dk if wk else 0)
    f = mm(C, Cp, Dk) + mm(C, W, Cp) + mm(W, Dk, Cp) + mm(C, Dv, Dk)
    if b:
        f += mm(C, C, Dk) + C * C * W
    if band:
        f += mm(C + 1, Cp, C)
    if wk:
        f += mm(Dv, Dk, Dk)
    return f


def flops_matrix_rule(s: Shape, C: int, *, b: bool, wk: bool, window: int = 1) -> float:
    """All heads, per token: H x flops_delta_kernel_chunk(C, D, D) / C."""
    D = s.dh
    f = flops_delta_kernel_chunk(C, D, D, b=b, wk=wk, Cp=C + window - 1, band=window > 1)
    return s.heads * f / C


def flops_deep(s: Shape, C: int, dims: list[int]) -> float:
    """``deep.deep_memory_chunked`` (momentum and retention on, window 1), per token.

    Layer l maps D_{l-1} -> D_l; Sig = sum_l D_{l-1} D_l, Sin = sum_l D_{l-1},
    Sout = sum_l D_l. Per chunk and head::

      gate coefficients:  c = DR @ (DM lr)  2 C^3,   e = DR @ Mc  2 C^2
      write keys forward: 2 C Sig;   error back-propagation: 2 C (Sig - D_0 D_1)
      reads per layer:    h W^T and h S^T  2 x 2 C D_{l-1} D_l,
                          h A^T 2 C C D_{l-1},  (.) @ Delta 2 C C D_l
      end of chunk:       Delta^T [c a | d a]  4 C D_{l-1} D_l
      => 2 C^3 + 2 C^2 + C (12 Sig - 2 D_0 D_1) + 2 C^2 (Sin + Sout)
    """
    sig = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    sin, sout = sum(dims[:-1]), sum(dims[1:])
    per_chunk = (mm(C, C, C) + mm(C, 1, C) + C * (12 * sig - 2 * dims[0] * dims[1])
                 + 2 * C * C * (sin + sout))
    return s.heads * per_chunk / C


def flops_selfmod(s: Shape, C: int) -> float:
    """``selfmod.selfmod_chunked``, per token: projections x_in, q, g (3 d -> d) + output
    (d -> d), then per head, D = 64, Dh hidden, R = 4 stacked memories (k, v, eta, alpha)::

      pass 1, per chunk_other chunk Co:  M_r(x)  2 Co R Dh D + R 2 Co D Dh
         frozen grads at (v, k):  2 (2Co) R Dh D + R 2 (2Co) D Dh + R 2 Co Dh D
         W2 rows: delta kernel (Dk = D, Dv = R Dh, UT transform);  W1 end  R 2 D Dh Co
      pass 2, per chunk_memory chunk C:  frozen grads (R = 1) as above,
         W2: delta kernel (Dk = D, Dv = Dh, UT);  W1: delta kernel (Dk = Dh, Dv = D, no b)
    """
    D, Dh, R = s.dh, s.deep_hidden, 4
    Co = math.gcd(C, s.selfmod_other)

    def grads(c, r):
        return mm(2 * c, r * Dh, D) + r * mm(2 * c, D, Dh) + r * mm(c, Dh, D)

    p1 = (mm(Co, R * Dh, D) + R * mm(Co, D, Dh) + grads(Co, R)
          + flops_delta_kernel_chunk(Co, D, R * Dh, b=True, wk=True) + R * mm(D, Dh, Co)) / Co
    p2 = (grads(C, 1) + flops_delta_kernel_chunk(C, D, Dh, b=True, wk=True)
          + flops_delta_kernel_chunk(C, Dh, D, b=False, wk=False)) / C
    return mm(1, 3 * s.d, s.d) + mm(1, s.d, s.d) + s.heads * (p1 + p2)


def flops_cms(s: Shape) -> float:
    """Per token and level (d -> h -> d, local signal): forward 2 x 2 d h; summed gradient
    dW_out = Delta^T h 2 d h, back to the hidden layer Delta W_out 2 d h, dW_in 2 d h
    => 10 d h per level."""
    return len(s.cms_periods) * 10.0 * s.d * s.cms_hidden


def attn_keys_per_query(T: int, window: Optional[int]) -> float:
    """Mean number of visible keys per query (causal, optionally windowed)."""
    if window is None:
        return (T + 1) / 2.0
    return sum(min(t, window) for t in range(1, T + 1)) / T


def flops_attention(s: Shape, T: int, window: Optional[int]) -> float:
    """QKV 2 d 3d + out 2 d d + (QK^T and PV) 2 x 2 d x mean visible keys."""
    return mm(1, 3 * s.d, s.d) + mm(1, s.d, s.d) + 4.0 * s.d * attn_keys_per_query(T, window)


def flops_sdpa_block(s: Shape, T: int) -> float:
    """Attention part (flops_attention, full causal) + MLP 2 x 2 d h_mlp."""
    return flops_attention(s, T, None) + 2 * mm(1, s.mlp_hidden, s.d)
