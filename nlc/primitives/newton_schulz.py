"""The Newton-Schulz orthogonalisation of Muon: the non-linear output of a momentum
memory (NL-NeurIPS Eq. 24; NL-arXiv Eqs. 43-44 read the iteration as gradient descent on
``||P(g)^T P(g) - I||_F^2``).

Notation: ``G`` (..., A, B) a batch of momentum matrices, ``X`` its iterate, ``k`` steps, ``(a, b, c)`` the
quintic's coefficients (Jordan et al. 2024, "Muon"), chosen to push every singular value
of ``X_0 = G / ||G||_F`` into about [0.7, 1.2] within 5 steps::

    X_{j+1} = a X_j + (b A_j + c A_j^2) X_j,    A_j = X_j X_j^T

so ``X_k ≈ U V^T`` for ``G = U S V^T``. A tall ``G`` (A > B) is iterated as its transpose
(the smaller Gram matrix). Used by the optimizer levels (:mod:`nlc.optim`) and by the
in-context memories' Muon update (:mod:`nlc.primitives.deep.chunk_per_token`). Runs in the
input's dtype (float32 here; bfloat16 on GPUs is the usual practice and is left to the
caller).
"""
from __future__ import annotations

import torch
from torch import Tensor

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7  # keeps X_0 finite for an all-zero momentum (which stays zero)


def newton_schulz(g: Tensor, steps: int) -> Tensor:
    """``steps`` quintic Newton-Schulz iterations on each matrix of ``g`` (..., A, B)
    (module doc)."""
    a, b, c = COEFFICIENTS
    tall = g.shape[-2] > g.shape[-1]
    x = g.mT if tall else g
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + EPS)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def rms_matched(update: Tensor) -> Tensor:
    """An orthogonalised update scaled to the root-mean-square of an Adam step (0.2
    sqrt(max(A, B)); Liu et al. 2025, "Muon is scalable"), so one lr and weight decay serve
    the Newton-Schulz and the AdamW parameters of a level alike."""
    return update * (0.2 * max(update.shape[-2:]) ** 0.5)
